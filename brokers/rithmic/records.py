"""What R|Protocol's messages say, in the copier's records, and the copier's orders as
R|Protocol's fields.

An order goes out as a market order of the copier's (`manual_or_auto` AUTO: firms and
Rithmic tell automated orders apart, and async-rithmic's default is MANUAL) with the
client order id as its `user_tag`, the only link the notifications keep besides the
`basket_id` Rithmic answers with. Its fate is read from the ExchangeOrderNotifications
(352) of its basket: the fills counted once each by `fill_id` (a snapshot or a replay
says them again), a REJECT before any fill is a refusal, a CANCEL settles it with what
filled. A number the venue sends as text (balances, P&L) that is not a number is a
ValueError, never a guess.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

from brokers.base import Equity, Fill, OrderRequest, OrderResult, PermanentBrokerError
from core.contracts import contract_parse
from core.trading import OrderStatus, Side

# The enumerations of RequestNewOrder and ExchangeOrderNotification the copier uses.
BUY, SELL = 1, 2
MARKET = 2
AUTO = 2
DAY = 1
NOTIFY_CANCEL, NOTIFY_FILL, NOTIFY_REJECT = 3, 5, 6
_SIDES = {BUY: Side.BUY, SELL: Side.SELL}
CENT = Decimal("0.01")
EQUITY_SOURCE = "Rithmic PnL plant (AccountPnLPositionUpdate)"

# The exchange each contract root trades on (CME Group's four): R|Protocol names a
# contract by its symbol and exchange together.
EXCHANGES: dict[str, str] = {
    **dict.fromkeys(("ES", "MES", "NQ", "MNQ", "RTY", "M2K"), "CME"),
    **dict.fromkeys(("YM", "MYM"), "CBOT"),
    **dict.fromkeys(("CL", "MCL"), "NYMEX"),
    **dict.fromkeys(("GC", "MGC"), "COMEX"),
}


def exchange_of(symbol: str) -> str:
    """The exchange of a contract ("MNQZ6" -> "CME"); one the copier does not know is
    refused for good rather than sent to a guessed exchange."""
    exchange = EXCHANGES.get(contract_parse(symbol).root)
    if exchange is None:
        raise PermanentBrokerError(f"Rithmic: the exchange of {symbol} is not known to the "
                                   f"copier (it knows {', '.join(sorted(EXCHANGES))})")
    return exchange


def route_pick(routes: Iterable[Any], exchange: str) -> str:
    """The trade route for the exchange: the one marked default, else the only one
    (async-rithmic takes the first, which may not be the firm's)."""
    found = [r for r in routes if getattr(r, "exchange", "") == exchange and r.trade_route]
    chosen = [r for r in found if r.is_default] or (found if len(found) == 1 else [])
    if not chosen:
        raise PermanentBrokerError(
            f"Rithmic: no trade route for {exchange}" if not found else
            f"Rithmic: {len(found)} trade routes for {exchange} and none marked default")
    return str(chosen[0].trade_route)


def new_order_fields(request: OrderRequest, *, account_id: str, fcm_id: str, ib_id: str,
                     route: str) -> dict[str, Any]:
    """RequestNewOrder's fields for one of the copier's orders."""
    if request.qty <= 0:
        raise PermanentBrokerError(f"Rithmic: a quantity must be positive, not {request.qty}")
    return {"user_tag": request.client_order_id, "account_id": account_id, "fcm_id": fcm_id,
            "ib_id": ib_id, "symbol": request.symbol, "exchange": exchange_of(request.symbol),
            "quantity": request.qty,
            "transaction_type": BUY if Side(request.side) == Side.BUY else SELL,
            "price_type": MARKET, "duration": DAY, "manual_or_auto": AUTO,
            "trade_route": route}


def _time(n: Any) -> dt.datetime:
    seconds = int(getattr(n, "ssboe", 0) or 0)
    if not seconds:
        return dt.datetime.now(dt.UTC)
    return dt.datetime.fromtimestamp(seconds, dt.UTC) + dt.timedelta(
        microseconds=int(getattr(n, "usecs", 0) or 0))


def fill_of(n: Any) -> Fill | None:
    """A FILL notification as the copier's Fill (None for any other kind). Its side is its
    order's; a fill without an id, a size or a side is a ValueError: it cannot be counted
    once, so it is refused as unreadable."""
    if n.notify_type != NOTIFY_FILL:
        return None
    side = _SIDES.get(n.transaction_type)
    if not n.fill_id or n.fill_size <= 0 or side is None:
        raise ValueError(f"a fill without an id, a size or a side (fill_id={n.fill_id!r}, "
                         f"fill_size={n.fill_size}, transaction_type={n.transaction_type})")
    return Fill(fill_id=str(n.fill_id), symbol=str(n.symbol), side=side, qty=int(n.fill_size),
                time=_time(n), client_order_id=n.user_tag or None,
                broker_order_id=n.basket_id or None)


def order_state(request: OrderRequest, basket_id: str, notes: Iterable[Any]) -> OrderResult:
    """The order as its basket's notifications leave it: what filled (each fill id
    once), then settled by a reject (nothing filled: refused), a cancel (what filled
    stands), or every contract filled; otherwise still working."""
    filled: dict[str, int] = {}
    rejected = cancelled = False
    message = ""
    for n in notes:
        if n.notify_type == NOTIFY_FILL and n.fill_id:
            filled[str(n.fill_id)] = int(n.fill_size)
        elif n.notify_type == NOTIFY_REJECT:
            rejected, message = True, str(n.text or n.report_text or "rejected")
        elif n.notify_type == NOTIFY_CANCEL:
            cancelled, message = True, str(n.text or n.report_text or "cancelled")
    qty = sum(filled.values())
    if qty >= request.qty:
        status = OrderStatus.FILLED
    elif rejected and not qty:
        status = OrderStatus.REJECTED
    elif cancelled or rejected:
        status = OrderStatus.CANCELLED
    else:
        status = OrderStatus.ACCEPTED
    return OrderResult(request.client_order_id, basket_id, status, min(qty, request.qty),
                       message=message[:200])


def money(text: str, what: str) -> Decimal:
    """One of the venue's amounts (sent as text) to the cent; not a number: ValueError."""
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        raise ValueError(f"{what} is not a number: {text!r}") from None
    if not value.is_finite():
        raise ValueError(f"{what} is not a number: {text!r}")
    return value.quantize(CENT)


def positions_of(updates: Iterable[Any]) -> dict[str, int]:
    """The net position per symbol from the InstrumentPnLPositionUpdates (450), the last
    of each symbol winning; flat symbols left out."""
    held: dict[str, int] = {}
    for u in updates:
        held[str(u.symbol)] = int(u.net_quantity)
    return {s: q for s, q in sorted(held.items()) if q}


def equity_of(account: Any, held: dict[str, int]) -> Equity:
    """The AccountPnLPositionUpdate (451) as the guard's reading: the balance before the
    open P&L (Rithmic's `account_balance` counts what closed), the open P&L, the
    contracts the positions hold."""
    return Equity(balance=money(account.account_balance, "account_balance"),
                  open_pnl=money(account.open_position_pnl or "0", "open_position_pnl"),
                  contracts=sum(abs(q) for q in held.values()), source=EQUITY_SOURCE)
