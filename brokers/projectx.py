"""ProjectX Gateway (TopstepX and the other prop firms on it): REST orders, SignalR stream.

Sessions: the account's owning listener logs in (`session_obtain`) and renews the
token before it expires; workers only read it (`brokers.sessions.session_load`) and
read it again once on a 401. No login per order: the Gateway limits sessions. A token
the Gateway refuses before its expiry (an API key reset, a session limit) is dropped
from the store by whoever met the 401 (`SessionRefused`): the listener logs in again.

Orders: ProjectX answers HTTP 200 with `success:false` and an `errorCode` when it
refuses; `customTag` (our client order id) is unique per account and stays taken
even by a rejected order, so a second placement with the same tag can never execute
twice: the refusal it gets is answered with what the venue has under that tag.
A placement whose answer is lost (timeout, dropped connection after sending) or is an
HTTP 5xx (the Gateway does not document that a 5xx means nothing ran) is an
`OrderOutcomeUnknown`; the copier looks the tag up before anything is sent again. Only a
refusal before the request left or was read (connection refused, a 429, a 401) is a
plain transient error.

What a placement returns: the place answer carries only the order id, so the order
is read back once. Filled (the usual case for a market order) -> "filled" with the
venue's filled size, and the stream's fills of it are then recognised as counted.
Still working -> "accepted" with filled_qty 0, and the stream's fills settle it
(`copier.services.listener`): the fills of the part already filled come on the stream
too, and counting that part here as well would count it twice (a look-up, which is
not followed by those fills, says what filled so far). A partly filled order is read
again for a moment first, since a market order completes within milliseconds.
Cancelled or expired (status 3 / 4) -> "cancelled" with what filled before, never
"filled": the rest is still to be done.

The stream says when one of the account's orders settles (`OrderUpdate`), from the
`GatewayUserOrder` pushes, whose data is the REST order's shape: `id`, `accountId`,
`contractId`, `status` (ORDER_STATUS: 2 filled, 3 cancelled, 4 expired, 5 rejected),
`size` (asked), `fillVolume` (filled so far; `filledSize` in some clients), `customTag`.
One update per order id and stream; an order push comes with every trade of it, and
whether before or after the trade is not documented (the local Gateway does either).

Symbols: the copier's symbol is the contract name (`ESZ6`); the Gateway's id
(`CON.F.US.EP.Z26`) is looked up and cached per process in both directions.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar
from urllib.parse import urlencode, urlsplit

import httpx
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

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
    SessionRefused,
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

DEFAULT_API_URL = "https://api.topstepx.com"
DEFAULT_RTC_URL = "https://rtc.topstepx.com"
# Short: a reconnect holds the account's position locks while it asks the venue.
TIMEOUT = httpx.Timeout(connect=2.0, read=5.0, write=5.0, pool=2.0)
TOKEN_LIFETIME_DEFAULT = dt.timedelta(hours=24)  # when the token carries no `exp`
RENEW_BEFORE = dt.timedelta(hours=1)  # renew a session with less than this left
ORDER_LOOKBACK = dt.timedelta(days=7)  # how far back a client order id is looked up
CURSOR_LOOKBACK = dt.timedelta(days=2)
CURSOR_READS = 5  # trades / positions / trades, until the trades stand still
PARTIAL_RECHECKS = 3
PARTIAL_RECHECK_WAIT = 0.1
HANDSHAKE_TIMEOUT = 10.0
HUB_PING_INTERVAL = 15.0  # SignalR's keep-alive
HUB_SILENCE_LIMIT = 30.0  # SignalR's server timeout: no frame for this long = lost

ORDER_STATUS: dict[Any, str] = {0: "none", 1: "open", 2: "filled", 3: "cancelled", 4: "expired",
                5: "rejected", 6: "pending"}
# The venue's order status -> the copier's, for an order that will not change any more.
SETTLED: dict[str, OrderStatus] = {
    "filled": OrderStatus.FILLED, "cancelled": OrderStatus.CANCELLED,
    "expired": OrderStatus.CANCELLED, "rejected": OrderStatus.REJECTED}
# Order/place errorCode -> (name, permanent). Permanent: a person must act (wrong
# account or contract, funds, rules, hours) and retrying the same order cannot help.
# OrderPending (6) and UnknownError (7) are transient: the venue did not say no to the
# order itself, and the copier's retry of an exit uses a new client order id.
PLACE_ERRORS: dict[int, tuple[str, bool]] = {
    1: ("AccountNotFound", True), 2: ("OrderRejected", True), 3: ("InsufficientFunds", True),
    4: ("AccountViolation", True), 5: ("OutsideTradingHours", True),
    6: ("OrderPending", False), 7: ("UnknownError", False), 8: ("ContractNotFound", True),
    9: ("ContractNotActive", True), 10: ("AccountRejected", True),
}
LOGIN_ERRORS = {1: "UserNotFound", 2: "PasswordVerificationFailed", 3: "InvalidCredentials",
                4: "AppNotFound", 5: "AppVerificationFailed", 6: "InvalidDevice",
                7: "AgreementsNotSigned", 8: "UnknownError", 9: "ApiSubscriptionNotFound",
                10: "ApiKeyAuthenticationDisabled"}
LOGIN_TRANSIENT = {8}

# --- one HTTP pool per process --------------------------------------------------------------
_clients: dict[int, httpx.Client] = {}
_clients_lock = threading.Lock()


def http_client() -> httpx.Client:
    """This process's keep-alive pool; a forked child builds its own (sockets are not shared)."""
    pid = os.getpid()
    with _clients_lock:
        client = _clients.get(pid)
        if client is None:
            for stale in list(_clients):
                _clients.pop(stale)  # the parent's: never used, never closed here
            client = httpx.Client(timeout=TIMEOUT, limits=httpx.Limits(
                max_connections=64, max_keepalive_connections=32, keepalive_expiry=30.0))
            _clients[pid] = client
        return client


# --- contracts, cached per process in both directions ---------------------------------------
_contract_ids: dict[tuple[str, str], str] = {}
_contract_names: dict[tuple[str, str], str] = {}
_contracts_lock = threading.Lock()


def _contract_learn(api_url: str, contract_id: str, name: str) -> None:
    with _contracts_lock:
        _contract_ids[(api_url, name)] = contract_id
        _contract_names[(api_url, contract_id)] = name


def token_expiry(token: str) -> dt.datetime:
    """The JWT's `exp` claim (the venue's word), else the documented 24 h from now."""
    try:
        claims = token.split(".")[1]
        payload = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
        return dt.datetime.fromtimestamp(int(payload["exp"]), dt.UTC)
    except (IndexError, ValueError, KeyError, TypeError, binascii.Error):
        return dt.datetime.now(dt.UTC) + TOKEN_LIFETIME_DEFAULT


def _when(stamp: Any) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(str(stamp))
    except ValueError:
        return dt.datetime.now(dt.UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _since(delta: dt.timedelta) -> str:
    """A search's start, with the explicit +00:00 offset the Gateway is sent."""
    return (dt.datetime.now(dt.UTC) - delta).isoformat()


def _side(value: Any) -> Side:
    if value == 0:
        return Side.BUY
    if value == 1:
        return Side.SELL
    raise TransientBrokerError(f"ProjectX: unknown side {value!r} in the venue's data")


def _money(value: Any, trade: Mapping[str, Any]) -> Decimal:
    """An amount of a trade as the venue wrote it; one that is not a number is unreadable,
    and the whole P&L with it (a skipped trade would be a made-up total)."""
    try:
        amount = Decimal(str(value)) if not isinstance(value, bool) else None
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite():
        raise TransientBrokerError(
            f"ProjectX: trade {trade.get('id')} has an amount that is not a number: {value!r}")
    return amount


def _filled_of(order: Mapping[str, Any]) -> int:
    """What an order filled so far, as the order itself says (`fillVolume`, or the alias
    `filledSize` some clients read)."""
    value = order.get("fillVolume", order.get("filledSize"))
    return int(value or 0) if not isinstance(value, bool) else 0


def _settlement(status: OrderStatus, size: int, filled: int) -> tuple[OrderStatus, int]:
    """The copier's status and filled quantity of an order: a cancel that came after all
    of it filled is a fill; a rejected order filled nothing."""
    if status == "filled" or (status == "cancelled" and size and filled >= size):
        return OrderStatus.FILLED, filled or size
    if status == "rejected":
        return OrderStatus.REJECTED, 0
    return status, filled


def _position_signed(data: Mapping[str, Any]) -> int:
    """The signed size of a position record; ValueError for one the venue did not document
    (a record, not the stream or the read, is then unreadable)."""
    size = data.get("size") or 0
    if isinstance(size, bool) or not isinstance(size, int):
        raise ValueError(f"ProjectX: position size {size!r} is not a whole number")
    if data.get("type") == 2:
        return -size
    if data.get("type") == 1 or size == 0:
        return size
    raise ValueError(f"ProjectX: position of undefined type {data.get('type')!r}")


class ProjectXBroker(BrokerAdapter):
    kind = "projectx"
    label = "ProjectX Gateway (TopstepX, prop firms)"
    credential_fields: ClassVar[tuple[CredentialField, ...]] = (
        CredentialField("username", "User name"),
        CredentialField("api_key", "API key", secret=True),
        CredentialField("api_url", "API URL", required=False, address=True,
                        help_text=f"The firm's gateway, default {DEFAULT_API_URL}"),
        CredentialField("rtc_url", "Realtime URL", required=False, address=True,
                        help_text=f"The firm's realtime host, default {DEFAULT_RTC_URL}"),
    )

    def __init__(self, account: AccountData) -> None:
        super().__init__(account)
        self._cursor: int | None = None
        self._unread: list[Unreadable] = []

    # --- credentials -----------------------------------------------------------------------
    @classmethod
    def credentials_clean(cls, values: dict[str, str]) -> dict[str, str]:
        values = {k: v.strip() for k, v in values.items() if isinstance(v, str)}
        cleaned = super().credentials_clean(values)
        for name, default in (("api_url", DEFAULT_API_URL), ("rtc_url", DEFAULT_RTC_URL)):
            url = cleaned.get(name, default).rstrip("/")
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{name}: not an http(s) URL: {url!r}")
            if name == "api_url" and url.endswith("/api"):
                url = url[:-4]  # the endpoints' paths carry /api themselves
            if name == "rtc_url" and url.endswith("/hubs/user"):
                url = url[:-10]
            cleaned[name] = url
        return cleaned

    def _credentials(self) -> dict[str, str]:
        """The login, only where its secrets were entered for its addresses (the base's
        `credentials_read`): every request's address comes from here."""
        return self.credentials_read()

    @property
    def _api_url(self) -> str:
        return self._credentials()["api_url"]

    @classmethod
    def external_id_clean(cls, value: str) -> str:
        """The venue's account id is a number: caught in the admin, not at the first order."""
        value = value.strip()
        if not value.isdigit():
            raise ValueError(
                f"the ProjectX account id is a whole number (as Account/search lists it; "
                f"'test connection' shows it), not {value!r}")
        return value

    def _account_id(self) -> int:
        external = str(self.account.external_id or "").strip()
        try:
            return int(external)
        except ValueError:
            raise PermanentBrokerError(
                f"account {self.account.name}: external id {external!r} is not a ProjectX "
                "account id (a whole number, as Account/search lists it)") from None

    # --- HTTP ------------------------------------------------------------------------------
    def _post(self, path: str, body: Mapping[str, Any], *, token: str | None,
              sending_order: bool = False) -> dict[str, Any]:
        """One request; returns the JSON answer of an HTTP 200, raises what the rest means.

        `sending_order`: a failure after the request may have left is an unknown
        outcome, not a plain transient error. A 401 raises `_Unauthorized`.
        """
        url = f"{self._api_url}{path}"
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = http_client().post(url, json=dict(body), headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise TransientBrokerError(f"ProjectX {path}: unreachable ({type(exc).__name__})"
                                       ) from None
        except httpx.TransportError as exc:
            message = f"ProjectX {path}: no answer ({type(exc).__name__})"
            raise (OrderOutcomeUnknown(message) if sending_order
                   else TransientBrokerError(message)) from None
        return self._answer(path, response, sending_order=sending_order)

    @staticmethod
    def _answer(path: str, response: httpx.Response, *, sending_order: bool) -> dict[str, Any]:
        status = response.status_code
        if status == 401:
            raise _Unauthorized(f"ProjectX {path}: the session token was refused (HTTP 401)")
        if status == 429:
            retry = response.headers.get("Retry-After", "")
            raise TransientBrokerError(
                f"ProjectX {path}: rate limited (HTTP 429)",
                retry_after=float(retry) if retry.replace(".", "", 1).isdigit() else None)
        if status >= 500:
            # The Gateway does not say that a 5xx means nothing ran: on an order, it may
            # have executed before the error (project-x-py calls it an uncertain
            # submission too). The copier looks the tag up before anything else.
            message = f"ProjectX {path}: HTTP {status}"
            raise (OrderOutcomeUnknown(f"{message} after the order was sent: it may have "
                                       "executed") if sending_order
                   else TransientBrokerError(message))
        if status != 200:
            # The status and its name, never the body: whatever answered may not be the
            # venue, and its page is not for the admin to read through the copier.
            raise PermanentBrokerError(
                f"ProjectX {path}: HTTP {status} {status_phrase(status)}".strip())
        try:
            data = response.json()
        except ValueError:
            message = f"ProjectX {path}: the answer is not JSON"
            raise (OrderOutcomeUnknown(message) if sending_order
                   else TransientBrokerError(message)) from None
        if not isinstance(data, dict):
            message = f"ProjectX {path}: unexpected answer {type(data).__name__}"
            raise (OrderOutcomeUnknown(message) if sending_order
                   else TransientBrokerError(message))
        return data

    def _call(self, path: str, body: Mapping[str, Any], *, token: str | None = None,
              sending_order: bool = False) -> dict[str, Any]:
        """A request with the account's session: the given token, else the stored one,
        read again once from the database when the venue refuses it (renewed meanwhile).

        A 401 is the Gateway refusing the token itself (expired, revoked by a key reset
        or a session limit): a stored one it refuses is dropped, so that the owning
        listener logs in again at once rather than at the token's expiry, up to a day
        later. The request did not run: the caller's error is a plain transient one.
        """
        if token is not None:  # the caller's own token (the stream's): the caller drops it
            try:
                return self._post(path, body, token=token, sending_order=sending_order)
            except _Unauthorized as exc:
                raise SessionRefused(exc.message) from None
        session = self._session(fresh=False)
        try:
            return self._post(path, body, token=session.token, sending_order=sending_order)
        except _Unauthorized:
            renewed = self._session(fresh=True)
            if renewed.token == session.token:
                raise self._session_refused(path, session) from None
        try:  # a 401 means the request was not processed: sending it again is safe
            return self._post(path, body, token=renewed.token, sending_order=sending_order)
        except _Unauthorized:
            raise self._session_refused(path, renewed) from None

    def _session_refused(self, path: str, session: Session) -> SessionRefused:
        from brokers.sessions import session_drop

        dropped = session_drop(self.account.pk, token=session.token)
        log.warning("ProjectX account %s: the venue refused its session (HTTP 401) before "
                    "its expiry; %s", self.account.name,
                    "dropped for the listener to log in again" if dropped
                    else "the listener has replaced it already")
        return SessionRefused(f"ProjectX {path}: the session was refused (HTTP 401); the "
                              "listener logs in again")

    def _session(self, *, fresh: bool) -> Session:
        from brokers.sessions import session_load

        session = self.session_fits(session_load(self.account.pk, fresh=fresh))
        if session is None:
            raise TransientBrokerError("no session: the listener has not logged in yet")
        return session

    @staticmethod
    def _ok(path: str, data: Mapping[str, Any]) -> None:
        """A read's success:false (account not found...) is the account's problem, not ours."""
        if data.get("success") is False:
            raise PermanentBrokerError(
                f"ProjectX {path}: errorCode {data.get('errorCode')} "
                f"{venue_text(data.get('errorMessage'))}".strip())

    # --- sessions ----------------------------------------------------------------------------
    def session_obtain(self, current: Session | None) -> Session | None:
        """Keep a good session, renew one that is running out, log in otherwise.

        Judged on the copier's clock, as the listener that asks and `session_load` judge."""
        now = clock.now()
        current = self.session_fits(current)  # obtained at other addresses: never sent here
        if current is not None and current.expires_at - now > RENEW_BEFORE:
            return current
        if current is not None and current.expires_at > now:
            renewed = self._renew(current)
            if renewed is not None:
                return renewed
        return self._login()

    def _login(self) -> Session:
        creds = self._credentials()
        data = self._post("/api/Auth/loginKey",
                          {"userName": creds["username"], "apiKey": creds["api_key"]}, token=None)
        token = data.get("token")
        if data.get("success") is not True or not isinstance(token, str) or not token:
            code = data.get("errorCode")
            name = LOGIN_ERRORS.get(code, "refused") if isinstance(code, int) else "refused"
            message = f"ProjectX login of {creds['username']!r} refused: {name} (errorCode {code})"
            if code in LOGIN_TRANSIENT:
                raise TransientBrokerError(message)
            raise PermanentBrokerError(message)
        return self.session_bind(Session(token=token, expires_at=token_expiry(token)))

    def _renew(self, current: Session) -> Session | None:
        """Auth/validate's new token; None when the venue no longer takes the current one."""
        try:
            data = self._post("/api/Auth/validate", {}, token=current.token)
        except _Unauthorized:
            return None
        token = data.get("newToken")
        if data.get("success") is not True or not isinstance(token, str) or not token:
            return None
        return Session(token=token, expires_at=token_expiry(token), data=current.data)

    def connection_test(self) -> str:
        session = self._login()
        account_id = self._account_id()
        data = self._post("/api/Account/search", {"onlyActiveAccounts": True},
                          token=session.token)
        self._ok("/api/Account/search", data)
        accounts = {a.get("id"): a for a in data.get("accounts") or [] if isinstance(a, dict)}
        if account_id not in accounts:
            listed = ", ".join(f"{i} ({venue_text(a.get('name'), 40)})"
                               for i, a in list(accounts.items())[:10]) or "none"
            raise PermanentBrokerError(
                f"ProjectX: logged in, but account {account_id} is not among this login's "
                f"active accounts: {listed}")
        held, unread = self._positions_read(account_id, token=session.token)
        shown = ", ".join(f"{s} {q:+d}" for s, q in sorted(held.items())) or "flat"
        shown += "".join(f"; {u.reason}" for u in unread)
        name = venue_text(accounts[account_id].get("name"), 40)
        return (f"{self.label}: logged in; account {account_id} ({name}) "
                f"can trade: {accounts[account_id].get('canTrade')}; positions: {shown}")

    # --- contracts -----------------------------------------------------------------------
    def contract_id(self, symbol: str, *, token: str | None = None) -> str:
        api = self._api_url
        with _contracts_lock:
            known = _contract_ids.get((api, symbol))
        if known is not None:
            return known
        # The exact name first; then its root (ESZ6 -> ES), as some searches match roots only.
        for text in dict.fromkeys((symbol, symbol[:-2] if len(symbol) > 3 else symbol)):
            data = self._call("/api/Contract/search", {"searchText": text, "live": False},
                              token=token)
            self._ok("/api/Contract/search", data)
            for contract in data.get("contracts") or []:
                if isinstance(contract, dict) and contract.get("name") == symbol:
                    _contract_learn(api, str(contract["id"]), symbol)
                    return str(contract["id"])
        raise PermanentBrokerError(f"ProjectX: no contract named {symbol!r} (Contract/search)")

    def contract_name_known(self, contract_id: str) -> str | None:
        """The name if this process learned it already: no I/O, so the stream can skip a
        thread hop on every fill."""
        with _contracts_lock:
            return _contract_names.get((self._api_url, contract_id))

    def contract_name(self, contract_id: str, *, token: str | None = None) -> str:
        api = self._api_url
        known = self.contract_name_known(contract_id)
        if known is not None:
            return known
        data = self._call("/api/Contract/searchById", {"contractId": contract_id}, token=token)
        contract = data.get("contract")
        if data.get("success") is False or not isinstance(contract, dict):
            raise UnknownContract(f"ProjectX: unknown contract id {contract_id!r}")
        _contract_learn(api, contract_id, str(contract["name"]))
        return str(contract["name"])

    # --- orders ----------------------------------------------------------------------------
    def connect(self) -> None:
        """Nothing to open here: the listener's stream is the connection."""

    def disconnect(self) -> None:
        """The HTTP pool is the process's; the session is the listener's."""

    def place_order(self, request: OrderRequest) -> OrderResult:
        if request.qty <= 0:
            raise PermanentBrokerError(f"ProjectX: invalid quantity {request.qty}")
        account_id = self._account_id()
        body = {"accountId": account_id, "contractId": self.contract_id(request.symbol),
                "type": 2, "side": 0 if request.side == Side.BUY else 1, "size": request.qty,
                "customTag": request.client_order_id, "limitPrice": None, "stopPrice": None,
                "trailPrice": None}
        data = self._call("/api/Order/place", body, sending_order=True)
        acknowledged_at = clock.now()
        order_id = data.get("orderId")
        if data.get("success") is True and isinstance(order_id, int):
            return dataclasses.replace(self._placed(request, order_id),
                                       acknowledged_at=acknowledged_at)
        if data.get("success") is True:
            raise OrderOutcomeUnknown("ProjectX Order/place: success without an order id")
        return self._refused(request, data)

    def _placed(self, request: OrderRequest, order_id: int) -> OrderResult:
        """The order as the venue has it a moment after placing (see the module docstring)."""
        order: dict[str, Any] | None = None
        for attempt in range(PARTIAL_RECHECKS):
            try:
                order = self._order_by_id(order_id)
            except TransientBrokerError as exc:
                log.info("ProjectX order %s (%s) placed; reading it back failed: %s",
                         order_id, request.client_order_id, exc.message)
                order = None
                break
            partial = (order is not None and ORDER_STATUS.get(order.get("status")) == "open"
                       and _filled_of(order) > 0)
            if not partial or attempt == PARTIAL_RECHECKS - 1:
                break
            time.sleep(PARTIAL_RECHECK_WAIT)
        if order is None:
            return OrderResult(request.client_order_id, str(order_id), OrderStatus.ACCEPTED, 0,
                               "placed; its fill comes on the stream", request.symbol,
                               request.side, request.qty)
        result = self._result(order, request.symbol, filled=None)
        if result.status == "accepted":  # its fills count it as they come (module docstring)
            result = dataclasses.replace(result, filled_qty=0, message=(
                f"{result.message} so far; its fills come on the stream"))
        return result

    def _refused(self, request: OrderRequest, data: Mapping[str, Any]) -> OrderResult:
        """success:false. The tag may be taken by an earlier placement of the same order
        (a resend): then the venue's order under it is the answer, never a second order."""
        code = data.get("errorCode")
        name, permanent = (PLACE_ERRORS.get(code, ("unknown errorCode", False))
                           if isinstance(code, int) else ("no errorCode", False))
        message = (f"ProjectX refused {request.client_order_id}: {name} (errorCode {code})"
                   f" {venue_text(data.get('errorMessage'))}").strip()
        try:
            earlier = self.find_order(request.client_order_id)
        except TransientBrokerError as exc:
            raise TransientBrokerError(
                f"{message}; whether an earlier order holds the tag could not be checked: "
                f"{exc.message}") from None
        if earlier is not None and earlier.broker_order_id != str(data.get("orderId")):
            if earlier.status == "rejected":
                raise PermanentBrokerError(earlier.message or message)
            return earlier
        raise (PermanentBrokerError(message) if permanent else TransientBrokerError(message))

    def _order_by_id(self, order_id: int, *, token: str | None = None) -> dict[str, Any] | None:
        data = self._call("/api/Order/searchById",
                          {"accountId": self._account_id(), "orderId": order_id}, token=token)
        order = data.get("order")
        return order if data.get("success") is not False and isinstance(order, dict) else None

    def _result(self, order: Mapping[str, Any], symbol: str | None,
                filled: int | None) -> OrderResult:
        """An order of the venue's as the copier reads it; `filled`: the sum of its trades
        (else the order's own `fillVolume`)."""
        status = ORDER_STATUS.get(order.get("status"), "unknown")
        size = int(order.get("size") or 0)
        outcome, done = _settlement(SETTLED.get(status, OrderStatus.ACCEPTED), size,
                                    _filled_of(order) if filled is None else filled)
        return OrderResult(
            client_order_id=str(order.get("customTag") or ""),
            broker_order_id=str(order.get("id")), status=outcome, filled_qty=done,
            message="" if outcome == "filled" else
            f"ProjectX: order {order.get('id')} {status}, filled {done} of {size}",
            symbol=symbol, side=_side(order.get("side")), qty=size)

    def _order_by_tag(self, account_id: int, client_order_id: str) -> dict[str, Any] | None:
        data = self._call("/api/Order/search", {"accountId": account_id,
                                                "startTimestamp": _since(ORDER_LOOKBACK)})
        self._ok("/api/Order/search", data)
        return next((o for o in data.get("orders") or []
                     if isinstance(o, dict) and o.get("customTag") == client_order_id), None)

    def _order_read(self, account_id: int, order: Mapping[str, Any]) -> OrderResult:
        """The order with what its trades filled (the trades are the venue's record)."""
        trades = self._call("/api/Trade/search", {"accountId": account_id,
                                                  "startTimestamp": _since(ORDER_LOOKBACK)})
        self._ok("/api/Trade/search", trades)
        filled = sum(int(t.get("size") or 0) for t in trades.get("trades") or []
                     if isinstance(t, dict) and t.get("orderId") == order.get("id")
                     and not t.get("voided"))
        symbol = self.contract_name(str(order.get("contractId")))
        return self._result(order, symbol, filled=filled)

    def find_order(self, client_order_id: str) -> OrderResult | None:
        account_id = self._account_id()
        order = self._order_by_tag(account_id, client_order_id)
        return None if order is None else self._order_read(account_id, order)

    def order_cancel(self, client_order_id: str) -> OrderResult | None:
        """Order/search by customTag, Order/cancel while it is open, then the order read
        again: a cancel the venue refuses because the order settled first answers what it
        settled as."""
        account_id = self._account_id()
        order = self._order_by_tag(account_id, client_order_id)
        if order is None:
            return None
        if ORDER_STATUS.get(order.get("status")) in ("open", "pending"):
            answer = self._call("/api/Order/cancel", {"accountId": account_id,
                                                      "orderId": order.get("id")})
            order = self._order_by_tag(account_id, client_order_id) or order
            if answer.get("success") is False and ORDER_STATUS.get(order.get("status")) in (
                    "open", "pending"):
                raise TransientBrokerError(
                    f"ProjectX: cancelling {client_order_id} refused: errorCode "
                    f"{answer.get('errorCode')} {venue_text(answer.get('errorMessage'))}".strip())
        return self._order_read(account_id, order)

    def flatten(self, symbol: str) -> None:
        data = self._call("/api/Position/closeContract",
                          {"accountId": self._account_id(),
                           "contractId": self.contract_id(symbol)}, sending_order=True)
        if data.get("success") is False:
            raise PermanentBrokerError(
                f"ProjectX: closing {symbol} refused: errorCode {data.get('errorCode')} "
                f"{venue_text(data.get('errorMessage'))}".strip())

    def orders_cancel_all(self) -> int:
        """Order/searchOpen, then Order/cancel for each; every one is tried before a failure
        is raised (one order filled meanwhile must not leave the others resting)."""
        account_id = self._account_id()
        data = self._call("/api/Order/searchOpen", {"accountId": account_id})
        self._ok("/api/Order/searchOpen", data)
        cancelled, failures = 0, []
        for order in data.get("orders") or []:
            if not isinstance(order, dict) or not isinstance(order.get("id"), int):
                continue
            try:
                answer = self._call("/api/Order/cancel",
                                    {"accountId": account_id, "orderId": order["id"]})
                if answer.get("success") is False:
                    raise PermanentBrokerError(
                        f"ProjectX: cancelling order {order['id']} refused: errorCode "
                        f"{answer.get('errorCode')} "
                        f"{venue_text(answer.get('errorMessage'))}".strip())
            except BrokerError as exc:
                failures.append(exc)
                continue
            cancelled += 1
        if failures:
            raise orders_cancel_error("ProjectX", cancelled, failures)
        return cancelled

    # --- positions -------------------------------------------------------------------------
    def positions(self) -> dict[str, int]:
        """The positions, and the newest trade they include (trades read before and after
        until they stand still: a fill in between would be counted twice or never)."""
        account_id = self._account_id()
        before = self._newest_trade(account_id)
        for _ in range(CURSOR_READS):
            held, unread = self._positions_read(account_id)
            after = self._newest_trade(account_id)
            if after == before:
                self._cursor, self._unread = after, unread
                return held
            before = after
        raise TransientBrokerError("ProjectX: the account kept trading while its positions "
                                   "were read; read again later")

    def _positions_read(self, account_id: int, *, token: str | None = None
                        ) -> tuple[dict[str, int], list[Unreadable]]:
        """The open positions by contract name, and those that could not be read (a
        contract the venue's look-up does not know): left out, never failing the read."""
        data = self._call("/api/Position/searchOpen", {"accountId": account_id}, token=token)
        self._ok("/api/Position/searchOpen", data)
        held: dict[str, int] = {}
        unread: list[Unreadable] = []
        for position in data.get("positions") or []:
            if isinstance(position, dict) and position.get("size") == 0:
                continue  # flat: whatever its contract
            name: str | None = None
            try:  # the name first: a garbled size of a contract it names keeps its name
                name = self.contract_name(str(position.get("contractId")), token=token)
                qty = _position_signed(position)
            except RECORD_ERRORS as exc:
                unread.append(unreadable("position", position, exc, label="ProjectX",
                                         symbol=name))
                continue
            if qty:
                held[name] = held.get(name, 0) + qty
        return {name: qty for name, qty in held.items() if qty}, unread

    def positions_unread(self) -> list[Unreadable]:
        return list(self._unread)

    def _newest_trade(self, account_id: int) -> int:
        data = self._call("/api/Trade/search", {"accountId": account_id,
                                                "startTimestamp": _since(CURSOR_LOOKBACK)})
        self._ok("/api/Trade/search", data)
        ids = [int(t["id"]) for t in data.get("trades") or [] if isinstance(t, dict)]
        return max(ids, default=0)

    def fills_cursor(self) -> int | None:
        return self._cursor

    def realized_pnl(self, since: dt.datetime) -> Decimal:
        """Trade/search from `since`: the sum of each trade's `profitAndLoss` (null on a
        half-turn, an opening trade) less every trade's `fees`; voided trades left out."""
        data = self._call("/api/Trade/search", {
            "accountId": self._account_id(),
            "startTimestamp": since.astimezone(dt.UTC).isoformat()})
        self._ok("/api/Trade/search", data)
        total = Decimal(0)
        for trade in data.get("trades") or []:
            if not isinstance(trade, dict) or trade.get("voided"):
                continue
            pnl, fees = trade.get("profitAndLoss"), trade.get("fees")
            if pnl is not None:
                total += _money(pnl, trade)
            if fees is not None:
                total -= _money(fees, trade)
        return total.quantize(Decimal("0.01"))

    def stream(self, session: Session | None) -> BrokerStream:
        return ProjectXStream(self, session)


async def _symbol_or_id(name: Callable[[str], Awaitable[str]], contract_id: str) -> str:
    """An order update's contract by name, else by the venue's id: the copier settles the
    order by its own row's symbol, and a contract the look-up does not know must not stop
    the stream (a refused name is logged, the update still said)."""
    try:
        return await name(contract_id)
    except PermanentBrokerError as exc:
        log.warning("ProjectX: order update on contract %s: %s", contract_id, exc.message)
        return contract_id


class _Unauthorized(TransientBrokerError):
    """HTTP 401: the token is refused (expired, renewed elsewhere, revoked)."""


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
            if not isinstance(data, dict) or data.get("accountId") not in (None,
                                                                          self._account_id):
                continue
            if target == "GatewayUserOrder" and isinstance(data.get("id"), int):
                self._tags[data["id"]] = data.get("customTag")
                update = await self._order_update(data)
                if update is not None:
                    events.append(update)
            elif target == "GatewayUserTrade":
                fill = await self._trade_event(data)
                if fill is not None:
                    events.append(fill)
            elif target == "GatewayUserPosition":
                events.append(await self._position_event(data))
        return events

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
                                  _position_signed(data))
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
                    side=_side(data.get("side")), qty=size,
                    time=_when(data.get("creationTimestamp")), client_order_id=tag or None,
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
        status, filled = _settlement(status, size, _filled_of(data))
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
