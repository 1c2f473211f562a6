"""A local Tradovate: its REST paths and its WebSocket framing, with its books in memory.

What it reproduces, because the adapter has to survive each of these at the real venue:
- paths matched case-insensitively (the official examples send both `placeOrder` and
  `placeorder`); tokens with an `expirationTime` that expire (401 after);
  `renewaccesstoken` keeps the session, `accesstokenrequest` opens a new one (counted);
- penalty tickets: HTTP 200 `{"p-ticket", "p-time"}` (`p-captcha` on a login flood); a
  resend carrying the ticket passes; an auth rate limit per user;
- orders as the venue keeps them: Order, OrderVersion (the quantity), Command (the
  `clOrdId`), CommandReport (the reject reason), Fill, Position, all numbered from one
  increasing counter (fill ids grow with time, as the adapter's `seq` needs);
- the socket: `o`, `h`, `a[...]`, `c[code,"reason"]` frames, `authorize`, the
  `user/syncrequest` snapshot, `props` pushes, a client silent too long is dropped, a
  connection quota per user that closes the OLDEST socket (shutdown
  `ConnectionQuotaReached`) and revokes its token;
- the account's money as the venue values it: the cash balance snapshot's `netLiq` is the
  starting $50,000 plus what its fills realised plus its open positions at the contracts'
  prices now (`openPnL`); its `accountRiskStatus` turns liquidate-only when the firm stops
  it (`account_lock`); the socket pushes the account's `cashBalance` entity after each of
  its fills and its `accountRiskStatus` when the firm stops or frees it.

Users: each account gets a user (login) of its own unless `account_add(login=...)` puts it
under an existing one; the socket quota and the auth rate limit are the user's, as at the
venue, so a replay or a benchmark of many accounts is not throttled as one user would be.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import secrets
import socket
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
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

# The contracts listed at start (name -> id) and their prices; `contract_add` lists more.
CONTRACTS = {"ESZ6": 3_570_918, "MESZ6": 3_570_919, "NQZ6": 3_570_920, "MNQZ6": 3_570_921}
PRICES = {"ESZ6": 6_012.25, "MESZ6": 6_012.25, "NQZ6": 21_450.5, "MNQZ6": 21_450.5}
ADDED_PRICE = 100.25  # where a contract listed by `contract_add` fills
PASSWORD = "local-venue-password"  # noqa: S105 - a local test server's fixed login, every user
APP_SECRET = "local-venue-app-secret"  # noqa: S105
STARTING_BALANCE = 50_000.0
LOOKUP_PATHS = ("/command/list", "/command/deps", "/order/item", "/fill/deps")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(at: dt.datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _trade_date(at: dt.datetime) -> dict[str, int]:
    return {"year": at.year, "month": at.month, "day": at.day}


@dataclass
class _Token:
    value: str
    user_id: int
    session_id: int
    expires_at: float  # time.time()
    revoked: bool = False

    @property
    def good(self) -> bool:
        return not self.revoked and self.expires_at > time.time()


@dataclass
class _Socket:
    ws: web.WebSocketResponse
    opened_at: float
    last_heard: float
    token: _Token | None = None
    synced: bool = False
    # One writer per socket: frames leave in the order they were queued; None closes.
    outbox: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class TradovateVenue(LocalVenue):
    """Tradovate on loopback; every public method is safe to call from the test's thread."""

    kind = "tradovate"
    starting_balance = STARTING_BALANCE  # every account's, before its first fill

    def __init__(self, *, ws_quota: int = 3, auth_per_minute: int = 10,
                 token_lifetime: float = 80 * 60, penalty_seconds: float = 1.0,
                 silence_limit: float = 10.0, server_heartbeat: float = 2.5) -> None:
        super().__init__()
        self.ws_quota = ws_quota
        self.auth_per_minute = auth_per_minute
        self.token_lifetime = token_lifetime
        self.penalty_seconds = penalty_seconds
        self.silence_limit = silence_limit
        self.server_heartbeat = server_heartbeat
        self.reject_reason = "AccountClosed"
        self.reject_text = "Account is closed"
        self._user_ids = itertools.count(90_001)
        self._users: dict[str, int] = {}  # login name -> user id
        self._ids = itertools.count(1_000_001)
        self.contracts: dict[str, int] = dict(CONTRACTS)
        self.hidden: set[str] = set()  # listed, traded, unknown to /contract/item and /find
        self.prices: dict[str, float] = dict(PRICES)
        # Money per point per contract (the root's, else 2): what a closing fill realises.
        self.point_values: dict[str, float] = {
            name: contract_point_value(name, 2.0) for name in CONTRACTS}
        # Realised P&L per account over the venue's trading day (here: its whole life).
        self._realized: dict[int, float] = {}
        self._risk: dict[int, dict[str, Any]] = {}  # account id -> its AccountRiskStatus
        self._accounts: dict[int, dict[str, Any]] = {}
        self._orders: dict[int, dict[str, Any]] = {}
        self._versions: dict[int, dict[str, Any]] = {}
        self._commands: dict[int, dict[str, Any]] = {}
        self._reports: dict[int, dict[str, Any]] = {}
        self._fills: dict[int, dict[str, Any]] = {}
        self._positions: dict[tuple[int, int], dict[str, Any]] = {}
        self._held: list[dict[str, Any]] = []  # orders of the `hold` fault, oldest first
        self._tokens: dict[str, _Token] = {}
        self._tickets: set[str] = set()
        self._logins: dict[str, list[float]] = {}  # login name -> its logins' times
        self._faults = FaultBook()
        self._sockets: list[_Socket] = []
        self._transports: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()
        self._reachable = True
        self._unreachable: set[int] = set()  # accounts in an outage of their own
        self._runner: web.AppRunner | None = None
        self._site: web.SockSite | None = None
        self.port = 0
        self._heartbeats_total = 0
        # What a test asserts on.
        self.sessions_opened = 0
        self.renewals = 0
        self.requests: list[tuple[str, str, dict[str, Any]]] = []

    # --- lifecycle ----------------------------------------------------------------------
    async def _start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_route("*", "/{tail:.*}", self._route)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await self._listen()

    async def _listen(self) -> None:
        assert self._runner is not None
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        self.port = listener.getsockname()[1]
        self._site = web.SockSite(self._runner, listener)
        await self._site.start()

    async def _stop(self) -> None:
        for sock in list(self._sockets):
            await self._socket_close(sock, None)
        await asyncio.sleep(0)
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/websocket"

    # --- what a test drives -------------------------------------------------------------
    def credentials(self, account_external_id: str) -> dict[str, str]:
        """The login of the account's user (any login for an id the venue does not know), as
        the copier stores it: its secrets bound to this server's addresses."""
        from brokers.tradovate import TradovateBroker

        return TradovateBroker.credentials_bound({
            "name": self.login_of(account_external_id), "password": PASSWORD,
            "app_id": "copier", "app_version": "1.0", "cid": "8", "sec": APP_SECRET,
            "environment": "demo", "api_url": self.api_url, "ws_url": self.ws_url})

    def login_of(self, account_external_id: str) -> str:
        """The login name of the user that holds the account."""
        user_id = self.user_id_of(account_external_id)
        return next((n for n, u in self._users.items() if u == user_id), "nobody")

    def user_id_of(self, account_external_id: str) -> int:
        try:
            row = self._accounts.get(int(account_external_id))
        except ValueError:
            row = None
        return -1 if row is None else int(row["userId"])

    def account_add(self, name: str, *, login: str | None = None) -> str:
        """A new account; under user `login` (made if new) or, by default, a user of its own
        named after the account."""
        async def add() -> str:
            account_id = next(self._ids)
            user = login or f"{name}-user"
            if login is None and user in self._users:  # a second account of that name
                user = f"{name}-user-{account_id}"
            if user not in self._users:
                self._users[user] = next(self._user_ids)
            self._accounts[account_id] = {
                "id": account_id, "name": name, "userId": self._users[user],
                "accountType": "Customer",
                "active": True, "clearingHouseId": 2, "riskCategoryId": 2,
                "autoLiqProfileId": 2, "marginAccountType": "Speculator",
                "legalStatus": "Individual", "archived": False,
                "timestamp": _iso(_now()),
            }
            self._risk[account_id] = {"id": account_id, "adminAction": "Normal",
                                      "adminTimestamp": None, "liquidateOnly": None,
                                      "userTriggeredLiqOnly": False}
            return str(account_id)
        return self.call(add())

    def trade(self, account_external_id: str, symbol: str, side: str, qty: int,
              fill_id: str | None = None) -> str:
        async def trade() -> str:
            if fill_id is not None:
                return self._fill_again(int(account_external_id), fill_id)
            if symbol not in self.contracts:
                raise ValueError(f"contract {symbol!r} is not listed at the local venue")
            order = self._order_new(int(account_external_id), symbol, side, qty, cl_ord_id=None,
                                    automated=False)
            return str(self._fill(order, qty))
        return self.call(trade())

    def working_order_add(self, account_external_id: str, symbol: str, side: str,
                          qty: int) -> str:
        async def add() -> str:
            if symbol not in self.contracts:
                raise ValueError(f"contract {symbol!r} is not listed at the local venue")
            if side not in ("buy", "sell") or qty <= 0:
                raise ValueError(f"a working order needs side buy|sell and qty > 0, got "
                                 f"{side!r} {qty!r}")
            away = 0.9 if side == "buy" else 1.1  # a limit away from the market: it rests
            order = self._order_new(int(account_external_id), symbol, side, qty,
                                    cl_ord_id=None, automated=False,
                                    limit=round(self.prices[symbol] * away, 2))
            return str(order["id"])
        return self.call(add())

    def held_fill(self, account_external_id: str, qty: int | None = None) -> str:
        async def fill() -> str:
            order = self._held_oldest(int(account_external_id))
            left = self._versions[order["id"]]["orderQty"] - sum(
                f["qty"] for f in self._fills.values() if f["orderId"] == order["id"])
            part = self._held_part(order["id"], left, qty)
            return str(self._fill(order, part, final=part == left))
        return self.call(fill())

    def held_cancel(self, account_external_id: str) -> str:
        async def cancel() -> str:
            order = self._held_oldest(int(account_external_id))
            self._venue_cancel(order)
            return str(order["id"])
        return self.call(cancel())

    def _held_open(self, account_id: int) -> list[dict[str, Any]]:
        return [o for o in self._held if o["accountId"] == account_id
                and o["ordStatus"] == "Working"]

    def _held_oldest(self, account_id: int) -> dict[str, Any]:
        held = self._held_open(account_id)
        if not held:
            raise ValueError(f"account {account_id} has no held order open at the local venue")
        return held[0]

    def _venue_cancel(self, order: dict[str, Any]) -> None:
        """The venue ends the order itself (an expiry, its own cancel): no Cancel command of
        the user's, only the order's update."""
        order["ordStatus"] = "Canceled"
        self._push(order["accountId"], "order", "Updated", order)

    def _fill_again(self, account_id: int, fill_id: str) -> str:
        """The socket pushes a fill it pushed before (a duplicate delivery); nothing moves."""
        fill = self._fills.get(int(fill_id)) if fill_id.isdigit() else None
        if fill is None or self._orders[fill["orderId"]]["accountId"] != account_id:
            raise ValueError(f"no fill {fill_id!r} of account {account_id} at the local venue")
        self._push(account_id, "fill", "Updated", fill)
        return fill_id

    def contract_add(self, name: str) -> None:
        async def add() -> None:
            if name in self.contracts:
                return
            contract_name_check(name)
            self.contracts[name] = max(self.contracts.values()) + 1
            self.prices[name] = ADDED_PRICE
            self.point_values[name] = contract_point_value(name, 2.0)
        self.call(add())

    def price_set(self, symbol: str, price: object) -> None:
        value = price_check(price)

        async def move() -> None:
            if symbol not in self.contracts:
                raise ValueError(f"contract {symbol!r} is not listed at the local venue")
            self.prices[symbol] = value
        self.call(move())

    def account_lock(self, account_external_id: str, locked: bool = True, *,
                     action: str = "LiquidateOnlyModeImmediately") -> None:
        """`action`: the admin action the firm's risk desk set (Tradovate's names)."""
        async def lock() -> None:
            status = self._risk.get(int(account_external_id))
            if status is None:
                raise ValueError(f"no account {account_external_id} at the local venue")
            now = _iso(_now())
            status.update(adminAction=action if locked else "Normal", adminTimestamp=now,
                          liquidateOnly=now if locked else None)
            self._push(int(account_external_id), "accountRiskStatus", "Updated", status)
        self.call(lock())

    def positions(self, account_external_id: str) -> dict[str, int]:
        async def read() -> dict[str, int]:
            names = {v: k for k, v in self.contracts.items()}
            return {names[p["contractId"]]: p["netPos"] for p in self._positions.values()
                    if p["accountId"] == int(account_external_id) and p["netPos"]}
        return self.call(read())

    def fills(self, account_external_id: str) -> list[tuple[str | None, str, int]]:
        async def read() -> list[tuple[str | None, str, int]]:
            names = {v: k for k, v in self.contracts.items()}
            tags = {c["orderId"]: c.get("clOrdId") for c in self._commands.values()}
            return [(tags.get(f["orderId"]), names[f["contractId"]],
                     f["qty"] if f["action"] == "Buy" else -f["qty"])
                    for _id, f in sorted(self._fills.items())
                    if self._orders[f["orderId"]]["accountId"] == int(account_external_id)]
        return self.call(read())

    def orders(self, account_external_id: str) -> list[dict[str, Any]]:
        async def read() -> list[dict[str, Any]]:
            names = {v: k for k, v in self.contracts.items()}
            out = []
            for order in self._orders.values():
                if order["accountId"] != int(account_external_id):
                    continue
                command = next(c for c in self._commands.values() if c["orderId"] == order["id"])
                out.append({
                    "id": order["id"], "clOrdId": command.get("clOrdId"),
                    "symbol": names[order["contractId"]], "action": order["action"],
                    "orderQty": self._versions[order["id"]]["orderQty"],
                    "ordStatus": order["ordStatus"], "isAutomated": command["isAutomated"],
                    "filled": sum(f["qty"] for f in self._fills.values()
                                  if f["orderId"] == order["id"]),
                })
            return out
        return self.call(read())

    def inject(self, fault: str, count: int = 1, *,
               account_external_id: str | None = None) -> None:
        """An account's fault is spent by requests about it: its orders, and the reads and
        logins of its user."""
        async def add() -> None:
            self._faults.add(fault, count, account_external_id)
        self.call(add())

    def streams_drop(self) -> None:
        async def drop() -> None:
            for sock in list(self._sockets):
                await self._socket_close(sock, None)
        self.call(drop())

    def streams_shutdown(self, reason_code: str = "Maintenance") -> None:
        """The venue's own goodbye: a `shutdown` event, then the socket closes."""
        async def shutdown() -> None:
            for sock in list(self._sockets):
                await self._socket_close(sock, reason_code)
        self.call(shutdown())

    def tokens_expire(self) -> None:
        async def expire() -> None:
            for token in self._tokens.values():
                token.expires_at = time.time() - 1
        self.call(expire())

    def set_reachable(self, reachable: bool, *, account_external_id: str | None = None) -> None:
        """One account's outage (`account_external_id`): the requests of its user and about
        it are answered 503 by the gateway (one HTTP pool serves every account of a process:
        a socket cannot be refused per account) and its user's sockets drop. An outage is
        the connection's, which is the user's: accounts sharing a login go dark together.
        Without an account: the whole venue stops listening."""
        if account_external_id is not None:
            self.call(self._account_reachable_set(int(account_external_id), reachable))
            return

        async def switch() -> None:
            self._reachable = reachable
            if not reachable:
                if self._site is not None:
                    await self._site.stop()
                    self._site = None
                for transport in list(self._transports):
                    transport.close()
                for sock in list(self._sockets):
                    await self._socket_close(sock, None)
            elif self._site is None:
                await self._listen()
        self.call(switch())

    async def _account_reachable_set(self, account_id: int, reachable: bool) -> None:
        if reachable:
            self._unreachable.discard(account_id)
            return
        self._unreachable.add(account_id)
        user_id = self._accounts[account_id]["userId"]
        for sock in list(self._sockets):
            if sock.token is not None and sock.token.user_id == user_id:
                await self._socket_close(sock, None)

    def fill_replay(self, fill_id: str) -> None:
        """Push a fill entity again, as a venue does on a replay (eventType Updated)."""
        async def replay() -> None:
            fill = self._fills[int(fill_id)]
            self._push(self._orders[fill["orderId"]]["accountId"], "fill", "Updated", fill)
        self.call(replay())

    def socket_count(self) -> int:
        async def count() -> int:
            return len(self._sockets)
        return self.call(count())

    def heartbeats_heard(self) -> int:
        """Client `[]` heartbeats heard, over every socket ever opened."""
        async def count() -> int:
            return self._heartbeats_total
        return self.call(count())

    # --- HTTP -----------------------------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.transport is not None:
            self._transports.add(request.transport)
        if not self._reachable:
            if request.transport is not None:
                request.transport.close()
            raise web.HTTPServiceUnavailable
        return await handler(request)

    async def _route(self, request: web.Request) -> web.StreamResponse:
        path = request.path.lower()
        if path == "/v1/websocket":
            return await self._socket(request)
        if not path.startswith("/v1/"):
            raise web.HTTPNotFound
        path = path[3:]
        body: dict[str, Any] = {}
        if request.can_read_body:
            try:
                body = await request.json()
            except json.JSONDecodeError:
                return web.json_response({"errorText": "malformed JSON"}, status=400)
        self.requests.append((request.method, path, body))
        scope = self._scope(request, path, body)
        refusal = self._refusal(body, scope)
        if refusal is not None:
            return refusal
        if path == "/auth/accesstokenrequest" and request.method == "POST":
            return self._login(body, scope)
        token = self._bearer(request)
        if token is None:
            return web.Response(status=401, text="Access is denied")
        handler = self._handlers().get((request.method, path))
        if handler is None:
            raise web.HTTPNotFound
        if path in LOOKUP_PATHS and self._take("lookup_fail", scope):
            return web.Response(status=503, text="Service Unavailable")
        return await handler(request, token, body)

    def _scope(self, request: web.Request, path: str, body: dict[str, Any]) -> set[int]:
        """The accounts a request is about: the body's `accountId`, else every account of
        the user whose token (or login name) it carries."""
        if isinstance(body.get("accountId"), int):
            return {body["accountId"]}
        if path == "/auth/accesstokenrequest":
            user_id = self._users.get(str(body.get("name")))
        else:
            header = request.headers.get("Authorization", "")
            token = self._tokens.get(header[7:].strip()) if header.startswith("Bearer ") else None
            user_id = None if token is None else token.user_id
        return set() if user_id is None else self._accounts_of(user_id)

    def _accounts_of(self, user_id: int) -> set[int]:
        return {a for a, row in self._accounts.items() if row["userId"] == user_id}

    def _handlers(self) -> dict[tuple[str, str], Callable[..., Awaitable[web.StreamResponse]]]:
        return {
            ("GET", "/auth/renewaccesstoken"): self._renew,
            ("GET", "/account/list"): self._account_list,
            ("GET", "/position/list"): self._position_list,
            ("GET", "/fill/list"): self._fill_list,
            ("GET", "/fill/deps"): self._fill_deps,
            ("GET", "/order/list"): self._order_list,
            ("GET", "/order/item"): self._order_item,
            ("GET", "/orderversion/deps"): self._version_deps,
            ("GET", "/command/list"): self._command_list,
            ("GET", "/command/deps"): self._command_deps,
            ("GET", "/commandreport/deps"): self._report_deps,
            ("GET", "/contract/item"): self._contract_item,
            ("GET", "/contract/find"): self._contract_find,
            ("POST", "/order/placeorder"): self._place,
            ("POST", "/order/liquidateposition"): self._liquidate,
            ("POST", "/order/cancelorder"): self._cancel,
            ("POST", "/cashbalance/getcashbalancesnapshot"): self._cash_snapshot,
            ("GET", "/accountriskstatus/deps"): self._risk_deps,
        }

    def _take(self, fault: str, scope: Iterable[int] = ()) -> bool:
        return self._faults.take(fault, sorted(scope))

    def _refusal(self, body: dict[str, Any], scope: set[int]) -> web.Response | None:
        """What answers before the request runs: the account's outage, a penalty ticket."""
        if scope & self._unreachable:
            return web.Response(status=503, text="Service Unavailable")
        penalty = self._penalty(body, scope)
        return None if penalty is None else web.json_response(penalty)

    def _penalty(self, body: dict[str, Any], scope: set[int]) -> dict[str, Any] | None:
        """A resend carrying a ticket we issued passes; otherwise a rate_limit fault tickets."""
        ticket = body.pop("p-ticket", None)
        if ticket in self._tickets:
            self._tickets.discard(ticket)
            return None
        if self._take("rate_limit", scope):
            return self._ticket(captcha=False)
        return None

    def _ticket(self, *, captcha: bool) -> dict[str, Any]:
        ticket = secrets.token_hex(16)
        self._tickets.add(ticket)
        answer: dict[str, Any] = {"p-ticket": ticket, "p-time": self.penalty_seconds}
        if captcha:
            answer["p-captcha"] = True
        return answer

    def _bearer(self, request: web.Request) -> _Token | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return None
        token = self._tokens.get(header[7:].strip())
        return token if token is not None and token.good else None

    def _token_issue(self, user_id: int, session_id: int) -> _Token:
        token = _Token(secrets.token_urlsafe(32), user_id, session_id,
                       time.time() + self.token_lifetime)
        self._tokens[token.value] = token
        return token

    def _user_name(self, user_id: int) -> str:
        return next((n for n, u in self._users.items() if u == user_id), "")

    def _token_answer(self, token: _Token) -> dict[str, Any]:
        expires = dt.datetime.fromtimestamp(token.expires_at, dt.UTC)
        return {"accessToken": token.value, "mdAccessToken": secrets.token_urlsafe(32),
                "expirationTime": _iso(expires), "userStatus": "Active",
                "userId": token.user_id, "name": self._user_name(token.user_id),
                "hasLive": False}

    def _login(self, body: dict[str, Any], scope: set[int]) -> web.Response:
        """The auth rate limit is per login name, as the venue counts a user's logins."""
        now = time.time()
        name = str(body.get("name"))
        logins = self._logins[name] = [t for t in self._logins.get(name, []) if t > now - 60]
        if len(logins) >= self.auth_per_minute:  # a login flood: the captcha penalty
            return web.json_response(self._ticket(captcha=True))
        logins.append(now)
        user_id = self._users.get(name)
        refused = (self._take("auth_refused", scope) or user_id is None
                   or (body.get("password"), body.get("sec")) != (PASSWORD, APP_SECRET))
        if refused or user_id is None:
            return web.json_response({"errorText": "Incorrect username or password. Please "
                                      "try again noting that passwords are case-sensitive."})
        self.sessions_opened += 1
        token = self._token_issue(user_id, self.sessions_opened)
        return web.json_response(self._token_answer(token))

    async def _renew(self, request: web.Request, token: _Token, body: Any) -> web.Response:
        self.renewals += 1
        return web.json_response(self._token_answer(self._token_issue(token.user_id,
                                                                      token.session_id)))

    # --- reads ------------------------------------------------------------------------------
    def _mine(self, token: _Token) -> set[int]:
        return self._accounts_of(token.user_id)

    async def _account_list(self, request: web.Request, token: _Token, body: Any) -> web.Response:
        return web.json_response([a for a in self._accounts.values()
                                  if a["userId"] == token.user_id])

    async def _position_list(self, request: web.Request, token: _Token, body: Any
                             ) -> web.Response:
        mine = self._mine(token)
        return web.json_response([p for p in self._positions.values() if p["accountId"] in mine])

    def _fills_of(self, token: _Token) -> list[dict[str, Any]]:
        mine = self._mine(token)
        return [f for f in self._fills.values() if self._orders[f["orderId"]]["accountId"] in mine]

    async def _fill_list(self, request: web.Request, token: _Token, body: Any) -> web.Response:
        return web.json_response(self._fills_of(token))

    async def _cash_snapshot(self, request: web.Request, token: _Token,
                             body: dict[str, Any]) -> web.Response:
        """The account's cash balance snapshot: `realizedPnL` is what its fills realised,
        `openPnL` its open positions at the contracts' prices now (`no_prices`: null, as
        a snapshot without a price for a held contract), `netLiq` the two on the cash."""
        account_id = body.get("accountId")
        if account_id not in self._mine(token):
            return web.json_response({"errorText": "Access is denied"})
        if self._take("equity_5xx", {account_id}):
            return web.Response(status=503, text="Service Unavailable")
        realized, cash = self._cash(int(account_id))
        open_pnl: float | None = round(self._open_pnl(int(account_id)), 2)
        if self._take("no_prices", {account_id}):
            open_pnl = None
        return web.json_response({
            "errorText": None, "totalCashValue": cash, "totalPnL": realized,
            "initialMargin": 0.0, "maintenanceMargin": 0.0,
            "netLiq": None if open_pnl is None else round(cash + open_pnl, 2),
            "openPnL": open_pnl, "realizedPnL": realized, "weekRealizedPnL": realized})

    def _cash(self, account_id: int) -> tuple[float, float]:
        """What the account's fills realised, and its cash: the start plus that."""
        realized = round(self._realized.get(account_id, 0.0), 2)
        return realized, round(STARTING_BALANCE + realized, 2)

    def _cash_balance(self, account_id: int) -> dict[str, Any]:
        """The account's CashBalance entity, as the socket pushes it (the snapshot's
        `netLiq` and `openPnL` are not in it: those are the cash balance snapshot's)."""
        realized, cash = self._cash(account_id)
        now = _now()
        return {"id": account_id, "accountId": account_id, "timestamp": _iso(now),
                "tradeDate": _trade_date(now), "currencyId": 1, "amount": cash,
                "realizedPnL": realized, "weekRealizedPnL": realized}

    def _open_pnl(self, account_id: int) -> float:
        """The account's open positions at the contracts' prices, against their average."""
        names = {v: k for k, v in self.contracts.items()}
        total = 0.0
        for position in self._positions.values():
            if position["accountId"] == account_id and position["netPos"]:
                name = names[position["contractId"]]
                total += ((self.prices[name] - position["netPrice"]) * position["netPos"]
                          * self.point_values[name])
        return total

    async def _risk_deps(self, request: web.Request, token: _Token, body: Any
                         ) -> web.Response:
        """The account's AccountRiskStatus (`masterid`: the account); `risk_forbidden`: 403,
        as for a login without the permission to read it."""
        master = self._int_query(request, "masterid")
        if self._take("risk_forbidden", {master}):
            return web.Response(status=403, text="Access is denied")
        status = self._risk.get(master)
        return web.json_response([status] if status and master in self._mine(token) else [])

    @staticmethod
    def _int_query(request: web.Request, name: str) -> int:
        try:
            return int(request.query[name])
        except (KeyError, ValueError):
            raise web.HTTPBadRequest(text=f"{name} required") from None

    async def _fill_deps(self, request: web.Request, token: _Token, body: Any) -> web.Response:
        master = self._int_query(request, "masterid")
        return web.json_response([f for f in self._fills_of(token) if f["orderId"] == master])

    async def _order_list(self, request: web.Request, token: _Token, body: Any) -> web.Response:
        mine = self._mine(token)
        return web.json_response([o for o in self._orders.values() if o["accountId"] in mine])

    async def _order_item(self, request: web.Request, token: _Token, body: Any) -> web.Response:
        order = self._orders.get(self._int_query(request, "id"))
        if order is None or order["accountId"] not in self._mine(token):
            raise web.HTTPNotFound
        return web.json_response(order)

    async def _version_deps(self, request: web.Request, token: _Token, body: Any
                            ) -> web.Response:
        version = self._versions.get(self._int_query(request, "masterid"))
        return web.json_response([version] if version else [])

    def _commands_of(self, token: _Token) -> list[dict[str, Any]]:
        mine = self._mine(token)
        return [c for c in self._commands.values()
                if self._orders[c["orderId"]]["accountId"] in mine]

    async def _command_list(self, request: web.Request, token: _Token, body: Any
                            ) -> web.Response:
        return web.json_response(self._commands_of(token))

    async def _command_deps(self, request: web.Request, token: _Token, body: Any
                            ) -> web.Response:
        master = self._int_query(request, "masterid")
        return web.json_response([c for c in self._commands_of(token) if c["orderId"] == master])

    async def _report_deps(self, request: web.Request, token: _Token, body: Any
                           ) -> web.Response:
        master = self._int_query(request, "masterid")
        return web.json_response([r for r in self._reports.values() if r["commandId"] == master])

    async def _contract_item(self, request: web.Request, token: _Token, body: Any
                             ) -> web.Response:
        wanted = self._int_query(request, "id")
        for name, contract_id in self.contracts.items():
            if contract_id == wanted and name not in self.hidden:
                return web.json_response(self._contract(name))
        raise web.HTTPNotFound

    async def _contract_find(self, request: web.Request, token: _Token, body: Any
                             ) -> web.Response:
        name = request.query.get("name", "")
        if name not in self.contracts or name in self.hidden:
            raise web.HTTPNotFound
        return web.json_response(self._contract(name))

    def _contract(self, name: str) -> dict[str, Any]:
        contract_id = self.contracts[name]
        return {"id": contract_id, "name": name, "contractMaturityId": 50_000 + contract_id
                % 1000, "status": "DefinitionChecked", "providerTickSize": 0.25}

    # --- orders -----------------------------------------------------------------------------
    async def _place(self, request: web.Request, token: _Token, body: dict[str, Any]
                     ) -> web.StreamResponse:
        account_id = body.get("accountId")
        if account_id not in self._mine(token):
            return web.json_response({"failureReason": "Unauthorized",
                                      "failureText": "Access is denied"})
        if body.get("symbol") not in self.contracts:
            return web.json_response({"failureReason": "InvalidContract",
                                      "failureText": f"Unknown symbol {body.get('symbol')}"})
        qty = body.get("orderQty")
        if (not isinstance(qty, int) or qty <= 0 or body.get("action") not in ("Buy", "Sell")
                or body.get("orderType") != "Market"):
            return web.json_response({"violations": [{"constraint": "invalid", "value": "",
                                                      "description": "invalid order"}]},
                                     status=400)
        if self._take("http_5xx", {account_id}):
            return web.Response(status=503, text="Service Unavailable")
        order = self._order_new(account_id, body["symbol"], body["action"].lower(), qty,
                                cl_ord_id=body.get("clOrdId"),
                                automated=bool(body.get("isAutomated")))
        if self._liquidate_only(account_id) and not self._reduces(order, qty):
            self._reject(order, "RiskCheck", "Account is in liquidate-only mode")
            return web.json_response({"failureReason": "RiskCheck",
                                      "failureText": "Account is in liquidate-only mode",
                                      "orderId": order["id"]})
        if self._take("reject", {account_id}):
            self._reject(order)
            return web.json_response({"failureReason": self.reject_reason,
                                      "failureText": self.reject_text, "orderId": order["id"]})
        self._execute(order, qty)
        if self._take("http_5xx_after", {account_id}):
            return web.Response(status=503, text="Service Unavailable")  # executed all the same
        if self._take("lose_response", {account_id}):  # executed; the answer never leaves
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=200)
        return web.json_response({"orderId": order["id"]})

    def _execute(self, order: dict[str, Any], qty: int) -> None:
        scope = {order["accountId"]}
        if self._take("hold", scope):
            self._held.append(order)  # rests Working until held_fill / held_cancel
            return
        if self._take("part_hold", scope) and qty > 1:
            self._fill(order, 1, final=False)
            self._held.append(order)
            return
        if self._take("cancel_rest", scope) and qty > 1:
            self._fill(order, 1, final=False)
            self._venue_cancel(order)
            return
        if self._take("late_fill", scope):
            asyncio.get_running_loop().call_later(0.3, self._fill, order, qty)
        elif self._take("partial", scope) and qty > 1:
            self._fill(order, qty // 2, final=False)
            self._fill(order, qty - qty // 2)
        else:
            self._fill(order, qty)

    async def _liquidate(self, request: web.Request, token: _Token, body: dict[str, Any]
                         ) -> web.Response:
        account_id, contract_id = body.get("accountId"), body.get("contractId")
        if account_id not in self._mine(token):
            return web.json_response({"failureReason": "Unauthorized",
                                      "failureText": "Access is denied"})
        position = self._positions.get((int(account_id), int(contract_id or 0)))
        if position is None or not position["netPos"]:
            return web.json_response({"failureReason": "UnknownReason",
                                      "failureText": "No position to liquidate"})
        names = {v: k for k, v in self.contracts.items()}
        net = position["netPos"]
        order = self._order_new(int(account_id), names[position["contractId"]],
                                "sell" if net > 0 else "buy", abs(net), cl_ord_id=None,
                                automated=True)
        self._fill(order, abs(net))
        return web.json_response({"orderId": order["id"]})

    async def _cancel(self, request: web.Request, token: _Token, body: dict[str, Any]
                      ) -> web.Response:
        """A Cancel command on a working order: the order goes Canceled, both pushed."""
        order_id = body.get("orderId")
        order = self._orders.get(order_id) if isinstance(order_id, int) else None
        if order is None or order["accountId"] not in self._mine(token):
            return web.json_response({"failureReason": "UnknownReason",
                                      "failureText": f"Order {body.get('orderId')} not found"})
        if order["ordStatus"] != "Working":
            return web.json_response({"failureReason": "TooLate",
                                      "failureText": f"Order {order['id']} is "
                                                     f"{order['ordStatus']}"})
        now = _iso(_now())
        command: dict[str, Any] = {"id": next(self._ids), "orderId": order["id"],
                                   "timestamp": now, "commandType": "Cancel",
                                   "commandStatus": "ExecutionStopped",
                                   "isAutomated": bool(body.get("isAutomated"))}
        self._commands[command["id"]] = command
        order["ordStatus"] = "Canceled"
        self._push(order["accountId"], "command", "Created", command)
        self._push(order["accountId"], "order", "Updated", order)
        return web.json_response({"commandId": command["id"]})

    def _order_new(self, account_id: int, symbol: str, side: str, qty: int, *,
                   cl_ord_id: str | None, automated: bool,
                   limit: float | None = None) -> dict[str, Any]:
        if account_id not in self._accounts:
            raise ValueError(f"no account {account_id} at the local venue")
        now = _iso(_now())
        order_id = next(self._ids)
        order: dict[str, Any] = {"id": order_id, "accountId": account_id,
                 "contractId": self.contracts[symbol], "timestamp": now,
                 "action": "Buy" if side == "buy" else "Sell", "ordStatus": "Working",
                 "admin": False}
        self._orders[order_id] = order
        version: dict[str, Any] = {"id": next(self._ids), "orderId": order_id, "orderQty": qty,
                   "orderType": "Market" if limit is None else "Limit", "timeInForce": "Day"}
        if limit is not None:
            version["price"] = limit
        self._versions[order_id] = version
        command: dict[str, Any] = {"id": next(self._ids), "orderId": order_id, "timestamp": now,
                   "commandType": "New", "commandStatus": "RiskPassed", "isAutomated": automated}
        if cl_ord_id is not None:
            command["clOrdId"] = cl_ord_id
        self._commands[command["id"]] = command
        self._push(account_id, "order", "Created", order)
        self._push(account_id, "orderVersion", "Created", version)
        self._push(account_id, "command", "Created", command)
        return order

    def _liquidate_only(self, account_id: int) -> bool:
        status = self._risk.get(int(account_id))
        return bool(status and status.get("liquidateOnly"))

    def _reduces(self, order: dict[str, Any], qty: int) -> bool:
        """Whether the order only takes off what the account holds (liquidate-only lets
        those through: the firm wants the account flat, not frozen)."""
        held = self._positions.get((int(order["accountId"]), int(order["contractId"])))
        net = held["netPos"] if held else 0
        moved = qty if order["action"] == "Buy" else -qty
        return net != 0 and abs(net + moved) < abs(net) and (net + moved) * net >= 0

    def _reject(self, order: dict[str, Any], reason: str | None = None,
                text: str | None = None) -> None:
        order["ordStatus"] = "Rejected"
        command = next(c for c in self._commands.values() if c["orderId"] == order["id"])
        command["commandStatus"] = "RiskRejected"
        report = {"id": next(self._ids), "commandId": command["id"], "timestamp": _iso(_now()),
                  "commandStatus": "RiskRejected",
                  "rejectReason": reason or self.reject_reason,
                  "text": text or self.reject_text, "ordStatus": "Rejected"}
        self._reports[report["id"]] = report
        for entity_type, entity in (("command", command), ("commandReport", report),
                                    ("order", order)):
            self._push(order["accountId"], entity_type, "Updated" if entity_type != "commandReport"
                       else "Created", entity)

    def _fill(self, order: dict[str, Any], qty: int, *, final: bool = True) -> int:
        now = _now()
        names = {v: k for k, v in self.contracts.items()}
        fill = {"id": next(self._ids), "orderId": order["id"], "contractId": order["contractId"],
                "timestamp": _iso(now), "tradeDate": _trade_date(now), "action": order["action"],
                "qty": qty, "price": self.prices[names[order["contractId"]]], "active": True,
                "finallyPaired": 0}
        self._fills[fill["id"]] = fill
        key = (order["accountId"], order["contractId"])
        position = self._positions.get(key)
        if position is None:
            position = {"id": next(self._ids), "accountId": order["accountId"],
                        "contractId": order["contractId"], "netPos": 0, "netPrice": fill["price"],
                        "bought": 0, "boughtValue": 0.0, "sold": 0, "soldValue": 0.0,
                        "prevPos": 0, "prevPrice": 0.0}
            self._positions[key] = position
        held = position["netPos"]
        _net, average, closed, points = position_fill(
            held, Decimal(str(position["netPrice"])) if held else None,
            qty if order["action"] == "Buy" else -qty, Decimal(str(fill["price"])))
        position["netPrice"] = float(average) if average is not None else fill["price"]
        if closed and points is not None:
            name = names[order["contractId"]]
            self._realized[order["accountId"]] = (self._realized.get(order["accountId"], 0.0)
                                                  + float(points) * self.point_values[name])
        side = "bought" if order["action"] == "Buy" else "sold"
        position[side] += qty
        position[side + "Value"] += qty * fill["price"]
        position["netPos"] = position["bought"] - position["sold"]
        position.update(timestamp=fill["timestamp"], tradeDate=fill["tradeDate"])
        if final:
            order["ordStatus"] = "Filled"
        self._push(order["accountId"], "fill", "Created", fill)
        self._push(order["accountId"], "position", "Updated", position)
        self._push(order["accountId"], "order", "Updated", order)
        self._push(order["accountId"], "cashBalance", "Updated",
                   self._cash_balance(order["accountId"]))
        return int(fill["id"])

    # --- the socket -------------------------------------------------------------------------
    async def _socket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        sock = _Socket(ws, time.monotonic(), time.monotonic())
        self._sockets.append(sock)
        sock.tasks.append(asyncio.create_task(self._socket_writer(sock)))
        sock.outbox.put_nowait("o")
        sock.tasks.append(asyncio.create_task(self._socket_watch(sock)))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                sock.last_heard = time.monotonic()
                await self._socket_frame(sock, msg.data)
        finally:
            for task in sock.tasks:
                task.cancel()
            if sock in self._sockets:
                self._sockets.remove(sock)
        return ws

    async def _socket_watch(self, sock: _Socket) -> None:
        """The venue's `h` frames, and the drop of a client that stopped sending `[]`."""
        while not sock.ws.closed:
            await asyncio.sleep(min(self.server_heartbeat, self.silence_limit / 2))
            if time.monotonic() - sock.last_heard > self.silence_limit:
                await self._socket_close(sock, None)
                return
            sock.outbox.put_nowait("h")

    @staticmethod
    async def _socket_writer(sock: _Socket) -> None:
        try:
            while True:
                frame = await sock.outbox.get()
                if frame is None or sock.ws.closed:
                    break
                await sock.ws.send_str(frame)
        except ConnectionError:
            pass
        await sock.ws.close()

    async def _socket_close(self, sock: _Socket, shutdown: str | None) -> None:
        """Close after what is queued; `shutdown`: the venue says why first."""
        self._activity_note(None)
        if sock in self._sockets:
            self._sockets.remove(sock)
        if shutdown is not None:
            sock.outbox.put_nowait("a" + json.dumps(
                [{"e": "shutdown", "d": {"reasonCode": shutdown,
                                         "reason": f"Connection closed: {shutdown}"}}]))
            sock.outbox.put_nowait("c" + json.dumps([1000, shutdown]))
        sock.outbox.put_nowait(None)

    async def _socket_frame(self, sock: _Socket, data: str) -> None:
        if data == "[]":
            self._heartbeats_total += 1
            return
        parts = data.split("\n", 3)
        if len(parts) < 4 or not parts[1].isdigit():
            sock.outbox.put_nowait("a" + json.dumps([{"s": 400, "d": "malformed request"}]))
            return
        endpoint, request_id, body = parts[0].lower(), int(parts[1]), parts[3]
        if endpoint == "authorize":
            await self._authorize(sock, request_id, body)
        elif sock.token is None or not sock.token.good:
            await self._answer(sock, request_id, 401, "Access is denied")
        elif endpoint == "user/syncrequest":
            await self._answer(sock, request_id, 200, self._snapshot(sock.token))
            sock.synced = True
        else:
            await self._answer(sock, request_id, 404, f"Unknown endpoint {endpoint}")

    async def _answer(self, sock: _Socket, request_id: int, status: int, data: Any) -> None:
        item: dict[str, Any] = {"i": request_id, "s": status}
        if data is not None:
            item["d"] = data
        sock.outbox.put_nowait("a" + json.dumps([item]))

    async def _authorize(self, sock: _Socket, request_id: int, body: str) -> None:
        value = body.strip()
        if value.startswith('"'):  # the tutorial sends the token JSON-quoted
            value = json.loads(value)
        token = self._tokens.get(value)
        if token is None or not token.good:
            await self._answer(sock, request_id, 401, "Access is denied")
            return
        if self._accounts_of(token.user_id) & self._unreachable:  # the user's outage
            await self._socket_close(sock, None)
            return
        sock.token = token
        await self._answer(sock, request_id, 200, None)
        mine = sorted((s for s in self._sockets if s.token is not None
                       and s.token.user_id == token.user_id), key=lambda s: s.opened_at)
        while len(mine) > self.ws_quota:  # the OLDEST goes, and its token with it
            oldest = mine.pop(0)
            assert oldest.token is not None
            oldest.token.revoked = True
            await self._socket_close(oldest, "ConnectionQuotaReached")

    def _snapshot(self, token: _Token) -> dict[str, Any]:
        mine = self._mine(token)
        orders = [o for o in self._orders.values() if o["accountId"] in mine]
        ids = {o["id"] for o in orders}
        commands = [c for c in self._commands.values() if c["orderId"] in ids]
        command_ids = {c["id"] for c in commands}
        return {
            "users": [{"id": token.user_id, "name": self._user_name(token.user_id),
                       "status": "Active"}],
            "accounts": [self._accounts[a] for a in sorted(mine)],
            "positions": [p for p in self._positions.values() if p["accountId"] in mine],
            "orders": orders,
            "orderVersions": [self._versions[i] for i in ids],
            "commands": commands,
            "commandReports": [r for r in self._reports.values()
                               if r["commandId"] in command_ids],
            "executionReports": [],
            "fills": [f for f in self._fills.values() if f["orderId"] in ids],
            "cashBalances": [self._cash_balance(a) for a in sorted(mine)],
            "contracts": [self._contract(n) for n in self.contracts if n not in self.hidden],
        }

    def _push(self, account_id: int, entity_type: str, event_type: str,
              entity: dict[str, Any]) -> None:
        user_id = self._accounts[account_id]["userId"]
        for sibling in self._accounts_of(user_id):  # the user's sockets carry them all
            self._activity_note(sibling)
        frame = "a" + json.dumps([{"e": "props", "d": {
            "entityType": entity_type, "eventType": event_type, "entity": dict(entity)}}])
        for sock in self._sockets:
            if sock.synced and sock.token is not None and sock.token.user_id == user_id:
                sock.outbox.put_nowait(frame)
