"""A ProjectX Gateway on loopback: the REST API and the SignalR user hub, as the adapter sees them.

Field names and numeric codes follow the Gateway's documentation and what project-x-py
(written against the real service) sends and reads: HTTP 200 with `success:false` and an
`errorCode` for refusals, `customTag` unique per account and burned by rejected orders,
trades numbered by a venue-wide increasing id, positions with `type` 1 long / 2 short and
an unsigned `size`. The hub speaks SignalR's JSON protocol (records ended by 0x1E):
negotiate, handshake, invocations with completions, pings, and `GatewayUser*` events
pushed to the sockets that subscribed to the account. Nothing is replayed on a new socket.
The hub takes each connection SignalR defines: negotiate version 1 (a `connectionToken`),
the older version 0 (the `connectionId` only), and skipNegotiation (straight to the
WebSocket, no `id`).

Market orders fill at once at a fixed price per contract; the faults of `FAULTS` bend that.
An account's `balance` (Account/search) is its starting $50,000 plus what its closing trades
realised less every trade's fees, as the Gateway keeps it; `canTrade` turns false when the
firm stops it (`account_lock`), and its orders are refused from then on (AccountViolation).
Either change pushes `GatewayUserAccount` (the account as
Account/search has it) to every socket that invoked `SubscribeAccounts`, which is about all
the login's accounts. History/retrieveBars aggregates the venue's own ticks: every
price it was set to (`price_set`, the market moving) and every trade, at its time.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import itertools
import json
import secrets
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from aiohttp import WSMsgType, web

from brokers.base import position_fill
from devkit.localvenue import (
    FaultBook,
    LocalVenue,
    contract_name_check,
    contract_point_value,
    price_check,
)

RS = "\x1e"
DEFAULT_TOKEN_TTL = 24 * 3600.0
# The contracts listed at start, name -> (contract id, description, tick size, tick value),
# and where market orders fill; `contract_add` lists more (a venue instance's own).
CONTRACTS: dict[str, tuple[str, str, float, float]] = {
    "ESZ6": ("CON.F.US.EP.Z26", "E-mini S&P 500: December 2026", 0.25, 12.5),
    "MESZ6": ("CON.F.US.MES.Z26", "Micro E-mini S&P 500: December 2026", 0.25, 1.25),
    "NQZ6": ("CON.F.US.ENQ.Z26", "E-mini NASDAQ-100: December 2026", 0.25, 5.0),
    "MNQZ6": ("CON.F.US.MNQ.Z26", "Micro E-mini Nasdaq-100: December 2026", 0.25, 0.5),
}
PRICES = {"CON.F.US.EP.Z26": 5000.25, "CON.F.US.MES.Z26": 5000.25,
          "CON.F.US.ENQ.Z26": 18000.5, "CON.F.US.MNQ.Z26": 18000.5}
ADDED_PRICE = 100.25  # where a contract listed by `contract_add` fills
ORDER_OPEN, ORDER_FILLED, ORDER_CANCELLED, ORDER_REJECTED = 1, 2, 3, 5
STARTING_BALANCE = 50000.0
# History/retrieveBars' `unit` -> the seconds of one (1 second ... 5 week; 6 month is by date).
BAR_SECONDS = {1: 1, 2: 60, 3: 3600, 4: 86400, 5: 7 * 86400}
MONTH_UNIT = 6

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _iso(at: float | None = None) -> str:
    moment = dt.datetime.fromtimestamp(time.time() if at is None else at, dt.UTC)
    return moment.isoformat()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _refusal(code: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({**extra, "success": False, "errorCode": code,
                              "errorMessage": message})


def _ok(**payload: Any) -> web.Response:
    return web.json_response({**payload, "success": True, "errorCode": 0, "errorMessage": None})


@dataclass
class _Hub:
    """One hub socket: what it subscribed to."""

    ws: web.WebSocketResponse
    user: str
    token: str | None = None  # the access token it was opened with
    outbox: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    accounts: bool = False
    orders: set[int] = field(default_factory=set)
    positions: set[int] = field(default_factory=set)
    trades: set[int] = field(default_factory=set)


class ProjectXVenue(LocalVenue):
    kind = "projectx"
    starting_balance = STARTING_BALANCE  # every account's, before its first fill

    def __init__(self, *, token_ttl: float = DEFAULT_TOKEN_TTL, rate_limit: int = 200,
                 rate_window: float = 60.0, ping_interval: float = 15.0) -> None:
        super().__init__()
        self.token_ttl = token_ttl
        self.rate_limit, self.rate_window = rate_limit, rate_window
        self.ping_interval = ping_interval
        self.late_fill_delay = 0.3  # seconds a `late_fill` order stays working
        # Whether a fill's order update goes out before its trade (the venue's order of
        # pushes is not documented: the adapter must take either).
        self.order_event_first = True
        self.user_name = "trader"
        self.api_key = secrets.token_urlsafe(24)
        self._secret = secrets.token_bytes(16)
        self._ids = itertools.count(1001)
        self._trade_ids = itertools.count(50001)
        self.accounts: dict[int, dict[str, Any]] = {}
        self.order_book: list[dict[str, Any]] = []
        self.trade_book: list[dict[str, Any]] = []
        self.position_book: dict[tuple[int, str], dict[str, Any]] = {}
        self.tokens: dict[str, float] = {}  # token -> expiry (epoch seconds)
        self.contracts: dict[str, tuple[str, str, float, float]] = dict(CONTRACTS)
        self.hidden: set[str] = set()  # listed, traded, unknown to Contract/search(ById)
        # listed, whose records carry no tickSize/tickValue (reference data without them)
        self.ticks_unstated: set[str] = set()
        self.prices: dict[str, float] = dict(PRICES)
        # contract id -> its ticks (epoch seconds, price, size; size 0: the market moved with
        # no trade of this venue's), oldest first: what History/retrieveBars aggregates.
        started = time.time()
        self.ticks: dict[str, list[tuple[float, float, int]]] = {
            cid: [(started, price, 0)] for cid, price in PRICES.items()}
        self.faults = FaultBook()
        self.calls: dict[str, int] = {}  # path -> how many requests (for assertions)
        self.hub_invocations: list[tuple[str, str, list[Any]]] = []  # (connection, target, args)
        self.hub_pings_received = 0
        self._negotiated: dict[str, str] = {}  # the id a WebSocket may open -> its form
        self.hub_forms: list[str] = []  # how each hub socket connected (for assertions)
        self._revoked: set[str] = set()
        # The SignalR negotiate forms the hub answers: up to this negotiateVersion (0: the
        # older answer, a `connectionId` only); False: no negotiate endpoint at all, only
        # the skip-negotiation connection straight to the WebSocket (the Gateway's
        # documented JavaScript example connects that way).
        self.negotiate_version = 1
        self.negotiate_available = True
        self._hubs: dict[str, _Hub] = {}
        self._hits: dict[str, deque[float]] = {}
        self._reachable = True
        self._unreachable: set[int] = set()  # accounts in an outage of their own
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._pinger: asyncio.Task[None] | None = None
        self._late: set[asyncio.Handle] = set()
        self._held: list[dict[str, Any]] = []  # orders of the `hold` fault, oldest first
        self._closing: set[asyncio.Task[bool]] = set()
        self.port = 0

    # --- lifecycle ----------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _start(self) -> None:
        app = web.Application(middlewares=[self._gate])
        routes: dict[str, Handler] = {
            "/api/Auth/loginKey": self._login, "/api/Auth/validate": self._validate,
            "/api/Auth/logout": self._logout, "/api/Account/search": self._account_search,
            "/api/Contract/search": self._contract_search,
            "/api/Contract/searchById": self._contract_by_id,
            "/api/Order/place": self._order_place, "/api/Order/search": self._order_search,
            "/api/Order/searchById": self._order_by_id,
            "/api/Order/searchOpen": self._order_search_open,
            "/api/Order/cancel": self._order_cancel,
            "/api/Position/searchOpen": self._position_search,
            "/api/Position/closeContract": self._position_close,
            "/api/Trade/search": self._trade_search,
            "/api/History/retrieveBars": self._bars,
            "/hubs/user/negotiate": self._negotiate,
        }
        for path, handler in routes.items():
            app.router.add_post(path, handler)
        app.router.add_get("/api/Status/ping", self._ping)
        app.router.add_get("/hubs/user", self._hub)
        # no access log: the hub URLs carry access tokens
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await self._site.start()
        self.port = self._runner.addresses[0][1]
        self._pinger = asyncio.get_running_loop().create_task(self._pings())

    async def _stop(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
        for handle in self._late:
            handle.cancel()
        await self._hubs_close()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- what tests and the benchmark drive -----------------------------------------------
    def credentials(self, account_external_id: str) -> dict[str, str]:
        """The login as the copier stores it: its secrets bound to this server's address."""
        from brokers.projectx import ProjectXBroker

        return ProjectXBroker.credentials_bound({
            "username": self.user_name, "api_key": self.api_key, "api_url": self.url,
            "rtc_url": self.url})

    def account_add(self, name: str) -> str:
        async def add() -> str:
            account_id = next(self._ids)
            self.accounts[account_id] = {"id": account_id, "name": name,
                                         "balance": STARTING_BALANCE,
                                         "canTrade": True, "isVisible": True,
                                         "simulated": True}
            return str(account_id)
        return self.call(add())

    def trade(self, account_external_id: str, symbol: str, side: str, qty: int,
              fill_id: str | None = None) -> str:
        async def trade() -> str:
            account_id = int(account_external_id)
            if fill_id is not None:
                return self._trade_again(account_id, fill_id)
            if account_id not in self.accounts:
                raise ValueError(f"no account {account_id} at the local venue")
            if symbol not in self.contracts:
                raise ValueError(f"contract {symbol!r} is not listed at the local venue")
            order = self._order_new(account_id, self.contracts[symbol][0],
                                    0 if side == "buy" else 1, qty, None)
            self.order_book.append(order)
            self._push_order(order)
            return str(self._fill(order, qty)["id"])
        return self.call(trade())

    def working_order_add(self, account_external_id: str, symbol: str, side: str,
                          qty: int) -> str:
        async def add() -> str:
            account_id = int(account_external_id)
            if account_id not in self.accounts:
                raise ValueError(f"no account {account_id} at the local venue")
            if symbol not in self.contracts:
                raise ValueError(f"contract {symbol!r} is not listed at the local venue")
            if side not in ("buy", "sell") or qty <= 0:
                raise ValueError(f"a working order needs side buy|sell and qty > 0, got "
                                 f"{side!r} {qty!r}")
            contract_id = self.contracts[symbol][0]
            order = self._order_new(account_id, contract_id, 0 if side == "buy" else 1, qty,
                                    None)
            away = 0.9 if side == "buy" else 1.1  # a limit away from the market: it rests
            order.update(type=1, limitPrice=round(self.prices[contract_id] * away, 2))
            self.order_book.append(order)
            self._push_order(order)
            return str(order["id"])
        return self.call(add())

    def held_fill(self, account_external_id: str, qty: int | None = None) -> str:
        async def fill() -> str:
            order = self._held_oldest(int(account_external_id))
            part = self._held_part(order["id"], order["size"] - order["fillVolume"], qty)
            return str(self._fill(order, part)["id"])
        return self.call(fill())

    def held_cancel(self, account_external_id: str) -> str:
        async def cancel() -> str:
            order = self._held_oldest(int(account_external_id))
            order.update(status=ORDER_CANCELLED, updateTimestamp=_iso())
            self._push_order(order)
            return str(order["id"])
        return self.call(cancel())

    def _held_open(self, account_id: int) -> list[dict[str, Any]]:
        return [o for o in self._held if o["accountId"] == account_id
                and o["status"] == ORDER_OPEN]

    def _held_oldest(self, account_id: int) -> dict[str, Any]:
        held = self._held_open(account_id)
        if not held:
            raise ValueError(f"account {account_id} has no held order open at the local venue")
        return held[0]

    def _trade_again(self, account_id: int, fill_id: str) -> str:
        """The hub pushes a trade it pushed before (a duplicate delivery); nothing moves."""
        trade = next((t for t in self.trade_book
                      if str(t["id"]) == fill_id and t["accountId"] == account_id), None)
        if trade is None:
            raise ValueError(f"no trade {fill_id!r} of account {account_id} at the local venue")
        self._push("GatewayUserTrade", account_id, trade)
        return fill_id

    def contract_add(self, name: str, *, ticks_stated: bool = True) -> None:
        """`ticks_stated` False: Contract/search(ById) answer its tickSize and tickValue as
        null, as reference data that lacks them (its trades still realise in money)."""
        async def add() -> None:
            if not ticks_stated:
                self.ticks_unstated.add(name)
            if name in self.contracts:
                return
            contract_name_check(name)
            contract_id = f"CON.F.US.{name.upper()}.LOCAL"
            tick_value = 0.25 * contract_point_value(name, 2.0)
            self.contracts[name] = (contract_id, f"{name} (listed locally)", 0.25, tick_value)
            self.prices[contract_id] = ADDED_PRICE
            self.ticks[contract_id] = [(time.time(), ADDED_PRICE, 0)]
        self.call(add())

    def price_set(self, symbol: str, price: object) -> None:
        value = price_check(price)

        async def move() -> None:
            if symbol not in self.contracts:
                raise ValueError(f"contract {symbol!r} is not listed at the local venue")
            contract_id = self.contracts[symbol][0]
            self.prices[contract_id] = value
            self.ticks[contract_id].append((time.time(), value, 0))
        self.call(move())

    def account_lock(self, account_external_id: str, locked: bool = True) -> None:
        async def lock() -> None:
            account = self.accounts.get(int(account_external_id))
            if account is None:
                raise ValueError(f"no account {account_external_id} at the local venue")
            account["canTrade"] = not locked
            self._push_account(account)
        self.call(lock())

    def balance(self, account_external_id: str) -> float:
        """The account's balance as Account/search answers it (for assertions)."""
        async def read() -> float:
            return float(self.accounts[int(account_external_id)]["balance"])
        return self.call(read())

    def positions(self, account_external_id: str) -> dict[str, int]:
        async def read() -> dict[str, int]:
            names = {cid: name for name, (cid, *_rest) in self.contracts.items()}
            return {names[p["contractId"]]: self._signed(p)
                    for (acct, _c), p in self.position_book.items()
                    if acct == int(account_external_id) and p["size"]}
        return self.call(read())

    def orders(self, account_external_id: str) -> list[dict[str, Any]]:
        async def read() -> list[dict[str, Any]]:
            return [dict(o) for o in self.order_book
                    if o["accountId"] == int(account_external_id)]
        return self.call(read())

    def fills(self, account_external_id: str) -> list[tuple[str | None, str, int]]:
        async def read() -> list[tuple[str | None, str, int]]:
            names = {cid: name for name, (cid, *_rest) in self.contracts.items()}
            tags = {o["id"]: o["customTag"] for o in self.order_book}
            return [(tags.get(t["orderId"]), names[t["contractId"]],
                     t["size"] if t["side"] == 0 else -t["size"])
                    for t in sorted(self.trade_book, key=lambda t: t["id"])
                    if t["accountId"] == int(account_external_id)]
        return self.call(read())

    def trades(self, account_external_id: str) -> list[dict[str, Any]]:
        async def read() -> list[dict[str, Any]]:
            return [dict(t) for t in self.trade_book
                    if t["accountId"] == int(account_external_id)]
        return self.call(read())

    def inject(self, fault: str, count: int = 1, *,
               account_external_id: str | None = None) -> None:
        async def add() -> None:
            self.faults.add(fault, count, account_external_id)
        self.call(add())

    def streams_drop(self, *, close_message: bool = False) -> None:
        """`close_message`: say goodbye first with a SignalR close record (type 7)."""
        async def drop() -> None:
            await self._hubs_close(close_message=close_message)
        self.call(drop())

    def tokens_expire(self) -> None:
        async def expire() -> None:
            for token in self.tokens:
                self.tokens[token] = 0.0
        self.call(expire())

    def tokens_revoke(self, *, streams_close: bool = False) -> None:
        """The venue refuses every token issued so far, long before its expiry (an API key
        reset, a session limit, a logout elsewhere): REST calls with one answer 401 and the
        hub refuses to negotiate or connect with it. A hub socket already open with one
        stays open unless `streams_close` (nothing documents which the Gateway does)."""
        async def revoke() -> None:
            self._revoked.update(self.tokens)
            if streams_close:
                for connection, hub in list(self._hubs.items()):
                    if hub.token in self._revoked:
                        self._hubs.pop(connection, None)
                        self._activity_note(None)
                        await hub.ws.close()
        self.call(revoke())

    def set_reachable(self, reachable: bool, *, account_external_id: str | None = None) -> None:
        """One account's outage (`account_external_id`): its requests are answered 503 by
        the gateway and its hub sockets drop; the user's other accounts trade on. The HTTP
        pool is shared by a process's accounts, so a socket cannot be refused per account.
        Without an account: the whole venue stops listening."""
        if account_external_id is not None:
            self.call(self._account_reachable_set(int(account_external_id), reachable))
            return

        async def switch() -> None:
            if reachable == self._reachable or self._runner is None:
                return
            self._reachable = reachable
            if not reachable:
                await self._hubs_close()
                if self._site is not None:
                    await self._site.stop()
                    self._site = None
                server = self._runner.server
                for connection in list(server.connections if server is not None else []):
                    connection.force_close()  # kept-alive sockets drop as well
            else:
                self._site = web.TCPSite(self._runner, "127.0.0.1", self.port)
                await self._site.start()
        self.call(switch())

    async def _account_reachable_set(self, account_id: int, reachable: bool) -> None:
        if reachable:
            self._unreachable.discard(account_id)
            return
        self._unreachable.add(account_id)
        for connection, hub in list(self._hubs.items()):
            if account_id in hub.orders | hub.positions | hub.trades:
                self._hubs.pop(connection, None)  # nothing more is pushed to it
                self._activity_note(None)
                # Closed in the background: a client slow to answer the close must not
                # hold up the caller (the socket drops for it all the same).
                task = asyncio.get_running_loop().create_task(hub.ws.close())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    def hub_connections(self) -> int:
        async def count() -> int:
            return len(self._hubs)
        return self.call(count())

    # --- plumbing ------------------------------------------------------------------------
    @web.middleware
    async def _gate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Outage, authentication and the rate limit, before any endpoint runs."""
        if not self._reachable and request.transport is not None:
            request.transport.abort()  # a connection kept alive from before the outage
            raise web.HTTPServiceUnavailable
        self.calls[request.path] = self.calls.get(request.path, 0) + 1
        account = await self._account_named(request)
        if account in self._unreachable:
            return web.Response(status=503, text="Service Unavailable")
        if request.path in ("/api/Auth/loginKey", "/api/Status/ping") or (
                request.path == "/hubs/user/negotiate" and not self.negotiate_available):
            return await handler(request)  # (a missing endpoint is missing for anyone)
        token = self._bearer(request)
        if token is None:
            return web.Response(status=401)
        if request.path.startswith("/api/") and self._rate_limited(token, account):
            return web.json_response({"errorMessage": "Too many requests"}, status=429,
                                     headers={"Retry-After": "1"})
        return await handler(request)

    def _bearer(self, request: web.Request) -> str | None:
        """The request's token if it is one we issued, not revoked, and not expired."""
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else request.query.get("access_token")
        if not token or token in self._revoked or self.tokens.get(token, 0.0) <= time.time():
            return None
        return token

    async def _account_named(self, request: web.Request) -> int | None:
        """The account a request is about (its body's `accountId`), for per-account faults."""
        if request.method != "POST" or not request.can_read_body:
            return None
        try:
            body = await request.json()  # aiohttp keeps the body: the handler reads it again
        except (ValueError, UnicodeDecodeError):
            return None
        account = body.get("accountId") if isinstance(body, dict) else None
        return account if isinstance(account, int) else None

    def _rate_limited(self, token: str, account: int | None) -> bool:
        if self._take("rate_limit", account):
            return True
        now = time.monotonic()
        hits = self._hits.setdefault(token, deque())
        while hits and hits[0] <= now - self.rate_window:
            hits.popleft()
        if len(hits) >= self.rate_limit:
            return True
        hits.append(now)
        return False

    def _take(self, fault: str, account: int | None = None) -> bool:
        return self.faults.take(fault, () if account is None else (account,))

    def _token_new(self) -> str:
        exp = time.time() + self.token_ttl
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        claims = _b64(json.dumps({"sub": self.user_name, "exp": int(exp),
                                  "jti": uuid.uuid4().hex}).encode())
        signature = _b64(hmac.new(self._secret, f"{header}.{claims}".encode(),
                                  hashlib.sha256).digest())
        token = f"{header}.{claims}.{signature}"
        self.tokens[token] = exp
        return token

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise web.HTTPBadRequest(text="body is not JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="body is not a JSON object")
        return body

    async def _account_of(self, request: web.Request) -> tuple[dict[str, Any], int | None]:
        """The body and its `accountId` when it is one of the user's accounts."""
        body = await self._body(request)
        account_id = body.get("accountId")
        if not isinstance(account_id, int) or account_id not in self.accounts:
            return body, None
        return body, account_id

    # --- auth ----------------------------------------------------------------------------
    async def _login(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if self._take("auth_refused") or (body.get("userName"), body.get("apiKey")) != (
                self.user_name, self.api_key):
            return _refusal(3, "Invalid credentials", token=None)
        return _ok(token=self._token_new())

    async def _validate(self, request: web.Request) -> web.Response:
        return _ok(newToken=self._token_new())

    async def _logout(self, request: web.Request) -> web.Response:
        token = self._bearer(request)
        if token is not None:
            self.tokens[token] = 0.0
        return _ok()

    async def _ping(self, request: web.Request) -> web.Response:
        return web.Response(text="pong")

    # --- accounts and contracts ---------------------------------------------------------
    async def _account_search(self, request: web.Request) -> web.Response:
        """The login's accounts; `onlyActiveAccounts` leaves out those that may not trade.
        The login's search is about every account of it: an account's `equity_5xx` is
        spent by it."""
        body = await self._body(request)
        if self.faults.take("equity_5xx", list(self.accounts)):
            return web.Response(status=503, text="Service Unavailable")
        only_active = bool(body.get("onlyActiveAccounts"))
        return _ok(accounts=[dict(a) for a in self.accounts.values()
                             if a["canTrade"] or not only_active])

    def _contract(self, name: str) -> dict[str, Any]:
        contract_id, description, tick_size, tick_value = self.contracts[name]
        stated = name not in self.ticks_unstated
        return {"id": contract_id, "name": name, "description": description,
                "tickSize": tick_size if stated else None,
                "tickValue": tick_value if stated else None, "activeContract": True,
                "symbolId": "F.US." + contract_id.split(".")[3]}

    async def _contract_search(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        text = str(body.get("searchText") or "").upper()
        return _ok(contracts=[self._contract(name) for name, (_cid, description, *_r)
                              in self.contracts.items() if name not in self.hidden
                              and text and (text in name or text in description.upper())])

    async def _contract_by_id(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        for name, (contract_id, *_rest) in self.contracts.items():
            if contract_id == body.get("contractId") and name not in self.hidden:
                return _ok(contract=self._contract(name))
        return _refusal(1, "Contract not found", contract=None)

    # --- orders ----------------------------------------------------------------------------
    def _order_new(self, account_id: int, contract_id: str, side: int, size: int,
                   tag: str | None) -> dict[str, Any]:
        now = _iso()
        return {"id": next(self._ids), "accountId": account_id, "contractId": contract_id,
                "symbolId": "F.US." + contract_id.split(".")[3], "creationTimestamp": now,
                "updateTimestamp": now, "status": ORDER_OPEN, "type": 2, "side": side,
                "size": size, "limitPrice": None, "stopPrice": None, "fillVolume": 0,
                "filledPrice": None, "customTag": tag}

    async def _order_place(self, request: web.Request) -> web.StreamResponse:
        body, account_id = await self._account_of(request)
        if self._take("http_5xx", account_id):
            return web.Response(status=503, text="Service Unavailable")
        if account_id is None:
            return _refusal(1, "Account not found", orderId=None)
        size, side, tag = body.get("size"), body.get("side"), body.get("customTag")
        contract_id = body.get("contractId")
        if contract_id not in {cid for cid, *_r in self.contracts.values()}:
            return _refusal(8, "Contract not found", orderId=None)
        if body.get("type") != 2 or side not in (0, 1) or not isinstance(size, int) or size <= 0:
            return _refusal(2, "Invalid order: market orders of a positive size only",
                            orderId=None)
        if tag is not None and any(o["accountId"] == account_id and o["customTag"] == tag
                                   for o in self.order_book):
            return _refusal(2, f"Custom tag {tag} is already in use on this account",
                            orderId=None)
        order = self._order_new(account_id, str(contract_id), side, size, tag)
        self.order_book.append(order)
        if not self.accounts[account_id]["canTrade"]:  # the firm stopped it: nothing trades
            order["status"] = ORDER_REJECTED
            self._push_order(order)
            return _refusal(4, "Account is not allowed to trade (AccountViolation)",
                            orderId=order["id"])
        if self._take("reject", account_id):
            order["status"] = ORDER_REJECTED
            self._push_order(order)
            return _refusal(2, "Order rejected by risk (injected)", orderId=order["id"])
        self._order_execute(order)
        if self._take("http_5xx_after", account_id):
            return web.Response(status=503, text="Service Unavailable")  # executed all the same
        if self._take("lose_response", account_id) and request.transport is not None:
            request.transport.abort()  # executed; the answer never leaves
            await asyncio.sleep(0.05)
        return _ok(orderId=order["id"])

    def _order_execute(self, order: dict[str, Any]) -> None:
        self._push_order(order)
        account = order["accountId"]
        if self._take("hold", account):
            self._held.append(order)  # rests open until held_fill / held_cancel
            return
        if self._take("part_hold", account) and order["size"] > 1:
            self._fill(order, 1)
            self._held.append(order)
            return
        if self._take("cancel_rest", account) and order["size"] > 1:
            self._fill(order, 1)
            order.update(status=ORDER_CANCELLED, updateTimestamp=_iso())
            self._push_order(order)
            return
        if self._take("late_fill", account):
            handle = asyncio.get_running_loop().call_later(
                self.late_fill_delay, lambda: self._fill(order, order["size"]))
            self._late.add(handle)
            return
        if self._take("partial", account) and order["size"] > 1:
            first = order["size"] // 2
            self._fill(order, first)
            self._fill(order, order["size"] - first)
            return
        self._fill(order, order["size"])

    def _fill(self, order: dict[str, Any], qty: int) -> dict[str, Any]:
        """One trade of `qty` on `order`: the order, the trade and the position move and are
        pushed, in the order the Gateway pushes them."""
        price = self.prices[order["contractId"]]
        order["fillVolume"] += qty
        order["filledPrice"] = price
        order["updateTimestamp"] = _iso()
        if order["fillVolume"] >= order["size"]:
            order["status"] = ORDER_FILLED
        position, realized = self._position_move(order["accountId"], order["contractId"],
                                                 qty if order["side"] == 0 else -qty, price)
        # profitAndLoss: what a closing trade realised (null on a half-turn, as the Gateway)
        trade = {"id": next(self._trade_ids), "accountId": order["accountId"],
                 "contractId": order["contractId"], "creationTimestamp": _iso(),
                 "price": price, "profitAndLoss": realized, "fees": round(0.37 * qty, 2),
                 "side": order["side"], "size": qty, "voided": False, "orderId": order["id"]}
        self.trade_book.append(trade)
        self.ticks[order["contractId"]].append((time.time(), price, qty))
        account = self.accounts[order["accountId"]]
        account["balance"] = round(account["balance"] + (realized or 0.0) - trade["fees"], 2)
        if self.order_event_first:
            self._push_order(order)
        self._push("GatewayUserTrade", order["accountId"], trade)
        if not self.order_event_first:
            self._push_order(order)
        self._push("GatewayUserPosition", order["accountId"], position)
        self._push_account(account)
        return trade

    def _position_move(self, account_id: int, contract_id: str, delta: int,
                       price: float) -> tuple[dict[str, Any], float | None]:
        """The position after a trade at its average price, and what the trade realised in
        money (None: it closed nothing)."""
        key = (account_id, contract_id)
        position = self.position_book.get(key)
        if position is None or not position["size"]:
            position = {"id": next(self._ids), "accountId": account_id,
                        "contractId": contract_id, "creationTimestamp": _iso(), "type": 0,
                        "size": 0, "averagePrice": price}
            self.position_book[key] = position
        held = self._signed(position)
        net, average, closed, points = position_fill(
            held, Decimal(str(position["averagePrice"])) if held else None, delta,
            Decimal(str(price)))
        position["size"], position["type"] = abs(net), (1 if net > 0 else 2)
        position["averagePrice"] = float(average) if average is not None else price
        realized = None
        if closed and points is not None:
            _cid, _description, tick_size, tick_value = next(
                c for c in self.contracts.values() if c[0] == contract_id)
            realized = round(float(points) * tick_value / tick_size, 2)
        return dict(position), realized

    @staticmethod
    def _signed(position: dict[str, Any]) -> int:
        size: int = position["size"]
        return size if position["type"] == 1 else -size

    async def _order_search(self, request: web.Request) -> web.Response:
        body, account_id = await self._account_of(request)
        if self._take("lookup_fail", account_id):
            return web.Response(status=503, text="Service Unavailable")
        if account_id is None:
            return _refusal(1, "Account not found", orders=[])
        since = str(body.get("startTimestamp") or "")
        return _ok(orders=[dict(o) for o in self.order_book if o["accountId"] == account_id
                           and self._after(o["creationTimestamp"], since)])

    async def _order_search_open(self, request: web.Request) -> web.Response:
        _body, account_id = await self._account_of(request)
        return _ok(orders=[dict(o) for o in self.order_book
                           if o["accountId"] == account_id and o["status"] == ORDER_OPEN])

    async def _order_cancel(self, request: web.Request) -> web.Response:
        body, account_id = await self._account_of(request)
        if account_id is None:
            return _refusal(1, "Account not found")
        order = next((o for o in self.order_book if o["accountId"] == account_id
                      and o["id"] == body.get("orderId")), None)
        if order is None:
            return _refusal(2, "Order not found")
        if order["status"] != ORDER_OPEN:
            return _refusal(2, f"Order {order['id']} is not open")
        order.update(status=ORDER_CANCELLED, updateTimestamp=_iso())
        self._push_order(order)
        return _ok()

    async def _order_by_id(self, request: web.Request) -> web.Response:
        body, account_id = await self._account_of(request)
        if self._take("lookup_fail", account_id):
            return web.Response(status=503, text="Service Unavailable")
        for order in self.order_book:
            if order["accountId"] == account_id and order["id"] == body.get("orderId"):
                return _ok(order=dict(order))
        return _refusal(1, "Order not found", order=None)

    @staticmethod
    def _after(stamp: str, since: str) -> bool:
        if not since:
            return True
        return dt.datetime.fromisoformat(stamp) >= dt.datetime.fromisoformat(since)

    # --- positions and trades ----------------------------------------------------------
    async def _position_search(self, request: web.Request) -> web.Response:
        _body, account_id = await self._account_of(request)
        if account_id is None:
            return _refusal(1, "Account not found", positions=[])
        return _ok(positions=[dict(p) for (acct, _c), p in self.position_book.items()
                              if acct == account_id and p["size"]])

    async def _position_close(self, request: web.Request) -> web.Response:
        body, account_id = await self._account_of(request)
        if account_id is None:
            return _refusal(1, "Account not found")
        position = self.position_book.get((account_id, str(body.get("contractId"))))
        if position is None or not position["size"]:
            return _refusal(2, "Position not found")
        order = self._order_new(account_id, position["contractId"],
                                1 if position["type"] == 1 else 0, position["size"], None)
        self.order_book.append(order)
        self._push_order(order)
        self._fill(order, order["size"])
        return _ok()

    async def _trade_search(self, request: web.Request) -> web.Response:
        body, account_id = await self._account_of(request)
        if account_id is None:
            return _refusal(1, "Account not found", trades=[])
        since = str(body.get("startTimestamp") or "")
        return _ok(trades=[dict(t) for t in self.trade_book if t["accountId"] == account_id
                           and self._after(t["creationTimestamp"], since)])

    # --- market data ----------------------------------------------------------------------
    async def _bars(self, request: web.Request) -> web.Response:
        """History/retrieveBars: the contract's ticks from `startTime` to `endTime` in bars of
        `unitNumber` units, `t` each bar's start, the bar still forming only with
        `includePartialBar`, the newest `limit` of them. The Gateway does not document the
        order of its bars: newest first here (a client must not rely on it)."""
        body = await self._body(request)
        asked = self._bars_asked(body)
        if asked is None:
            return web.Response(status=400, text="startTime, endTime, unit 1 to 6, and "
                                "unitNumber and limit > 0 are required")
        ticks = self.ticks.get(str(body.get("contractId")))
        if ticks is None:
            return _refusal(1, "Contract not found", bars=None)
        if self._take("no_prices"):
            return _ok(bars=[])
        start, end, unit, number, limit = asked
        buckets: dict[float, list[tuple[float, float, int]]] = {}
        for tick in ticks:
            if start <= tick[0] <= end:
                buckets.setdefault(self._bar_start(tick[0], unit, number), []).append(tick)
        if not body.get("includePartialBar"):
            buckets.pop(self._bar_start(time.time(), unit, number), None)
        bars = [self._bar(at, part) for at, part in sorted(buckets.items(), reverse=True)]
        return _ok(bars=bars[:limit])

    @staticmethod
    def _bars_asked(body: dict[str, Any]) -> tuple[float, float, int, int, int] | None:
        """A bars request's window (epoch seconds), unit, unitNumber and limit; None when
        one is missing or out of range."""
        try:
            start, end = (dt.datetime.fromisoformat(str(body[k]).replace("Z", "+00:00"))
                          .timestamp() for k in ("startTime", "endTime"))
            unit, number, limit = (int(body[k]) for k in ("unit", "unitNumber", "limit"))
        except (KeyError, TypeError, ValueError):
            return None
        if (unit not in BAR_SECONDS and unit != MONTH_UNIT) or number <= 0 or limit <= 0:
            return None
        return start, end, unit, number, limit

    @staticmethod
    def _bar(at: float, part: list[tuple[float, float, int]]) -> dict[str, Any]:
        prices = [price for _t, price, _s in part]
        return {"t": _iso(at), "o": prices[0], "h": max(prices), "l": min(prices),
                "c": prices[-1], "v": sum(size for _t, _p, size in part)}

    @staticmethod
    def _bar_start(at: float, unit: int, number: int) -> float:
        """The start (epoch seconds, UTC) of the bar that holds the moment `at`."""
        if unit == MONTH_UNIT:
            moment = dt.datetime.fromtimestamp(at, dt.UTC)
            months = (moment.year * 12 + moment.month - 1) // number * number
            return dt.datetime(months // 12, months % 12 + 1, 1, tzinfo=dt.UTC).timestamp()
        width = BAR_SECONDS[unit] * number
        return at // width * width

    # --- the user hub (SignalR JSON) -----------------------------------------------------
    async def _negotiate(self, request: web.Request) -> web.Response:
        """SignalR's negotiate: the version asked (none: 0), at most the hub's. Version 1
        answers a `connectionToken` the WebSocket is opened with; version 0 only the
        `connectionId`, which the WebSocket then carries."""
        if not self.negotiate_available:
            return web.Response(status=404, text="Not Found")
        asked = request.query.get("negotiateVersion", "0")
        version = min(int(asked) if asked.isdigit() else 0, self.negotiate_version)
        connection_id = uuid.uuid4().hex
        answer: dict[str, Any] = {
            "negotiateVersion": version, "connectionId": connection_id,
            "availableTransports": [{"transport": "WebSockets",
                                     "transferFormats": ["Text", "Binary"]}]}
        if version >= 1:
            answer["connectionToken"] = uuid.uuid4().hex
        self._negotiated[answer.get("connectionToken", connection_id)] = f"negotiate-v{version}"
        return web.json_response(answer)

    def _hub_connection(self, request: web.Request) -> str | None:
        """The connection a WebSocket request opens: the negotiated one its `id` names
        (once), a new one without an `id` (skipNegotiation), None for an unknown id."""
        if "id" not in request.query:
            self.hub_forms.append("skip-negotiation")
            return uuid.uuid4().hex
        connection = request.query["id"]
        form = self._negotiated.pop(connection, None)
        if form is None:
            return None
        self.hub_forms.append(form)
        return connection

    async def _hub(self, request: web.Request) -> web.StreamResponse:
        connection = self._hub_connection(request)
        if connection is None:
            return web.Response(status=404, text="No Connection with that ID")
        token = self._bearer(request)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        buffer = ""
        hub: _Hub | None = None
        writer: asyncio.Task[None] | None = None
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                break
            buffer += message.data
            *records, buffer = buffer.split(RS)
            for record in records:
                if hub is None:  # the handshake comes first
                    if json.loads(record).get("protocol") != "json":
                        await ws.send_str(json.dumps({"error": "protocol not supported"}) + RS)
                        await ws.close()
                        return ws
                    hub = _Hub(ws, self.user_name, token)
                    await ws.send_str("{}" + RS)
                    writer = asyncio.get_running_loop().create_task(self._hub_write(hub))
                    self._hubs[connection] = hub
                    continue
                await self._hub_record(connection, hub, json.loads(record))
        self._hubs.pop(connection, None)
        if writer is not None:
            writer.cancel()
        return ws

    @staticmethod
    async def _hub_write(hub: _Hub) -> None:
        while not hub.ws.closed:
            frame = await hub.outbox.get()
            try:
                await hub.ws.send_str(frame)
            except ConnectionError:
                return

    async def _hub_record(self, connection: str, hub: _Hub, record: dict[str, Any]) -> None:
        if record.get("type") == 7:
            await hub.ws.close()
            return
        if record.get("type") == 6:
            self.hub_pings_received += 1
        if record.get("type") != 1:
            return  # pings; the client's completions
        target, args = str(record.get("target")), list(record.get("arguments") or [])
        self.hub_invocations.append((connection, target, args))
        error = self._subscribe(hub, target, args)
        if error == "unreachable":  # the account's outage: its sockets drop, unanswered
            self._hubs.pop(connection, None)
            self._activity_note(None)
            await hub.ws.close()
            return
        if record.get("invocationId") is not None:
            reply: dict[str, Any] = {"type": 3, "invocationId": record["invocationId"]}
            if error:
                reply["error"] = error
            hub.outbox.put_nowait(json.dumps(reply) + RS)

    def _subscribe(self, hub: _Hub, target: str, args: list[Any]) -> str:
        if target == "SubscribeAccounts":
            hub.accounts = True
            return ""
        books = {"SubscribeOrders": hub.orders, "SubscribePositions": hub.positions,
                 "SubscribeTrades": hub.trades}
        if target not in books:
            return f"Method does not exist: {target}"
        if len(args) != 1 or not isinstance(args[0], int) or args[0] not in self.accounts:
            return f"{target}: unknown account"
        if args[0] in self._unreachable:
            return "unreachable"
        books[target].add(args[0])
        return ""

    def _push(self, target: str, account_id: int, data: dict[str, Any]) -> None:
        kind = {"GatewayUserOrder": "orders", "GatewayUserTrade": "trades",
                "GatewayUserPosition": "positions"}[target]
        self._push_frame(target, account_id, dict(data),
                         lambda hub: account_id in getattr(hub, kind))

    def _push_account(self, account: dict[str, Any]) -> None:
        """The account's record to the sockets subscribed to accounts (all the login's)."""
        self._push_frame("GatewayUserAccount", account["id"], dict(account),
                         lambda hub: hub.accounts)

    def _push_frame(self, target: str, account_id: int, data: object,
                    subscribed: Callable[[_Hub], bool]) -> None:
        """`data` as one `target` event to every open socket `subscribed` says wants it."""
        self._activity_note(account_id)
        frame = json.dumps({"type": 1, "target": target,
                            "arguments": [{"action": 1, "data": data}]}) + RS
        for hub in list(self._hubs.values()):
            if subscribed(hub) and not hub.ws.closed:
                hub.outbox.put_nowait(frame)  # one writer per socket keeps the order

    def _push_order(self, order: dict[str, Any]) -> None:
        self._push("GatewayUserOrder", order["accountId"], order)

    async def _pings(self) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)
            for hub in list(self._hubs.values()):
                hub.outbox.put_nowait(json.dumps({"type": 6}) + RS)

    async def _hubs_close(self, *, close_message: bool = False) -> None:
        for connection, hub in list(self._hubs.items()):
            self._hubs.pop(connection, None)
            self._activity_note(None)
            if close_message and not hub.ws.closed:
                await hub.ws.send_str(json.dumps({"type": 7, "error": "Server restarting",
                                                  "allowReconnect": True}) + RS)
            await hub.ws.close()
