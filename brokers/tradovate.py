"""Tradovate (and NinjaTrader accounts, same API): REST for orders, a WebSocket for the stream.

Sessions: only the account's listener logs in (`session_obtain`) and renews with
`/auth/renewaccesstoken`, because every `accesstokenrequest` opens a new session and
Tradovate flags users that open thousands (tradovate/api#20). Workers read the stored
session (`brokers.sessions.session_load`) and, on a 401, read it once more, fresh.

Orders carry the copier's client order id as `clOrdId`, which Tradovate keeps on the
order's Command. There is no look-up by `clOrdId`, so `find_order` lists the commands.
A placement answered by an HTTP 5xx or whose answer is lost is `OrderOutcomeUnknown`
(the venue does not document that a 5xx means nothing ran); only a refusal before the
request ran (connection refused, 423/429, a penalty ticket, 401) is plain transient.
What an order filled is read from its fills (`/fill/deps?masterid=<orderId>`), never
inferred: a market order still working after the answer is reported "accepted" with
nothing counted, and its fills on the stream settle it (counted once, see
`copier.services.listener`): the part filled before the answer comes on the stream too,
and counting it here as well would count it twice. A look-up (`find_order`), which is
not followed by those fills, says what filled so far. One the venue cancelled or let
expire (`ordStatus` Canceled / Expired, or Completed short of its quantity) is
"cancelled" with what filled before, never "filled": the rest is still to be done.

The stream says when one of the account's orders settles (`OrderUpdate`), from the
`order` entity's props (`ordStatus` Filled / Completed / Canceled / Expired / Rejected,
`id`, `accountId`, `contractId`): the order's quantity is its `orderVersion`'s
`orderQty`, its client id its New `command`'s `clOrdId` (both pushed with the order, or
in the syncrequest's snapshot; asked over REST if not seen), and what a cancelled one
filled is read from its fills (`/fill/deps`), which a cancel's push does not carry.

Penalty tickets (HTTP 200 `{"p-ticket","p-time","p-captcha"}`) are honoured, never looped
on: the request is refused locally until `p-time` has passed, then resent with the ticket.
A ticket with `p-captcha` cannot be cleared by a program: about an hour.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from brokers.base import (
    RECORD_ERRORS,
    AccountData,
    BrokerAdapter,
    BrokerError,
    BrokerEvent,
    BrokerStream,
    CredentialField,
    Fill,
    OrderOutcomeUnknown,
    OrderRequest,
    OrderResult,
    OrderStatus,
    OrderUpdate,
    PermanentBrokerError,
    PositionUpdate,
    Session,
    TransientBrokerError,
    UnknownContract,
    Unreadable,
    orders_cancel_error,
    status_phrase,
    unreadable,
    venue_text,
)
from core import clock
from core.trading import Side

log = logging.getLogger(__name__)

LABEL = "Tradovate"
ENVIRONMENTS: dict[str, tuple[str, str]] = {
    "demo": ("https://demo.tradovateapi.com/v1", "wss://demo.tradovateapi.com/v1/websocket"),
    "live": ("https://live.tradovateapi.com/v1", "wss://live.tradovateapi.com/v1/websocket"),
}
TIMEOUT = httpx.Timeout(connect=2.0, read=5.0, write=5.0, pool=2.0)
# Renew while this much of the token is left; below it, renewing races the expiry.
RENEW_MARGIN = dt.timedelta(seconds=30)
CAPTCHA_WAIT = 3600.0  # a penalty with p-captcha: "try again in an hour"
LOCKOUT_WAIT = 3600.0  # HTTP 429 without Retry-After: the documented hour
# failureReasons a retry can clear without a person: the venue was busy, had no price, or
# the session was closed (it reopens). Everything else (AccountClosed, TradingLocked, the
# position and quantity limits, InvalidContract, Unauthorized, UnknownReason...) needs a
# person: a prop firm's TradingLocked lasts the day and a retry loop only burns requests.
TRANSIENT_FAILURES = frozenset({
    "AnotherCommandPending", "ExecutionProviderUnavailable", "RiskCheckTimeout", "NoQuote",
    "NotEnoughLiquidity", "SessionClosed", "TooLate",
})
DONE_STATUSES = frozenset({"Filled", "Completed", "Canceled", "Expired", "Rejected"})
# An order still able to fill: what a flatten cancels (PendingCancel is already going).
WORKING_STATUSES = frozenset({"Working", "PendingNew", "PendingReplace", "Suspended"})
FILLS_CURSOR_READS = 3
# The stream: the answer to `authorize` and to the syncrequest; frames from a live venue
# come at least every 2.5 s (`h`), so this long without one is a dead socket.
AUTHORIZE_TIMEOUT = 10.0
SYNC_TIMEOUT = 15.0
HEARTBEAT_EVERY = 2.5
SILENCE_LIMIT = 15.0

_clients: dict[int, httpx.Client] = {}
_clients_lock = threading.Lock()


def _http() -> httpx.Client:
    """This process's client: a forked child must not share its parent's sockets."""
    pid = os.getpid()
    with _clients_lock:
        client = _clients.get(pid)
        if client is None:
            _clients.clear()  # a parent's client, inherited across fork: never used here
            client = _clients[pid] = httpx.Client(
                timeout=TIMEOUT, limits=httpx.Limits(max_keepalive_connections=32,
                                                     keepalive_expiry=60))
        return client


class _Contracts:
    """contractId <-> name, per venue (demo and live number contracts alike, not equally)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._names: dict[tuple[str, int], str] = {}
        self._ids: dict[tuple[str, str], int] = {}

    def name(self, base: str, contract_id: int) -> str | None:
        with self._lock:
            return self._names.get((base, contract_id))

    def id(self, base: str, name: str) -> int | None:
        with self._lock:
            return self._ids.get((base, name))

    def learn(self, base: str, contract_id: int, name: str) -> None:
        with self._lock:
            self._names[(base, contract_id)] = name
            self._ids[(base, name)] = contract_id


_contracts = _Contracts()


class _Unauthorized(TransientBrokerError):
    """HTTP 401: the token was renewed elsewhere, expired or revoked; the request did not run."""


def _time(value: object) -> dt.datetime:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            at = dt.datetime.fromisoformat(value)
            return at if at.tzinfo else at.replace(tzinfo=dt.UTC)
    return clock.now()


def _whole(value: object, what: str) -> int:
    """A venue field that must be a whole number; ValueError (the record is unreadable)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{LABEL}: {what} {value!r} is not a whole number")
    return value


def _side(action: object) -> Side:
    if action == "Buy":
        return Side.BUY
    if action == "Sell":
        return Side.SELL
    raise PermanentBrokerError(f"{LABEL}: unknown action {action!r}")


class TradovateBroker(BrokerAdapter):
    kind = "tradovate"
    label = "Tradovate / NinjaTrader"
    credential_fields: ClassVar[tuple[CredentialField, ...]] = (
        CredentialField("name", "user name"),
        CredentialField("password", "password", secret=True),
        CredentialField("app_id", "app id", help_text="The API key's application id."),
        CredentialField("app_version", "app version", help_text="e.g. 1.0"),
        CredentialField("cid", "cid", help_text="The API key's client id (a number)."),
        CredentialField("sec", "sec", secret=True, help_text="The API key's secret."),
        CredentialField("environment", "environment", choices=(("demo", "demo"),
                                                               ("live", "live"))),
        CredentialField("api_url", "REST URL", required=False, address=True,
                        help_text="Only to override the environment's."),
        CredentialField("ws_url", "WebSocket URL", required=False, address=True,
                        help_text="Only to override the environment's."),
    )

    def __init__(self, account: AccountData) -> None:
        super().__init__(account)
        self._lock = threading.Lock()
        self._tickets: dict[str, tuple[str | None, float]] = {}  # path -> (ticket, not before)
        self._cursor: int | None = None
        self._unread: list[Unreadable] = []

    # --- credentials ----------------------------------------------------------------------
    @classmethod
    def credentials_clean(cls, values: dict[str, str]) -> dict[str, str]:
        cleaned = super().credentials_clean({k: str(v).strip() for k, v in values.items()
                                             if v is not None})
        if cleaned["environment"] not in ENVIRONMENTS:
            raise ValueError(f"environment must be one of: {', '.join(ENVIRONMENTS)}")
        if not cleaned["cid"].isdigit():
            raise ValueError("cid must be a number (the API key's client id)")
        for key, schemes in (("api_url", ("http://", "https://")),
                             ("ws_url", ("ws://", "wss://"))):
            if key in cleaned and not cleaned[key].startswith(schemes):
                raise ValueError(f"{key} must start with {' or '.join(schemes)}")
        return cleaned

    @classmethod
    def credential_addresses(cls, cleaned: Mapping[str, str]) -> tuple[str, ...]:
        """The REST and socket URLs the login goes to: the environment's unless overridden,
        so a switch of environment is a change of address too."""
        api, ws = ENVIRONMENTS[cleaned["environment"]]
        return cleaned.get("api_url", api).rstrip("/"), cleaned.get("ws_url", ws)

    def _creds(self) -> dict[str, str]:
        """The login, only where its secrets were entered for its addresses (the base's
        `credentials_read`): every request's address comes from here."""
        return self.credentials_read()

    def _urls(self) -> tuple[str, str]:
        api, ws = self.credential_addresses(self._creds())
        return api, ws

    @classmethod
    def external_id_clean(cls, value: str) -> str:
        """The venue's account id is a number: caught in the admin, not at the first order."""
        value = value.strip()
        if not value.isdigit():
            raise ValueError(
                f"the Tradovate account id is a whole number (as account/list lists it; "
                f"'test connection' shows it), not {value!r}")
        return value

    def _account_id(self) -> int:
        try:
            return int(str(self.account.external_id).strip())
        except ValueError:
            raise PermanentBrokerError(
                f"{LABEL}: the account's broker-side id must be the Tradovate account id "
                f"(a number), not {self.account.external_id!r}") from None

    # --- HTTP -----------------------------------------------------------------------------
    def _send(self, method: str, path: str, *, token: str | None = None,
              body: dict[str, Any] | None = None, params: Mapping[str, Any] | None = None,
              placing: bool = False) -> Any:
        """One request. A placement whose answer is lost is `OrderOutcomeUnknown`."""
        body = self._ticket_attach(path, body)
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = _http().request(method, self._urls()[0] + path, json=body,
                                       params=dict(params or {}), headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise TransientBrokerError(f"{LABEL}: {path}: unreachable ({type(exc).__name__})"
                                       ) from None
        except httpx.TransportError as exc:  # sent: it may have run
            lost = OrderOutcomeUnknown if placing else TransientBrokerError
            raise lost(f"{LABEL}: {path}: no answer ({type(exc).__name__})") from None
        return self._answer(path, response, placing=placing)

    def _answer(self, path: str, response: httpx.Response, *, placing: bool) -> Any:
        status = response.status_code
        if status == 401:
            raise _Unauthorized(f"{LABEL}: {path}: HTTP 401 (session refused)")
        if status in (423, 429):
            wait = _retry_after(response, 60.0 if status == 423 else LOCKOUT_WAIT)
            raise TransientBrokerError(f"{LABEL}: {path}: HTTP {status} (rate limited)",
                                       retry_after=wait)
        if status >= 500:
            # Undocumented as "nothing ran": a placement may have executed before the error,
            # so the copier looks its clOrdId up before anything else.
            message = f"{LABEL}: {path}: HTTP {status}"
            raise (OrderOutcomeUnknown(f"{message} after the order was sent: it may have "
                                       "executed") if placing
                   else TransientBrokerError(message))
        if status == 404:
            raise PermanentBrokerError(f"{LABEL}: {path}: not found (HTTP 404)")
        if status >= 400:
            # The status and its name, never the body: whatever answered may not be the
            # venue, and its page is not for the admin to read through the copier.
            raise PermanentBrokerError(f"{LABEL}: {path}: HTTP {status} {status_phrase(status)}"
                                       .strip())
        try:
            answer = response.json()
        except ValueError:
            garbled = OrderOutcomeUnknown if placing else TransientBrokerError
            raise garbled(f"{LABEL}: {path}: unreadable answer (HTTP {status})") from None
        if isinstance(answer, dict) and "p-ticket" in answer:
            raise self._ticket_keep(path, answer)
        return answer

    def _ticket_keep(self, path: str, answer: dict[str, Any]) -> TransientBrokerError:
        captcha = bool(answer.get("p-captcha"))
        try:
            wait = CAPTCHA_WAIT if captcha else max(float(answer.get("p-time") or 0), 0.0)
        except (TypeError, ValueError):
            wait = 60.0
        ticket = None if captcha else str(answer["p-ticket"])
        with self._lock:
            self._tickets[path] = (ticket, time.monotonic() + wait)
        why = "penalty with captcha: about an hour" if captcha else f"wait {wait:g} s"
        return TransientBrokerError(f"{LABEL}: {path}: rate limited ({why})", retry_after=wait)

    def _ticket_attach(self, path: str, body: dict[str, Any] | None) -> dict[str, Any] | None:
        """Before `p-time` is over nothing is sent; after it, the resend carries the ticket."""
        with self._lock:
            held = self._tickets.get(path)
            if held is None:
                return body
            ticket, not_before = held
            left = not_before - time.monotonic()
            if left > 0:
                raise TransientBrokerError(
                    f"{LABEL}: {path}: rate limited, {left:.0f} s to wait", retry_after=left)
            del self._tickets[path]
        if ticket is None or body is None:
            return body
        return {**body, "p-ticket": ticket}

    # --- sessions ---------------------------------------------------------------------------
    def _session(self, *, fresh: bool = False) -> Session:
        from brokers.sessions import session_load

        session = None if self.account.pk is None else self.session_fits(
            session_load(self.account.pk, fresh=fresh))
        if session is None:
            raise TransientBrokerError("no session: the listener has not logged in yet")
        return session

    def _call(self, method: str, path: str, *, body: dict[str, Any] | None = None,
              params: Mapping[str, Any] | None = None, placing: bool = False,
              session: Session | None = None, token: str | None = None) -> Any:
        """A request with the stored session (or `token`); a 401 reads the session again."""
        used = token or (session or self._session()).token
        try:
            return self._send(method, path, token=used, body=body, params=params,
                              placing=placing)
        except _Unauthorized:
            again = self._session(fresh=True)
            if again.token == used:
                raise TransientBrokerError(f"{LABEL}: {path}: the session was refused (401); "
                                           "the listener logs in again") from None
        try:
            return self._send(method, path, token=again.token, body=body, params=params,
                              placing=placing)
        except _Unauthorized:
            raise TransientBrokerError(f"{LABEL}: {path}: the session was refused (401) "
                                       "twice") from None

    def session_obtain(self, current: Session | None) -> Session | None:
        """Renew while `current` is good (same session), else log in (a new one)."""
        current = self.session_fits(current)  # obtained at other addresses: never sent here
        if current is not None and current.expires_at - RENEW_MARGIN > clock.now():
            try:
                answer = self._send("GET", "/auth/renewaccesstoken", token=current.token)
            except _Unauthorized:
                answer = None  # revoked (quota) or logged out: only a login helps
            if isinstance(answer, dict) and answer.get("accessToken"):
                log.info("%s: %s session renewed", self.account, LABEL)
                return Session(token=str(answer["accessToken"]),
                               expires_at=_time(answer.get("expirationTime")),
                               data=dict(current.data))
        token, expires, user_id = self._token_request()
        spec = self._account_spec(token)
        log.info("%s: logged in to %s (user %s, account %s)", self.account, LABEL, user_id, spec)
        return self.session_bind(Session(token=token, expires_at=expires,
                                         data={"userId": user_id, "accountSpec": spec,
                                               "accountId": self._account_id()}))

    def _token_request(self) -> tuple[str, dt.datetime, int]:
        creds = self._creds()
        device = uuid.uuid5(uuid.NAMESPACE_URL,
                            f"trade-copier/tradovate/{self.account.pk or self.account.name}")
        answer = self._send("POST", "/auth/accesstokenrequest", body={
            "name": creds["name"], "password": creds["password"], "appId": creds["app_id"],
            "appVersion": creds["app_version"], "cid": int(creds["cid"]), "sec": creds["sec"],
            "deviceId": str(device),
        })
        if not isinstance(answer, dict):
            raise TransientBrokerError(f"{LABEL}: login: unexpected answer")
        if answer.get("errorText"):
            raise PermanentBrokerError(
                f"{LABEL}: credentials refused: {venue_text(answer['errorText'])}")
        if not answer.get("accessToken") or answer.get("userId") is None:
            raise PermanentBrokerError(f"{LABEL}: login answered without a token")
        return (str(answer["accessToken"]), _time(answer.get("expirationTime")),
                int(answer["userId"]))

    def _accounts_listed(self, token: str) -> list[dict[str, Any]]:
        listed = self._send("GET", "/account/list", token=token)
        return [a for a in listed if isinstance(a, dict)] if isinstance(listed, list) else []

    def _account_spec(self, token: str) -> str:
        wanted = self._account_id()
        listed = self._accounts_listed(token)
        for row in listed:
            if row.get("id") == wanted:
                return str(row.get("name"))
        names = _accounts_named(listed)
        raise PermanentBrokerError(f"{LABEL}: account {wanted} is not among this login's "
                                   f"accounts: {names}")

    # --- contracts --------------------------------------------------------------------------
    def contract_name_known(self, contract_id: int) -> str | None:
        """The name if this process learned it already: no I/O, so the stream can skip a
        thread hop on every fill."""
        return _contracts.name(self._urls()[0], contract_id)

    def contract_name(self, contract_id: int, *, token: str | None = None) -> str:
        base = self._urls()[0]
        name = _contracts.name(base, contract_id)
        if name is None:
            try:
                row = self._call("GET", "/contract/item", params={"id": contract_id},
                                 token=token)
            except PermanentBrokerError:
                row = None
            if not isinstance(row, dict) or not row.get("name"):
                raise UnknownContract(f"{LABEL}: unknown contract id {contract_id}")
            name = str(row["name"])
            _contracts.learn(base, contract_id, name)
        return name

    def contract_id(self, name: str) -> int:
        base = self._urls()[0]
        found = _contracts.id(base, name)
        if found is None:
            try:
                row = self._call("GET", "/contract/find", params={"name": name})
            except PermanentBrokerError:
                row = None
            if not isinstance(row, dict) or row.get("id") is None:
                raise PermanentBrokerError(f"{LABEL}: unknown contract {name!r}")
            found = int(row["id"])
            _contracts.learn(base, found, name)
        return found

    # --- orders -----------------------------------------------------------------------------
    def connect(self) -> None:
        """Nothing to prepare: positions are read over REST with the listener's session."""

    def disconnect(self) -> None:
        """The session is the listener's: it is not closed by an adapter."""

    def place_order(self, request: OrderRequest) -> OrderResult:
        if request.qty <= 0:
            raise PermanentBrokerError(f"{LABEL}: invalid quantity {request.qty}")
        if not request.symbol:
            raise PermanentBrokerError(f"{LABEL}: no symbol")
        session = self._session()
        body = {
            "accountSpec": str(session.data.get("accountSpec", "")),
            "accountId": self._account_id(), "action": "Buy" if request.side == Side.BUY
            else "Sell", "symbol": request.symbol, "orderQty": request.qty,
            "orderType": "Market", "isAutomated": True, "clOrdId": request.client_order_id,
        }
        answer = self._call("POST", "/order/placeorder", body=body, placing=True,
                            session=session)
        acknowledged_at = clock.now()
        if not isinstance(answer, dict):
            raise OrderOutcomeUnknown(f"{LABEL}: placeorder: unexpected answer")
        failure = _failure(answer)
        if failure is not None:
            raise failure
        if answer.get("orderId") is None:
            raise OrderOutcomeUnknown(f"{LABEL}: placeorder answered without an order id")
        order_id = int(answer["orderId"])
        try:
            result = self._outcome(request.client_order_id, order_id, request.qty)
            if result.status == "accepted":  # its fills count it as they come (docstring)
                result = dataclasses.replace(result, filled_qty=0, message=(
                    f"{result.message}; its fills come on the stream"))
        except BrokerError as exc:
            # The order exists: only how much filled is unknown for now. The stream's fill
            # settles it; raising here would make the copier think nothing was sent.
            log.warning("%s: order %s placed, its fills unread (%s)", self.account, order_id,
                        exc.message)
            result = OrderResult(request.client_order_id, str(order_id), OrderStatus.ACCEPTED, 0,
                                 message="placed; fills not read yet")
        return dataclasses.replace(result, acknowledged_at=acknowledged_at)

    def _outcome(self, client_order_id: str, order_id: int, qty: int,
                 order: dict[str, Any] | None = None) -> OrderResult:
        """What the order did so far: filled (all of it), cancelled (with what filled before),
        rejected, or working (with what filled so far)."""
        fills = self._call("GET", "/fill/deps", params={"masterid": order_id})
        filled = sum(int(f.get("qty", 0)) for f in fills if f.get("active", True))
        complete = qty > 0 and filled >= qty
        if complete and order is None:
            return OrderResult(client_order_id, str(order_id), OrderStatus.FILLED, filled)
        if order is None:
            order = self._call("GET", "/order/item", params={"id": order_id})
            assert isinstance(order, dict)
        status = str(order.get("ordStatus", ""))
        outcome, filled = _settlement(status, qty, filled)
        if outcome == "rejected":
            return OrderResult(client_order_id, str(order_id), OrderStatus.REJECTED, 0,
                               message=self._reject_text(order_id, status))
        message = "" if outcome == "filled" else (
            f"{status or 'working'}; filled {filled} of {qty}"
            + (" so far" if outcome == "accepted" else ""))
        return OrderResult(client_order_id, str(order_id), outcome, filled, message=message)

    def _reject_text(self, order_id: int, status: str) -> str:
        commands = self._call("GET", "/command/deps", params={"masterid": order_id})
        for command in commands:
            reports = self._call("GET", "/commandReport/deps", params={"masterid": command["id"]})
            for report in reports:
                if report.get("rejectReason"):
                    return f"{report['rejectReason']}: {report.get('text') or ''}".strip(": ")
        return f"order {status.lower()} unfilled"

    def _order_of(self, client_order_id: str) -> tuple[int, dict[str, Any]] | None:
        """This account's order sent with `client_order_id` (its New command's clOrdId)."""
        commands = self._call("GET", "/command/list")
        mine = self._account_id()
        for command in commands:
            if command.get("clOrdId") != client_order_id or command.get(
                    "commandType", "New") != "New":
                continue
            order_id = int(command["orderId"])
            try:
                order = self._call("GET", "/order/item", params={"id": order_id})
            except PermanentBrokerError:
                continue  # not visible to this login: not ours
            if isinstance(order, dict) and order.get("accountId") == mine:
                return order_id, order
        return None

    def _order_read(self, client_order_id: str, order_id: int,
                    order: dict[str, Any]) -> OrderResult:
        versions = self._call("GET", "/orderVersion/deps", params={"masterid": order_id})
        qty = max((int(v.get("orderQty", 0)) for v in versions), default=0)
        found = self._outcome(client_order_id, order_id, qty, order=order)
        return OrderResult(
            found.client_order_id, found.broker_order_id, found.status, found.filled_qty,
            found.message, symbol=self.contract_name(int(order["contractId"])),
            side=_side(order.get("action")), qty=qty or None)

    def find_order(self, client_order_id: str) -> OrderResult | None:
        found = self._order_of(client_order_id)
        return None if found is None else self._order_read(client_order_id, *found)

    def order_cancel(self, client_order_id: str) -> OrderResult | None:
        """order/cancelorder while the order is working, then the order read again: a cancel
        refused because the order settled first (TooLate) answers what it settled as."""
        found = self._order_of(client_order_id)
        if found is None:
            return None
        order_id, order = found
        if order.get("ordStatus") in WORKING_STATUSES:
            answer = self._call("POST", "/order/cancelorder",
                                body={"orderId": order_id, "isAutomated": True})
            failure = _failure(answer) if isinstance(answer, dict) else None
            order = self._call("GET", "/order/item", params={"id": order_id})
            assert isinstance(order, dict)
            if failure is not None and order.get("ordStatus") in WORKING_STATUSES:
                raise TransientBrokerError(
                    f"{LABEL}: cancelling {client_order_id}: {failure.message}")
        return self._order_read(client_order_id, order_id, order)

    def positions(self) -> dict[str, int]:
        """Net positions, with the newest fill id they include (`fills_cursor`).

        The fill list is read before and after the positions: equal, no fill landed in
        between, so the positions hold exactly the fills up to that id.
        """
        mine = self._account_id()
        cursor: int | None = None
        rows: list[dict[str, Any]] = []
        for _ in range(FILLS_CURSOR_READS):
            before = self._fill_max()
            rows = self._call("GET", "/position/list")
            after = self._fill_max()
            if before == after:
                cursor = after
                break
        else:
            log.warning("%s: fills kept arriving while positions were read; no cursor",
                        self.account)
        held, self._unread = self._positions_held(rows, mine)
        self._cursor = cursor
        return held

    def _positions_held(self, rows: list[dict[str, Any]], mine: int, *,
                        token: str | None = None) -> tuple[dict[str, int], list[Unreadable]]:
        """The account's net positions by contract name, and the rows that could not be
        read (a contract the venue's look-up does not know): left out, never failing."""
        held: dict[str, int] = {}
        unread: list[Unreadable] = []
        for row in rows:
            if not isinstance(row, dict) or row.get("accountId") != mine or not row.get("netPos"):
                continue
            name: str | None = None
            try:  # the name first: a garbled size of a contract it names keeps its name
                name = self.contract_name(_whole(row["contractId"], "contractId"), token=token)
                qty = _whole(row["netPos"], "netPos")
            except RECORD_ERRORS as exc:
                unread.append(unreadable("position", row, exc, label=LABEL, symbol=name))
                continue
            held[name] = held.get(name, 0) + qty
        return {k: v for k, v in held.items() if v}, unread

    def positions_unread(self) -> list[Unreadable]:
        return list(self._unread)

    def _fill_max(self) -> int:
        fills = self._call("GET", "/fill/list")
        return max((int(f["id"]) for f in fills if f.get("id") is not None), default=0)

    def fills_cursor(self) -> int | None:
        return self._cursor

    def realized_pnl(self, since: dt.datetime) -> Decimal:
        """cashBalance/getCashBalanceSnapshot's `realizedPnL`: the account's realised P&L of
        the venue's own trading day, which for CME futures starts at 17:00 Chicago time as
        the copier's session does (`since` cannot be asked for: the venue has one day).
        The snapshot reports no fees beside it: the amount is the venue's."""
        answer = self._call("POST", "/cashBalance/getCashBalanceSnapshot",
                            body={"accountId": self._account_id()})
        if not isinstance(answer, dict):
            raise TransientBrokerError(f"{LABEL}: cash balance snapshot: unexpected answer")
        if answer.get("errorText"):
            raise PermanentBrokerError(
                f"{LABEL}: cash balance snapshot refused: {venue_text(answer['errorText'])}")
        value = answer.get("realizedPnL")
        try:
            amount = None if value is None or isinstance(value, bool) else Decimal(str(value))
        except InvalidOperation:
            amount = None
        if amount is None or not amount.is_finite():
            raise TransientBrokerError(
                f"{LABEL}: cash balance snapshot without a realised P&L: {value!r}")
        return amount.quantize(Decimal("0.01"))

    def flatten(self, symbol: str) -> None:
        answer = self._call("POST", "/order/liquidateposition", body={
            "accountId": self._account_id(), "contractId": self.contract_id(symbol),
            "admin": False})
        failure = _failure(answer) if isinstance(answer, dict) else None
        if failure is not None:
            raise failure

    def orders_cancel_all(self) -> int:
        """order/list (the login's orders: this account's still working), then
        order/cancelorder for each; every one is tried before a failure is raised."""
        mine = self._account_id()
        orders = self._call("GET", "/order/list")
        cancelled, failures = 0, []
        for order in orders if isinstance(orders, list) else []:
            if (not isinstance(order, dict) or order.get("accountId") != mine
                    or order.get("ordStatus") not in WORKING_STATUSES
                    or order.get("id") is None):
                continue
            try:
                answer = self._call("POST", "/order/cancelorder",
                                    body={"orderId": int(order["id"]), "isAutomated": True})
                failure = _failure(answer) if isinstance(answer, dict) else None
                if failure is not None:
                    raise failure
            except BrokerError as exc:
                failures.append(exc)
                continue
            cancelled += 1
        if failures:
            raise orders_cancel_error(LABEL, cancelled, failures)
        return cancelled

    def connection_test(self) -> str:
        """Log in (or use the listener's session), find the account, list its positions."""
        self._creds()
        mine = self._account_id()
        stored = None
        if self.account.pk is not None:
            from brokers.sessions import session_load

            stored = self.session_fits(session_load(self.account.pk))
        if stored is not None:
            token, how = stored.token, "the listener's session"
        else:
            try:
                token, _expires, user_id = self._token_request()
            except BrokerError as exc:
                raise type(exc)(f"login failed: {exc.message}") from None
            how = f"a new login (user {user_id})"
        try:
            listed = self._accounts_listed(token)
        except BrokerError as exc:
            raise type(exc)(f"listing the accounts failed: {exc.message}") from None
        spec = next((a.get("name") for a in listed if a.get("id") == mine), None)
        if spec is None:
            raise PermanentBrokerError(f"account {mine} not found; this login has: "
                                       f"{_accounts_named(listed)}")
        try:
            rows = self._send("GET", "/position/list", token=token)
            held, unread = self._positions_held(rows, mine, token=token)
        except BrokerError as exc:
            raise type(exc)(f"reading the positions failed: {exc.message}") from None
        listed_held = ", ".join(f"{k} {v:+d}" for k, v in sorted(held.items())) or "flat"
        listed_held += "".join(f"; {u.reason}" for u in unread)
        return (f"{self.label}: {how}; account {venue_text(spec, 40)} ({mine}); "
                f"positions: {listed_held}")

    def stream(self, session: Session | None) -> BrokerStream:
        return TradovateStream(self, session)


def _settlement(status: str, qty: int, filled: int) -> tuple[OrderStatus, int]:
    """The copier's status of an order of `ordStatus` `status` that filled `filled` of
    `qty`: all filled is filled whatever the status says; a done order short of its
    quantity was cancelled (what it filled stays filled); a rejected one filled nothing."""
    if (qty > 0 and filled >= qty) or status == "Filled":
        return OrderStatus.FILLED, max(filled, qty)
    if status == "Rejected" and not filled:
        return OrderStatus.REJECTED, 0
    if status in DONE_STATUSES:
        return OrderStatus.CANCELLED, filled
    return OrderStatus.ACCEPTED, filled


def _retry_after(response: httpx.Response, default: float) -> float:
    try:
        return float(response.headers.get("Retry-After", default))
    except ValueError:
        return default


def _accounts_named(listed: list[dict[str, Any]]) -> str:
    """The accounts a login lists, short: names cut, at most ten."""
    return ", ".join(f"{venue_text(a.get('name'), 40)} ({venue_text(a.get('id'), 20)})"
                     for a in listed[:10]) or "none"


def _failure(answer: dict[str, Any]) -> BrokerError | None:
    """The venue's refusal inside an HTTP 200, as the error kind a retry can or cannot fix."""
    reason = answer.get("failureReason")
    if (reason in (None, "", "Success")) and not answer.get("errorText"):
        return None
    text = venue_text(answer.get("failureText") or answer.get("errorText"))
    message = (f"{LABEL}: order refused: {venue_text(reason, 40) or 'error'}"
               + (f": {text}" if text else ""))
    if reason in TRANSIENT_FAILURES:
        return TransientBrokerError(message)
    return PermanentBrokerError(message)


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
            # An order, version or command record it cannot read (fills and positions are
            # delivered as Unreadable before this): skipped, never a reconnect. A fill of
            # that order asks the venue for its account and client id, as when the record
            # never came.
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
        if event is not None:
            self._pending.append(event)

    async def _fill_event(self, entity: dict[str, Any]) -> Fill | Unreadable | None:
        """A fill of the account as the copier's; one it cannot read is delivered as such
        (refused by the copier), never raised: the stream goes on."""
        try:
            return await self._fill(entity)
        except RECORD_ERRORS as exc:
            return unreadable("fill", entity, exc, label=LABEL, fill_id=entity.get("id"))

    async def _position_event(self, entity: dict[str, Any]) -> PositionUpdate | Unreadable:
        try:
            return PositionUpdate(await self._name(_whole(entity["contractId"], "contractId")),
                                  _whole(entity.get("netPos", 0), "netPos"))
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
                    symbol=await self._name(_whole(entity["contractId"], "contractId")),
                    side=_side(entity.get("action")), qty=_whole(entity.get("qty", 0), "qty"),
                    time=_time(entity.get("timestamp")),
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
        outcome, filled = _settlement(status, qty, filled)
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
