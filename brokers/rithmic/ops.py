"""What a worker asks of a Rithmic login's session, through `brokers.gateway`, and how the
listener that holds the session answers.

The worker's side (`Asker`, synchronous) turns each of the adapter's calls into a request
with plain JSON arguments and reads the answer back into the copier's records; the
holder's side (`handler`) runs it on the login's `LoginSession`. An order is a request
that changes something at the venue: one the holder took and did not answer in time is
`OrderOutcomeUnknown` (looked up before anything is sent again); a read that timed out is
a plain TransientBrokerError.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from brokers.base import Equity, OrderRequest, OrderResult, PermanentBrokerError
from brokers.gateway import Gateway, Handler
from brokers.rithmic.session import LoginSession
from core.trading import OrderStatus, Side

ORDER_TIMEOUT = 10.0  # seconds a worker waits for an order's answer through the listener
READ_TIMEOUT = 10.0


def _result_json(r: OrderResult) -> dict[str, Any]:
    return {"client_order_id": r.client_order_id, "broker_order_id": r.broker_order_id,
            "status": str(r.status), "filled_qty": r.filled_qty, "message": r.message,
            "symbol": r.symbol, "side": None if r.side is None else str(r.side), "qty": r.qty}


def _result(d: Mapping[str, Any]) -> OrderResult:
    return OrderResult(str(d["client_order_id"]), str(d["broker_order_id"]),
                       OrderStatus(d["status"]), int(d["filled_qty"]), str(d["message"]),
                       symbol=d.get("symbol"),
                       side=None if d.get("side") is None else Side(d["side"]), qty=d.get("qty"))


def handler(session: LoginSession) -> Handler:
    """The holder's answers: each op run on the login's session for the account named."""
    async def handle(op: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        account = str(args["account"])
        if op == "place":
            request = OrderRequest(str(args["client_order_id"]), str(args["symbol"]),
                                   Side(args["side"]), int(args["qty"]))
            return _result_json(await session.place(request, account))
        if op == "find":
            found = await session.find(str(args["client_order_id"]), account)
            return {"order": None if found is None else _result_json(found)}
        if op == "positions":
            return {"positions": await session.positions(account)}
        if op == "equity":
            eq = await session.equity(account)
            return {"balance": str(eq.balance), "open_pnl": str(eq.open_pnl),
                    "contracts": eq.contracts, "source": eq.source}
        if op == "cancel_all":
            return {"count": await session.cancel_all(account)}
        raise PermanentBrokerError(f"Rithmic: the listener does not know {op!r}")

    return handle


@dataclass(frozen=True, slots=True)
class Asker:
    """One account's calls, as a worker makes them, to the holder of its login."""

    gateway: Gateway
    login: str  # brokers.gateway.login_key of the account's login
    account: str  # the Rithmic account id
    label: str  # the account as the errors name it

    def _ask(self, op: str, *, changes: bool = False, timeout: float = READ_TIMEOUT,
             **args: Any) -> Mapping[str, Any]:
        return self.gateway.ask(self.login, op, {"account": self.account, **args},
                                timeout=timeout, changes=changes, what=self.label)

    def place(self, request: OrderRequest) -> OrderResult:
        return _result(self._ask("place", changes=True, timeout=ORDER_TIMEOUT,
                                 client_order_id=request.client_order_id,
                                 symbol=request.symbol, side=str(request.side),
                                 qty=request.qty))

    def find(self, client_order_id: str) -> OrderResult | None:
        found = self._ask("find", client_order_id=client_order_id)["order"]
        return None if found is None else _result(found)

    def positions(self) -> dict[str, int]:
        return {str(s): int(q) for s, q in self._ask("positions")["positions"].items()}

    def equity(self) -> Equity:
        d = self._ask("equity")
        return Equity(balance=Decimal(d["balance"]), open_pnl=Decimal(d["open_pnl"]),
                      contracts=int(d["contracts"]), source=str(d["source"]))

    def cancel_all(self) -> int:
        return int(self._ask("cancel_all", changes=True)["count"])
