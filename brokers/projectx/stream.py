"""The ProjectX user hub (SignalR's JSON protocol over a WebSocket): the account's events.

The stream says when one of the account's orders settles (`OrderUpdate`), from the
`GatewayUserOrder` pushes, whose data is the REST order's shape: `id`, `accountId`,
`contractId`, `status` (ORDER_STATUS: 2 filled, 3 cancelled, 4 expired, 5 rejected),
`size` (asked), `fillVolume` (filled so far; `filledSize` in some clients), `customTag`.
One update per order id and stream; an order push comes with every trade of it, and
whether before or after the trade is not documented (the local Gateway does either).
Trades (`GatewayUserTrade`) are the fills, positions (`GatewayUserPosition`) the
positions; a record it cannot read is delivered as `Unreadable`, never raised.
An account push (`GatewayUserAccount`, Account/search's shape: `id`, `balance`,
`canTrade`) of this account says `AccountChanged`, with `canTrade`; its balance is left to
the guard's own read. `SubscribeAccounts` covers every account of the login: another
account's push says nothing here, and one whose `id` cannot be read is skipped (logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from brokers.base import (
    RECORD_ERRORS,
    AccountChanged,
    BrokerAdapter,
    BrokerError,
    BrokerEvent,
    BrokerStream,
    Fill,
    OrderUpdate,
    PermanentBrokerError,
    PositionUpdate,
    Session,
    SessionRefused,
    TransientBrokerError,
    Unreadable,
    unreadable,
)
from brokers.http import TIMEOUT
from brokers.projectx.records import (
    ORDER_STATUS,
    SETTLED,
    filled_of,
    position_signed,
    settlement,
    side_of,
    when,
)

if TYPE_CHECKING:
    from brokers.projectx.adapter import ProjectXBroker

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0
HUB_PING_INTERVAL = 15.0  # SignalR's keep-alive
HUB_SILENCE_LIMIT = 30.0  # SignalR's server timeout: no frame for this long = lost


async def _symbol_or_id(name: Callable[[str], Awaitable[str]], contract_id: str) -> str:
    """An order update's contract by name, else by the venue's id: the copier settles the
    order by its own row's symbol, and a contract the look-up does not know must not stop
    the stream (a refused name is logged, the update still said)."""
    try:
        return await name(contract_id)
    except PermanentBrokerError as exc:
        log.warning("ProjectX: order update on contract %s: %s", contract_id, exc.message)
        return contract_id


class ProjectXStream(BrokerStream):
    """The user hub over SignalR's JSON protocol: negotiate, handshake, subscribe, events.

    Negotiate takes either answer a SignalR server gives (version 1 or the older 0); a
    hub without the endpoint is connected to directly (skipNegotiation).

    Subscriptions are invoked with ids and their completions awaited, so that from
    `open`'s return the venue pushes every event of the account (the listener reads
    the positions right after). Nothing is replayed on a new socket.
    """

    adapter: ProjectXBroker
    # The hub's connection carries the token it was opened with: a new token, a new one.
    reopen_on_new_session = True

    def __init__(self, adapter: BrokerAdapter, session: Session | None) -> None:
        super().__init__(adapter, session)
        self._ws: ClientConnection | None = None
        self._buffer = ""
        self._account_id = 0
        self._early: list[dict[str, Any]] = []  # events that came with the subscriptions
        self._tags: dict[int, str | None] = {}  # orderId -> customTag, from order events
        self._settled: set[int] = set()  # order ids whose settlement was delivered
        self._seen: set[int] = set()  # trade ids delivered
        self._last_sent = 0.0

    def __repr__(self) -> str:
        return f"ProjectXStream(account={self.adapter.account.pk}, open={self._ws is not None})"

    async def open(self) -> None:
        if self.session is None:
            raise TransientBrokerError("no session: the listener has not logged in yet")
        creds = await asyncio.to_thread(self.adapter._credentials)
        if self.adapter.session_fits(self.session) is None:
            raise TransientBrokerError("the session was obtained at another address: the "
                                       "listener logs in again")
        self._account_id = self.adapter._account_id()
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                await self._connect(creds["rtc_url"], self.session.token)
        except TimeoutError:
            await self.close()
            raise TransientBrokerError(
                f"ProjectX hub: no handshake within {HANDSHAKE_TIMEOUT:.0f} s") from None
        except BrokerError:
            await self.close()
            raise
        except (OSError, websockets.WebSocketException) as exc:
            await self.close()
            raise TransientBrokerError(f"ProjectX hub: {type(exc).__name__}") from None

    async def _connect(self, rtc_url: str, token: str) -> None:
        hub = f"{rtc_url}/hubs/user"
        connection = await self._negotiate(hub, token)
        ws_url = "ws" + hub[4:] if hub.startswith("http") else hub
        query = urlencode({"access_token": token} if connection is None
                          else {"id": connection, "access_token": token})
        try:
            self._ws = await ws_connect(f"{ws_url}?{query}", max_size=2**22, open_timeout=None)
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status == 401:
                raise SessionRefused("ProjectX hub refused the session token (HTTP 401)"
                                     ) from None
            raise TransientBrokerError(f"ProjectX hub: WebSocket refused (HTTP {status})"
                                       ) from None
        await self._send({"protocol": "json", "version": 1})
        reply = await self._record()
        if reply.get("error"):
            raise TransientBrokerError(f"ProjectX hub handshake refused: {reply['error']}")
        await self._subscribe()

    async def _negotiate(self, hub: str, token: str) -> str | None:
        """The id the WebSocket is opened with, as SignalR's negotiate answers it: version
        1's `connectionToken`, version 0's (an older server's) `connectionId`. None: the hub
        has no negotiate endpoint (404/405), and the socket is opened straight away, with no
        id (skipNegotiation: how the Gateway's own JavaScript example connects)."""
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            try:
                # One `params`: httpx drops a query written into the URL when given one.
                answer = await client.post(f"{hub}/negotiate", params={
                    "negotiateVersion": 1, "access_token": token})
            except httpx.TransportError as exc:
                raise TransientBrokerError(
                    f"ProjectX hub negotiate: unreachable ({type(exc).__name__})") from None
        if answer.status_code == 401:
            raise SessionRefused("ProjectX hub refused the session token (HTTP 401)")
        if answer.status_code in (404, 405):
            return None
        if answer.status_code != 200:
            raise TransientBrokerError(f"ProjectX hub negotiate: HTTP {answer.status_code}")
        try:
            negotiated = answer.json()
        except ValueError:
            negotiated = None
        if not isinstance(negotiated, dict):
            raise TransientBrokerError("ProjectX hub negotiate: the answer is not a JSON object")
        if negotiated.get("error"):
            raise TransientBrokerError(f"ProjectX hub negotiate refused: {negotiated['error']}")
        if negotiated.get("url"):
            raise TransientBrokerError("ProjectX hub negotiate: redirected to another "
                                       "service, which this client does not follow")
        version = negotiated.get("negotiateVersion")
        key = ("connectionToken" if isinstance(version, int) and version >= 1
               else "connectionId")
        connection = negotiated.get(key)
        if not isinstance(connection, str) or not connection:
            raise TransientBrokerError(f"ProjectX hub negotiate: no {key} in the answer")
        return connection

    async def _subscribe(self) -> None:
        account = self._account_id
        calls = [("SubscribeAccounts", []), ("SubscribeOrders", [account]),
                 ("SubscribePositions", [account]), ("SubscribeTrades", [account])]
        pending: dict[str, str] = {}
        for target, args in calls:
            invocation = uuid.uuid4().hex[:8]
            pending[invocation] = target
            await self._send({"type": 1, "invocationId": invocation, "target": target,
                              "arguments": args})
        early: list[dict[str, Any]] = []
        while pending:
            record = await self._record()
            if record.get("type") == 3 and record.get("invocationId") in pending:
                target = pending.pop(record["invocationId"])
                if record.get("error"):
                    raise TransientBrokerError(f"ProjectX hub {target}: {record['error']}")
            else:
                early.append(record)  # an event already: delivered by the first receive
        self._early = early

    async def _send(self, message: Mapping[str, Any]) -> None:
        assert self._ws is not None
        await self._ws.send(json.dumps(message) + "\x1e")
        self._last_sent = time.monotonic()

    async def _record(self, timeout: float | None = None) -> dict[str, Any]:
        """The next SignalR record off the socket."""
        while "\x1e" not in self._buffer:
            assert self._ws is not None
            frame = await asyncio.wait_for(self._ws.recv(), timeout)
            self._buffer += frame if isinstance(frame, str) else frame.decode()
        record, self._buffer = self._buffer.split("\x1e", 1)
        parsed = json.loads(record)
        return parsed if isinstance(parsed, dict) else {}

    async def receive(self) -> list[BrokerEvent]:
        if self._ws is None:
            raise TransientBrokerError("ProjectX hub: the stream is not open")
        early, self._early = self._early, []
        events: list[BrokerEvent] = []
        for record in early:
            events += await self._handle(record)
        silent_since = time.monotonic()
        while not events:
            try:
                record = await self._record(timeout=HUB_PING_INTERVAL / 3)
            except TimeoutError:
                if time.monotonic() - silent_since > HUB_SILENCE_LIMIT:
                    raise TransientBrokerError(
                        f"ProjectX hub: silent for {HUB_SILENCE_LIMIT:.0f} s") from None
                await self._keepalive()
                continue
            except websockets.ConnectionClosed as exc:
                raise TransientBrokerError(f"ProjectX hub: connection closed ({exc.rcvd})"
                                           ) from None
            except (OSError, ValueError) as exc:
                raise TransientBrokerError(f"ProjectX hub: {type(exc).__name__}") from None
            silent_since = time.monotonic()
            if record.get("type") == 6:  # the hub's keep-alive: answered, so it sees us too
                await self._ping()
            events += await self._handle(record)
            await self._keepalive()
        return events

    async def _keepalive(self) -> None:
        if time.monotonic() - self._last_sent >= HUB_PING_INTERVAL:
            await self._ping()

    async def _ping(self) -> None:
        try:
            await self._send({"type": 6})
        except websockets.ConnectionClosed:
            raise TransientBrokerError("ProjectX hub: connection closed") from None

    async def _handle(self, record: Mapping[str, Any]) -> list[BrokerEvent]:
        kind = record.get("type")
        if kind == 7:
            raise TransientBrokerError(
                f"ProjectX hub closed the stream: {record.get('error') or 'no reason given'}")
        if kind != 1:
            return []  # pings (answered in `receive`), completions
        target = record.get("target")
        events: list[BrokerEvent] = []
        for argument in record.get("arguments") or []:
            data = argument.get("data", argument) if isinstance(argument, dict) else None
            event = await self._event(target, data)
            if event is not None:
                events.append(event)
        return events

    async def _event(self, target: object, data: object) -> BrokerEvent | None:
        """One pushed record as the copier's event; None: not this account's, or nothing
        the copier takes from it."""
        if target == "GatewayUserAccount":  # keyed by its `id`, not an `accountId`
            return self._account_changed(data)
        if not isinstance(data, dict) or data.get("accountId") not in (None, self._account_id):
            return None
        if target == "GatewayUserOrder" and isinstance(data.get("id"), int):
            self._tags[data["id"]] = data.get("customTag")
            return await self._order_update(data)
        if target == "GatewayUserTrade":
            return await self._trade_event(data)
        if target == "GatewayUserPosition":
            return await self._position_event(data)
        return None

    def _account_changed(self, data: object) -> AccountChanged | None:
        """This account's balance or standing changed. A record without a whole-number `id`
        cannot be this account's for sure: skipped and logged, never raised (the guard's
        periodic check reads the account all the same). A `canTrade` that is not a boolean
        is not taken for a word either way (None)."""
        account = data.get("id") if isinstance(data, dict) else None
        if (not isinstance(data, dict) or isinstance(account, bool)
                or not isinstance(account, int)):
            log.warning("ProjectX account %s: an account update it cannot read was skipped "
                        "(%.80r)", self._account_id, data)
            return None
        if account != self._account_id:
            return None
        can_trade = data.get("canTrade")
        if not isinstance(can_trade, bool):
            if can_trade is not None:
                log.warning("ProjectX account %s: canTrade %.40r is not a boolean",
                            self._account_id, can_trade)
            can_trade = None
        return AccountChanged(why="account update: canTrade false" if can_trade is False
                              else "account update", can_trade=can_trade)

    async def _trade_event(self, data: Mapping[str, Any]) -> Fill | Unreadable | None:
        """A trade as the copier's fill; one it cannot read is delivered as such (refused
        by the copier), never raised: the stream goes on."""
        try:
            return await self._fill(data)
        except RECORD_ERRORS as exc:
            return unreadable("fill", data, exc, label="ProjectX", fill_id=data.get("id"))

    async def _position_event(self, data: Mapping[str, Any]) -> PositionUpdate | Unreadable:
        try:
            return PositionUpdate(await self._name(str(data.get("contractId"))),
                                  position_signed(data))
        except RECORD_ERRORS as exc:
            return unreadable("position", data, exc, label="ProjectX")

    async def _fill(self, data: Mapping[str, Any]) -> Fill | None:
        trade_id = int(data["id"])
        if trade_id in self._seen:
            return None
        if data.get("voided"):
            log.warning("ProjectX account %s: trade %s voided; the positions re-read will "
                        "show its effect", self._account_id, trade_id)
            return None
        self._seen.add(trade_id)
        order_id = data.get("orderId")
        if isinstance(order_id, int) and order_id not in self._tags:
            order = await asyncio.to_thread(self.adapter._order_by_id, order_id,
                                            token=self._token)
            self._tags[order_id] = None if order is None else order.get("customTag")
        tag = self._tags.get(order_id) if isinstance(order_id, int) else None
        if data.get("side") not in (0, 1):
            raise ValueError(f"ProjectX: trade {trade_id} of unknown side {data.get('side')!r}")
        size = data.get("size")
        if isinstance(size, bool) or not isinstance(size, int):
            raise ValueError(f"ProjectX: trade {trade_id} size {size!r} is not a whole number")
        return Fill(fill_id=str(trade_id), symbol=await self._name(str(data.get("contractId"))),
                    side=side_of(data.get("side")), qty=size,
                    time=when(data.get("creationTimestamp")), client_order_id=tag or None,
                    seq=trade_id,
                    broker_order_id=str(order_id) if isinstance(order_id, int) else None)

    async def _order_update(self, data: Mapping[str, Any]) -> OrderUpdate | None:
        """The order's settlement, the first time a push says it is settled."""
        status = SETTLED.get(ORDER_STATUS.get(data.get("status"), ""))
        order_id = int(data["id"])
        if status is None or order_id in self._settled:
            return None
        self._settled.add(order_id)
        size = int(data.get("size") or 0)
        status, filled = settlement(status, size, filled_of(data))
        return OrderUpdate(client_order_id=data.get("customTag") or None,
                           broker_order_id=str(order_id),
                           symbol=await _symbol_or_id(self._name, str(data.get("contractId"))),
                           status=status, filled_qty=filled, qty=size)

    @property
    def _token(self) -> str:
        assert self.session is not None
        return self.session.token

    async def _name(self, contract_id: str) -> str:
        known = self.adapter.contract_name_known(contract_id)
        if known is not None:  # the usual case: no thread hop on the fill's way in
            return known
        return await asyncio.to_thread(self.adapter.contract_name, contract_id,
                                       token=self._token)

    async def close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
