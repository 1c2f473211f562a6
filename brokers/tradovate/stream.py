"""The Tradovate user's WebSocket (`user/syncrequest`): the account's events.

The stream says when one of the account's orders settles (`OrderUpdate`), from the
`order` entity's props (`ordStatus` Filled / Completed / Canceled / Expired / Rejected,
`id`, `accountId`, `contractId`): the order's quantity is its `orderVersion`'s
`orderQty`, its client id its New `command`'s `clOrdId` (both pushed with the order, or
in the syncrequest's snapshot; asked over REST if not seen), and what a cancelled one
filled is read from its fills (`/fill/deps`), which a cancel's push does not carry.

The account's money and standing: a `cashBalance` push (its `accountId`) or an
`accountRiskStatus` push (keyed by the account's `id`, one per account) of this account
says `AccountChanged`, with the firm's stop read from the risk status as the adapter reads
it (`risk_standing`); their amounts are left to the guard's own read. One whose account
cannot be read is skipped, as an unreadable order record is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any

import websockets
from websockets.asyncio.client import ClientConnection

from brokers.base import (
    RECORD_ERRORS,
    AccountChanged,
    BrokerEvent,
    BrokerStream,
    Fill,
    OrderUpdate,
    PermanentBrokerError,
    PositionUpdate,
    Session,
    TransientBrokerError,
    Unreadable,
    unreadable,
)
from brokers.tradovate.records import (
    CAPTCHA_WAIT,
    DONE_STATUSES,
    LABEL,
    risk_standing,
    settlement,
    side_of,
    time_of,
    whole,
)

if TYPE_CHECKING:
    from brokers.tradovate.adapter import TradovateBroker

log = logging.getLogger(__name__)

# The answer to `authorize` and to the syncrequest; frames from a live venue come at
# least every 2.5 s (`h`), so this long without one is a dead socket.
AUTHORIZE_TIMEOUT = 10.0
SYNC_TIMEOUT = 15.0
HEARTBEAT_EVERY = 2.5
SILENCE_LIMIT = 15.0


class TradovateStream(BrokerStream):
    """The account's events off the user's socket (`user/syncrequest`), deduplicated by id.

    The snapshot a syncrequest answers with is the past: its fills and rejects are recorded
    as seen and never delivered; the listener re-reads positions after `open` instead.
    """

    adapter: TradovateBroker
    # The socket was authorized with the old token, which lapses at its expiry: a renewed
    # session is authorized on a new socket (and its syncrequest reconciles).
    reopen_on_new_session = True

    def __init__(self, adapter: TradovateBroker, session: Session | None) -> None:
        super().__init__(adapter, session)
        self._ws: ClientConnection | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._pending: list[BrokerEvent] = []
        self._early: list[dict[str, Any]] = []
        self._error: TransientBrokerError | None = None
        self._seen: set[int] = set()  # fill ids
        self._order_accounts: dict[int, int] = {}
        self._order_clids: dict[int, str | None] = {}
        self._order_qty: dict[int, int] = {}  # orderId -> orderQty, from order versions
        self._settled: set[int] = set()  # order ids whose settlement was delivered or old
        self._account = adapter._account_id()

    # --- opening ---------------------------------------------------------------------------
    async def open(self) -> None:
        if self.session is None:
            raise TransientBrokerError("no session: the listener has not logged in yet")
        user_id = self.session.data.get("userId")
        url = await asyncio.to_thread(lambda: self.adapter._urls()[1])
        if self.adapter.session_fits(self.session) is None:
            raise TransientBrokerError(f"{LABEL} stream: the session was obtained at another "
                                       "address: the listener logs in again")
        try:
            self._ws = await websockets.connect(url, open_timeout=AUTHORIZE_TIMEOUT,
                                                ping_interval=None, max_size=2 ** 24)
        except (OSError, TimeoutError, websockets.WebSocketException) as exc:
            raise TransientBrokerError(f"{LABEL} stream: cannot connect ({type(exc).__name__})"
                                       ) from None
        try:
            await self._authorized()
            async with asyncio.timeout(SYNC_TIMEOUT):
                await self._ws.send(f"user/syncrequest\n1\n\n{json.dumps({'users': [user_id]})}")
                reply = await self._reply(1)
            snapshot = reply.get("d")
            if isinstance(snapshot, dict) and "p-ticket" in snapshot:  # penalties apply here too
                wait = CAPTCHA_WAIT if snapshot.get("p-captcha") else float(
                    snapshot.get("p-time") or 60)
                raise TransientBrokerError(f"{LABEL} stream: syncrequest rate limited",
                                           retry_after=wait)
            if reply.get("s") != 200 or not isinstance(snapshot, dict):
                raise TransientBrokerError(f"{LABEL} stream: syncrequest refused "
                                           f"({reply.get('s')}: {reply.get('d')})")
            self._snapshot_learn(reply["d"])
            for item in self._early:  # pushed before the snapshot answer: after it, in order
                await self._message(item)
            self._early = []
        except TimeoutError:
            await self.close()
            raise TransientBrokerError(f"{LABEL} stream: no answer from the venue") from None
        except websockets.ConnectionClosed:
            await self.close()
            raise TransientBrokerError(f"{LABEL} stream: closed while opening") from None
        except BaseException:
            await self.close()
            raise

    async def _authorized(self) -> None:
        """`o`, then `authorize`: a refusal or silence raises within AUTHORIZE_TIMEOUT."""
        assert self._ws is not None
        assert self.session is not None
        try:
            async with asyncio.timeout(AUTHORIZE_TIMEOUT):
                kind, _ = _frame(await self._ws.recv())
                if kind != "o":
                    raise TransientBrokerError(f"{LABEL} stream: expected 'o', got {kind!r}")
                self._heartbeat = asyncio.create_task(self._heartbeats())
                await self._ws.send(f"authorize\n0\n\n{self.session.token}")
                reply = await self._reply(0)
        except TimeoutError:
            raise TransientBrokerError(f"{LABEL} stream: authorize unanswered in "
                                       f"{AUTHORIZE_TIMEOUT:g} s") from None
        if reply.get("s") != 200:
            raise TransientBrokerError(f"{LABEL} stream: authorize refused ({reply.get('s')}: "
                                       f"{reply.get('d')}); the session must be renewed")

    async def _reply(self, request_id: int) -> dict[str, Any]:
        assert self._ws is not None
        while True:
            kind, payload = _frame(await self._ws.recv())
            if kind == "c":
                raise TransientBrokerError(f"{LABEL} stream: closed by the venue: {payload}")
            if kind != "a" or not isinstance(payload, list):
                continue
            found = None
            for item in payload:
                if not isinstance(item, dict):
                    continue
                if item.get("i") == request_id and found is None:
                    found = item
                else:
                    self._early.append(item)
            if found is not None:
                return found

    def _snapshot_learn(self, snapshot: dict[str, Any]) -> None:
        for order in snapshot.get("orders") or ():
            self._order_accounts[int(order["id"])] = int(order["accountId"])
            if order.get("ordStatus") in DONE_STATUSES:
                self._settled.add(int(order["id"]))  # the past: never said again
        for version in snapshot.get("orderVersions") or ():
            self._version_learn(version)
        for command in snapshot.get("commands") or ():
            if command.get("commandType", "New") == "New":
                self._order_clids[int(command["orderId"])] = command.get("clOrdId")
        for fill in snapshot.get("fills") or ():
            if fill.get("id") is not None:
                self._seen.add(int(fill["id"]))

    async def _heartbeats(self) -> None:
        """`[]` on its own timer: a client that only answers frames goes quiet and is dropped."""
        while self._ws is not None:
            await asyncio.sleep(HEARTBEAT_EVERY)
            try:
                await self._ws.send("[]")
            except (websockets.ConnectionClosed, AttributeError):
                return

    # --- receiving -------------------------------------------------------------------------
    async def receive(self) -> list[BrokerEvent]:
        while not self._pending:
            if self._error is not None:
                raise self._error
            if self._ws is None:
                raise TransientBrokerError(f"{LABEL} stream: not open")
            try:
                raw = await asyncio.wait_for(self._ws.recv(), SILENCE_LIMIT)
            except TimeoutError:
                raise TransientBrokerError(f"{LABEL} stream: silent for {SILENCE_LIMIT:g} s"
                                           ) from None
            except websockets.ConnectionClosed as exc:
                raise TransientBrokerError(f"{LABEL} stream: connection lost ({exc.rcvd})"
                                           ) from None
            kind, payload = _frame(raw)
            if kind == "c":
                self._error = TransientBrokerError(f"{LABEL} stream: closed by the venue: "
                                                   f"{payload}")
            elif kind == "a" and isinstance(payload, list):
                for item in payload:
                    if isinstance(item, dict):
                        await self._message(item)
        events, self._pending = self._pending, []
        return events

    async def _message(self, item: dict[str, Any]) -> None:
        if item.get("e") == "shutdown":
            reason = (item.get("d") or {}).get("reasonCode", "unknown")
            self._error = TransientBrokerError(f"{LABEL} stream: venue shutdown ({reason})")
            return
        if item.get("e") != "props" or not isinstance(item.get("d"), dict):
            return
        entity = item["d"].get("entity")
        if not isinstance(entity, dict):
            return
        entity_type = item["d"].get("entityType")
        try:
            await self._entity(entity_type, entity)
        except RECORD_ERRORS as exc:
            # An order, version, command or account record it cannot read (fills and
            # positions are delivered as Unreadable before this): skipped, never a
            # reconnect. A fill of that order asks the venue for its account and client
            # id, as when the record never came; the guard's periodic check reads the
            # account's money all the same.
            log.warning("%s stream: %s record skipped, unreadable (%s: %s)", LABEL,
                        entity_type, type(exc).__name__, exc)

    async def _entity(self, entity_type: object, entity: dict[str, Any]) -> None:
        event: BrokerEvent | None = None
        if entity_type == "order" and entity.get("id") is not None:
            self._order_accounts[int(entity["id"])] = int(entity["accountId"])
            event = await self._order_update(entity)
        elif entity_type == "orderVersion":
            self._version_learn(entity)
        elif entity_type == "command" and entity.get("commandType", "New") == "New":
            self._order_clids[int(entity["orderId"])] = entity.get("clOrdId")
        elif entity_type == "fill":
            event = await self._fill_event(entity)
        elif entity_type == "position" and entity.get("accountId") == self._account:
            event = await self._position_event(entity)
        elif entity_type in ("cashBalance", "accountRiskStatus"):
            event = self._account_changed(entity_type, entity)
        if event is not None:
            self._pending.append(event)

    def _account_changed(self, entity_type: object, entity: dict[str, Any]
                         ) -> AccountChanged | None:
        """This account's cash balance or risk status changed; another account's (the
        user's socket carries them all) says nothing here. An account id that is not a
        whole number raises ValueError: the record is skipped (`_message`)."""
        key = "accountId" if entity_type == "cashBalance" else "id"
        if whole(entity.get(key), key) != self._account:
            return None
        if entity_type == "cashBalance":
            return AccountChanged(why="cash balance")
        can_trade, why = risk_standing(entity)
        return AccountChanged(why=f"risk status: {why}" if why else "risk status",
                              can_trade=can_trade)

    async def _fill_event(self, entity: dict[str, Any]) -> Fill | Unreadable | None:
        """A fill of the account as the copier's; one it cannot read is delivered as such
        (refused by the copier), never raised: the stream goes on."""
        try:
            return await self._fill(entity)
        except RECORD_ERRORS as exc:
            return unreadable("fill", entity, exc, label=LABEL, fill_id=entity.get("id"))

    async def _position_event(self, entity: dict[str, Any]) -> PositionUpdate | Unreadable:
        try:
            return PositionUpdate(await self._name(whole(entity["contractId"], "contractId")),
                                  whole(entity.get("netPos", 0), "netPos"))
        except RECORD_ERRORS as exc:
            return unreadable("position", entity, exc, label=LABEL)

    async def _fill(self, entity: dict[str, Any]) -> Fill | None:
        if entity.get("id") is None or int(entity["id"]) in self._seen:
            return None  # a replayed entity is delivered once
        fill_id, order_id = int(entity["id"]), int(entity["orderId"])
        account = self._order_accounts.get(order_id)
        if account is None:  # the order's entity did not come first: ask the venue
            order = await self._lookup("/order/item", {"id": order_id})
            account = int(order["accountId"]) if isinstance(order, dict) else -1
            self._order_accounts[order_id] = account
        if account != self._account:
            self._seen.add(fill_id)
            return None
        self._seen.add(fill_id)  # delivered once, read or refused
        await self._clid_learn(order_id)
        return Fill(fill_id=str(fill_id),
                    symbol=await self._name(whole(entity["contractId"], "contractId")),
                    side=side_of(entity.get("action")), qty=whole(entity.get("qty", 0), "qty"),
                    time=time_of(entity.get("timestamp")),
                    client_order_id=self._order_clids.get(order_id), seq=fill_id,
                    broker_order_id=str(order_id))

    async def _clid_learn(self, order_id: int) -> None:
        """The order's client id, asked of the venue when its command was not seen."""
        if order_id not in self._order_clids:
            commands = await self._lookup("/command/deps", {"masterid": order_id}) or []
            self._order_clids[order_id] = next(
                (c.get("clOrdId") for c in commands if c.get("commandType", "New") == "New"),
                None)

    def _version_learn(self, version: dict[str, Any]) -> None:
        if version.get("orderId") is not None and version.get("orderQty") is not None:
            self._order_qty[int(version["orderId"])] = int(version["orderQty"])

    async def _order_update(self, entity: dict[str, Any]) -> OrderUpdate | None:
        """This account's order settled (see the module docstring), said once per order."""
        order_id = int(entity["id"])
        status = str(entity.get("ordStatus", ""))
        if (status not in DONE_STATUSES or order_id in self._settled
                or int(entity["accountId"]) != self._account):
            return None
        self._settled.add(order_id)
        qty = self._order_qty.get(order_id)
        if qty is None:
            versions = await self._lookup("/orderVersion/deps", {"masterid": order_id}) or []
            qty = max((int(v.get("orderQty", 0)) for v in versions), default=0)
        filled = qty if status == "Filled" else 0
        if status != "Filled":
            fills = await self._lookup("/fill/deps", {"masterid": order_id}) or []
            filled = sum(int(f.get("qty", 0)) for f in fills if f.get("active", True))
        await self._clid_learn(order_id)
        outcome, filled = settlement(status, qty, filled)
        try:  # the copier settles the order by its own row's symbol: a contract the
            symbol = await self._name(int(entity["contractId"]))  # look-up does not know
        except PermanentBrokerError as exc:  # must not stop the stream
            log.warning("%s: order update on contract %s: %s", LABEL, entity["contractId"],
                        exc.message)
            symbol = str(entity["contractId"])
        return OrderUpdate(client_order_id=self._order_clids.get(order_id),
                           broker_order_id=str(order_id), symbol=symbol,
                           status=outcome, filled_qty=filled, qty=qty)

    async def _lookup(self, path: str, params: dict[str, object]) -> Any:
        token = self.session.token if self.session else None
        try:
            return await asyncio.to_thread(self.adapter._call, "GET", path, params=params,
                                           token=token)
        except PermanentBrokerError:
            return None  # not found: not this login's

    async def _name(self, contract_id: int) -> str:
        known = self.adapter.contract_name_known(contract_id)
        if known is not None:  # the usual case: no thread hop on the fill's way in
            return known
        token = self.session.token if self.session else None
        return await asyncio.to_thread(self.adapter.contract_name, contract_id, token=token)

    async def close(self) -> None:
        ws, self._ws = self._ws, None
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2)


def _frame(raw: str | bytes) -> tuple[str, Any]:
    """`o`, `h`, `a[...]`, `c[code,"reason"]`: the kind and its JSON, if any."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    if not text:
        return "", None
    try:
        return text[0], json.loads(text[1:]) if len(text) > 1 else None
    except json.JSONDecodeError:
        return text[0], None
