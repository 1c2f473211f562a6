"""One Rithmic login's session as the copier keeps it: its ORDER and PNL plants, readied
as R|Protocol asks, the orders sent on it and the positions and money read from it.

After the ORDER plant's login: RequestLoginInfo (the `fcm_id`, `ib_id` and user type every
later request carries), RequestTradeRoutes (the route per exchange; the one marked default
is taken), RequestAccountList (the accounts this login may trade), and
RequestSubscribeForOrderUpdates for each account the copier trades, so that their order
notifications (351, 352) come on this session. One session serves every account of the
login: Rithmic allows one per user, and a second login forces the first out.

An order (`place`) goes out with its user tag; its answer (313) carries the basket id
Rithmic knows it by, and its fate comes in the notifications, which `place` waits for
briefly: a market order usually fills within them, and what has not filled by then is
"accepted", settled later by the stream. A request whose answer does not come in time is
`OrderOutcomeUnknown`: it may have run, and the copier looks it up before anything else.

The PNL plant (logged in after the ORDER plant, as Rithmic wants) says each account's net
position per symbol (InstrumentPnLPositionUpdate, 450) and its money (451), in a snapshot
on request and as updates after; its snapshot's messages carry no request id and come
before the answer that ends it, so they are kept as they are read, whichever kind.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from brokers.base import (
    Equity,
    Fill,
    OrderOutcomeUnknown,
    OrderRequest,
    OrderResult,
    PermanentBrokerError,
    TransientBrokerError,
)
from brokers.rithmic import protocol, records
from brokers.rithmic.plant import Login, Plant, PlantTimeout
from brokers.rithmic.protocol import TemplateId
from core.trading import Side

log = logging.getLogger(__name__)

SUBSCRIBE = 1  # RequestPnLPositionUpdates.Request
FILL_WAIT = 0.5  # how long `place` waits for a market order's fills after its answer
KEPT_BASKETS = 1000  # the newest baskets whose notifications `place` may still read
KEPT_FILLS = 5000  # the newest fill notifications a replay is read from


class LoginSession:
    """The ORDER plant of one login, readied for the accounts the copier trades on it."""

    def __init__(self, login: Login, accounts: Sequence[str], *, label: str) -> None:
        self.label = label
        self.order = Plant(login, protocol.ORDER_PLANT, label=f"{label} ORDER",
                           observe=self._order_seen)
        self.pnl = Plant(login, protocol.PNL_PLANT, label=f"{label} PNL", observe=self._seen)
        # What the PNL plant last said, snapshot or update alike: per account, the net
        # position per symbol (450) and the account's money (451).
        self._held: dict[str, dict[str, int]] = {}
        self._money: dict[str, Any] = {}
        self.accounts = list(accounts)
        self.fcm_id = self.ib_id = ""
        self.user_type = 0
        self.routes: list[Any] = []
        self.listed: list[str] = []
        self._notes: dict[str, list[Any]] = {}  # basket id -> its notifications
        self._waiters: dict[str, asyncio.Event] = {}
        self._fills: list[Any] = []  # the newest fill notifications, in the order read
        self._pump: asyncio.Task[None] | None = None
        self.unasked: asyncio.Queue[Any] = asyncio.Queue()  # notifications for the stream

    async def open(self) -> None:
        """Log in and ready the session; an account the login may not trade is refused
        for good (a person picked the wrong account id)."""
        await self.order.open()
        info = (await self.order.ask(TemplateId.REQUEST_LOGIN_INFO))[-1]
        self.fcm_id, self.ib_id = info.fcm_id, info.ib_id
        self.user_type = int(info.user_type)
        ids: dict[str, Any] = {"fcm_id": self.fcm_id, "ib_id": self.ib_id}
        self.routes = [p for p in await self.order.ask(
            TemplateId.REQUEST_TRADE_ROUTES, subscribe_for_updates=False) if p.trade_route]
        listed = await self.order.ask(TemplateId.REQUEST_ACCOUNT_LIST, user_type=self.user_type,
                                      **ids)
        self.listed = [p.account_id for p in listed if p.account_id]
        missing = [a for a in self.accounts if a not in self.listed]
        if missing:
            raise PermanentBrokerError(
                f"{self.label}: this login may not trade {', '.join(missing)} (its accounts: "
                f"{', '.join(self.listed) or 'none'})")
        for account in self.accounts:
            await self.order.ask(TemplateId.REQUEST_SUBSCRIBE_FOR_ORDER_UPDATES,
                                 account_id=account, **ids)
        self._pump = asyncio.create_task(self._sort(), name=f"{self.label}-notices")
        await self.pnl.open()  # after the ORDER plant's: Rithmic wants that one first
        for account in self.accounts:
            await self.pnl.ask(TemplateId.REQUEST_PNL_POSITION_UPDATES, request=SUBSCRIBE,
                               account_id=account, **ids)

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
        await self.pnl.close()
        await self.order.close()

    def _seen(self, notice: Any) -> None:
        account = str(getattr(notice, "account_id", ""))
        if notice.template_id == TemplateId.INSTRUMENT_PNL_POSITION_UPDATE:
            self._held.setdefault(account, {})[str(notice.symbol)] = int(notice.net_quantity)
        elif notice.template_id == TemplateId.ACCOUNT_PNL_POSITION_UPDATE:
            self._money[account] = notice

    async def _snapshot(self, account: str) -> None:
        """The PNL plant's snapshot of the account asked for and read: its messages come
        before the answer that ends it, and `_seen` has kept them by then."""
        self._held[account] = {}
        await self.pnl.ask(TemplateId.REQUEST_PNL_POSITION_SNAPSHOT, account_id=account,
                           fcm_id=self.fcm_id, ib_id=self.ib_id)

    async def positions(self, account: str) -> dict[str, int]:
        """The account's net positions as the PNL plant states them now (flat left out)."""
        await self._snapshot(account)
        return {s: q for s, q in sorted(self._held.get(account, {}).items()) if q}

    async def equity(self, account: str) -> Equity:
        """The account's balance and open P&L as the PNL plant states them now."""
        await self._snapshot(account)
        money = self._money.get(account)
        if money is None:
            raise TransientBrokerError(f"{self.label}: the PNL plant said nothing of "
                                       f"{account}'s balance")
        return records.equity_of(money, self._held.get(account, {}))

    async def place(self, request: OrderRequest, account: str) -> OrderResult:
        """Send one of the copier's orders; its state after its answer and FILL_WAIT."""
        route = records.route_pick(self.routes, records.exchange_of(request.symbol))
        fields = records.new_order_fields(request, account_id=account, fcm_id=self.fcm_id,
                                          ib_id=self.ib_id, route=route)
        try:
            answer = (await self.order.ask(TemplateId.REQUEST_NEW_ORDER, **fields))[-1]
        except PlantTimeout as exc:
            raise OrderOutcomeUnknown(exc.message) from None
        basket = str(answer.basket_id)
        event = self._waiters.setdefault(basket, asyncio.Event())
        state = records.order_state(request, basket, self._notes.get(basket, []))
        deadline = asyncio.get_running_loop().time() + FILL_WAIT
        while state.status == "accepted":
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            event.clear()
            try:
                await asyncio.wait_for(event.wait(), left)
            except TimeoutError:
                break
            state = records.order_state(request, basket, self._notes.get(basket, []))
        return state

    def _order_seen(self, notice: Any) -> None:
        """Each order notification kept by its basket as it is read (a snapshot's come
        before the answer that ends it), and its order's `place` woken."""
        basket = str(getattr(notice, "basket_id", "") or "")
        if not basket or notice.template_id != TemplateId.EXCHANGE_ORDER_NOTIFICATION:
            return
        if notice.notify_type == records.NOTIFY_FILL:
            self._fills.append(notice)
            del self._fills[:-KEPT_FILLS]
        self._notes.setdefault(basket, []).append(notice)
        while len(self._notes) > KEPT_BASKETS:  # the oldest first (insertion order)
            old = next(iter(self._notes))
            self._notes.pop(old)
            self._waiters.pop(old, None)
        waiter = self._waiters.get(basket)
        if waiter is not None:
            waiter.set()

    async def find(self, client_order_id: str, account: str) -> OrderResult | None:
        """The order the copier sent with this user tag, as the venue has it now (its
        orders shown afresh: RequestShowOrders), or None if it never arrived. What the
        copier asks after a lost answer, before anything is sent again."""
        await self.order.ask(TemplateId.REQUEST_SHOW_ORDERS, account_id=account,
                             fcm_id=self.fcm_id, ib_id=self.ib_id)
        for basket, notes in reversed(self._notes.items()):
            tagged = [n for n in notes if n.user_tag == client_order_id
                      and str(n.account_id) in ("", account)]
            if not tagged:
                continue
            first = tagged[0]
            side = Side.BUY if first.transaction_type == records.BUY else Side.SELL
            qty = max(int(n.quantity) for n in tagged)
            state = records.order_state(OrderRequest(client_order_id, str(first.symbol), side,
                                                     qty or 1), basket, notes)
            return replace(state, symbol=str(first.symbol), side=side, qty=qty or None)
        return None

    async def cancel_all(self, account: str) -> int:
        """The account's working orders cancelled (a flatten's first step: a resting order
        could open a position again); how many were working, from a fresh snapshot."""
        await self.order.ask(TemplateId.REQUEST_SHOW_ORDERS, account_id=account,
                             fcm_id=self.fcm_id, ib_id=self.ib_id)
        working = 0
        for basket, notes in self._notes.items():
            mine = [n for n in notes if str(n.account_id) in ("", account)]
            if mine and records.order_state(OrderRequest("", "", Side.BUY, max(
                    int(n.quantity) for n in mine) or 1), basket, mine).status == "accepted":
                working += 1
        await self.order.ask(TemplateId.REQUEST_CANCEL_ALL_ORDERS, account_id=account,
                             fcm_id=self.fcm_id, ib_id=self.ib_id, user_type=self.user_type,
                             manual_or_auto=records.AUTO)
        return working

    async def replay(self, account: str, start: int, finish: int) -> list[Fill]:
        """The account's executions between two times (seconds since the epoch), as
        Rithmic replays them (RequestReplayExecutions): what filled while the copier could
        not see, counted once each by fill id (the copier's fills are kept by fill id too,
        so a replayed one it had seen is no new trade)."""
        mark = len(self._fills)
        await self.order.ask(TemplateId.REQUEST_REPLAY_EXECUTIONS, account_id=account,
                             fcm_id=self.fcm_id, ib_id=self.ib_id, start_index=start,
                             finish_index=finish)
        out: dict[str, Fill] = {}
        for n in self._fills[mark:]:
            if str(n.account_id) in ("", account):
                fill = records.fill_of(n)
                if fill is not None:
                    out.setdefault(fill.fill_id, fill)
        return list(out.values())

    async def _sort(self) -> None:
        """Every notification passed on to the stream, the session's end last."""
        while True:
            notice = await self.order.notices.get()
            self.unasked.put_nowait(notice)
            if isinstance(notice, Exception):
                return
