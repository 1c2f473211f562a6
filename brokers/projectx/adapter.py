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
(`copier.services.stream_events`): the fills of the part already filled come on the stream
too, and counting that part here as well would count it twice (a look-up, which is
not followed by those fills, says what filled so far). A partly filled order is read
again for a moment first, since a market order completes within milliseconds.
Cancelled or expired (status 3 / 4) -> "cancelled" with what filled before, never
"filled": the rest is still to be done.

Symbols: the copier's symbol is the contract name (`ESZ6`); the Gateway's id
(`CON.F.US.EP.Z26`) is looked up and cached per process in both directions, and with it the
contract's money per point (`tickValue / tickSize`) where the venue states it.

Equity (`equity_read`): the Gateway keeps no drawdown number and no open P&L of its own on
REST; Account/search gives the `balance` and `canTrade`, and the open P&L is worked out
from Position/searchOpen (`averagePrice`, `size`, `type`) at each contract's last price.
That price is the close of the newest daily bar of History/retrieveBars (the bar still
forming included), not the market hub's quotes: the hub is a second socket that answers 401
without a data entitlement, and a guard reading every few seconds needs one price, not a
feed. A position without a price or a point value makes the whole reading fail, never a
reading that leaves it out.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, ClassVar

import httpx

from brokers import http
from brokers.base import (
    RECORD_ERRORS,
    AccountData,
    BrokerAdapter,
    BrokerError,
    BrokerStream,
    CredentialField,
    Equity,
    OrderOutcomeUnknown,
    OrderRequest,
    OrderResult,
    PermanentBrokerError,
    Session,
    SessionRefused,
    TransientBrokerError,
    UnknownContract,
    Unreadable,
    orders_cancel_error,
    unreadable,
    venue_text,
)
from brokers.contracts import ContractBook
from brokers.projectx import credentials
from brokers.projectx.credentials import LOGIN_ERRORS, LOGIN_TRANSIENT, token_expiry
from brokers.projectx.records import (
    ORDER_STATUS,
    PLACE_ERRORS,
    SETTLED,
    amount,
    filled_of,
    money,
    position_signed,
    settlement,
    side_of,
    since,
)
from brokers.projectx.stream import ProjectXStream
from core import clock
from core.contracts import point_value
from core.trading import OrderStatus, Side

log = logging.getLogger(__name__)

RENEW_BEFORE = dt.timedelta(hours=1)  # renew a session with less than this left
ORDER_LOOKBACK = dt.timedelta(days=7)  # how far back a client order id is looked up
CURSOR_LOOKBACK = dt.timedelta(days=2)
CURSOR_READS = 5  # trades / positions / trades, until the trades stand still
EQUITY_READS = 3  # positions / account / positions, until the positions stand still
# How far back a contract's last price is looked for: a market closed for a weekend or a
# holiday is valued at its last trade before it.
PRICE_LOOKBACK = dt.timedelta(days=7)
BAR_DAY = 4  # History/retrieveBars' unit: 1 second, 2 minute, 3 hour, 4 day, 5 week, 6 month
EQUITY_SOURCE = "ProjectX: balance, positions at last bar"  # fits the guard's 40 characters
CENT = Decimal("0.01")
PARTIAL_RECHECKS = 3
PARTIAL_RECHECK_WAIT = 0.1

# This process's keep-alive pool to the Gateway, and the contracts it learned.
POOL = http.Pool(httpx.Limits(max_connections=64, max_keepalive_connections=32,
                              keepalive_expiry=30.0))
CONTRACTS: ContractBook[str] = ContractBook()
# (base URL, contract id) -> money per point per contract as the venue states it (its tick
# value over its tick size); None: the venue did not state it. Written whole, read whole.
POINT_VALUES: dict[tuple[str, str], Decimal | None] = {}
# The statuses the Gateway rate-limits with; without a Retry-After, no wait is known.
RATE_LIMITS: dict[int, float | None] = {429: None}


class ProjectXBroker(BrokerAdapter):
    kind = "projectx"
    label = "ProjectX Gateway (TopstepX, prop firms)"
    credential_fields: ClassVar[tuple[CredentialField, ...]] = credentials.FIELDS

    def __init__(self, account: AccountData) -> None:
        super().__init__(account)
        self._cursor: int | None = None
        self._unread: list[Unreadable] = []

    # --- credentials -----------------------------------------------------------------------
    @classmethod
    def credentials_clean(cls, values: dict[str, str]) -> dict[str, str]:
        values = {k: v.strip() for k, v in values.items() if isinstance(v, str)}
        return credentials.urls_clean(super().credentials_clean(values))

    def _credentials(self) -> dict[str, str]:
        """The login, only where its secrets were entered for its addresses (the base's
        `credentials_read`): every request's address comes from here."""
        return self.credentials_read()

    @property
    def _api_url(self) -> str:
        return self._credentials()["api_url"]

    @classmethod
    def external_id_clean(cls, value: str) -> str:
        return credentials.external_id_clean(value)

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
        """One request; returns the JSON answer of an HTTP 2xx, raises what the rest means
        (`brokers.http`: a failure after a placement may have left is an unknown outcome,
        a 401 is `http.Unauthorized`)."""
        where = f"ProjectX {path}"
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        response = http.request(POOL.client(), "POST", f"{self._api_url}{path}", where=where,
                                sending_order=sending_order, json=dict(body), headers=headers)
        http.status_check(response, where=where, sending_order=sending_order,
                          rate_limits=RATE_LIMITS)
        data = http.json_of(response, where=where, sending_order=sending_order)
        if not isinstance(data, dict):
            raise http.lost(f"{where}: unexpected answer {type(data).__name__}",
                            sending_order=sending_order)
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
            except http.Unauthorized as exc:
                raise SessionRefused(exc.message) from None
        session = self._session(fresh=False)
        try:
            return self._post(path, body, token=session.token, sending_order=sending_order)
        except http.Unauthorized:
            renewed = self._session(fresh=True)
            if renewed.token == session.token:
                raise self._session_refused(path, session) from None
        try:  # a 401 means the request was not processed: sending it again is safe
            return self._post(path, body, token=renewed.token, sending_order=sending_order)
        except http.Unauthorized:
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
        except http.Unauthorized:
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
        known = CONTRACTS.id(api, symbol)
        if known is not None:
            return known
        # The exact name first; then its root (ESZ6 -> ES), as some searches match roots only.
        for text in dict.fromkeys((symbol, symbol[:-2] if len(symbol) > 3 else symbol)):
            data = self._call("/api/Contract/search", {"searchText": text, "live": False},
                              token=token)
            self._ok("/api/Contract/search", data)
            for contract in data.get("contracts") or []:
                if isinstance(contract, dict) and contract.get("name") == symbol:
                    CONTRACTS.learn(api, str(contract["id"]), symbol)
                    _point_value_learn(api, contract)
                    return str(contract["id"])
        raise PermanentBrokerError(f"ProjectX: no contract named {symbol!r} (Contract/search)")

    def contract_name_known(self, contract_id: str) -> str | None:
        """The name if this process learned it already: no I/O, so the stream can skip a
        thread hop on every fill."""
        return CONTRACTS.name(self._api_url, contract_id)

    def contract_name(self, contract_id: str, *, token: str | None = None) -> str:
        api = self._api_url
        known = self.contract_name_known(contract_id)
        if known is not None:
            return known
        data = self._call("/api/Contract/searchById", {"contractId": contract_id}, token=token)
        contract = data.get("contract")
        if data.get("success") is False or not isinstance(contract, dict):
            raise UnknownContract(f"ProjectX: unknown contract id {contract_id!r}")
        CONTRACTS.learn(api, contract_id, str(contract["name"]))
        _point_value_learn(api, contract)
        return str(contract["name"])

    def _point_value(self, contract_id: str, name: str) -> Decimal | None:
        """Money per point of one contract: the venue's own (its tick value over its tick
        size, learned with its name or asked for once), else the root's known one."""
        api = self._api_url
        if (api, contract_id) not in POINT_VALUES:
            data = self._call("/api/Contract/searchById", {"contractId": contract_id})
            contract = data.get("contract")
            if data.get("success") is not False and isinstance(contract, dict):
                _point_value_learn(api, contract)
        stated = POINT_VALUES.get((api, contract_id))
        return stated if stated is not None else point_value(name)

    # --- orders ----------------------------------------------------------------------------
    def connect(self) -> None:
        """Nothing to open here: the listener's stream is the connection."""

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
                       and filled_of(order) > 0)
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
        outcome, done = settlement(SETTLED.get(status, OrderStatus.ACCEPTED), size,
                                    filled_of(order) if filled is None else filled)
        return OrderResult(
            client_order_id=str(order.get("customTag") or ""),
            broker_order_id=str(order.get("id")), status=outcome, filled_qty=done,
            message="" if outcome == "filled" else
            f"ProjectX: order {order.get('id')} {status}, filled {done} of {size}",
            symbol=symbol, side=side_of(order.get("side")), qty=size)

    def _order_by_tag(self, account_id: int, client_order_id: str) -> dict[str, Any] | None:
        data = self._call("/api/Order/search", {"accountId": account_id,
                                                "startTimestamp": since(ORDER_LOOKBACK)})
        self._ok("/api/Order/search", data)
        return next((o for o in data.get("orders") or []
                     if isinstance(o, dict) and o.get("customTag") == client_order_id), None)

    def _order_read(self, account_id: int, order: Mapping[str, Any]) -> OrderResult:
        """The order with what its trades filled (the trades are the venue's record)."""
        trades = self._call("/api/Trade/search", {"accountId": account_id,
                                                  "startTimestamp": since(ORDER_LOOKBACK)})
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
                qty = position_signed(position)
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
                                                "startTimestamp": since(CURSOR_LOOKBACK)})
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
                total += money(pnl, trade)
            if fees is not None:
                total -= money(fees, trade)
        return total.quantize(Decimal("0.01"))

    def equity_read(self) -> Equity:
        """Account/search's `balance` and `canTrade`, and the open positions valued at their
        contracts' last prices (see the module docstring). The positions are read before
        and after the account until they stand still: a trade in between would count its
        P&L twice (in the balance and the position) or never."""
        account_id = self._account_id()
        before = self._positions_open(account_id)
        for _ in range(EQUITY_READS):
            account = self._account_row(account_id)
            after = self._positions_open(account_id)
            if after == before:
                break
            before = after
        else:
            raise TransientBrokerError("ProjectX: the account kept trading while its equity "
                                       "was read; read again later")
        balance = amount(account.get("balance"), f"account {account_id}'s balance")
        open_pnl, contracts = Decimal(0), 0
        for position in after:
            pnl, qty = self._position_valued(position)
            open_pnl += pnl
            contracts += qty
        can = account.get("canTrade")
        can_trade = can if isinstance(can, bool) else None
        return Equity(balance=balance.quantize(CENT), open_pnl=open_pnl.quantize(CENT),
                      contracts=contracts, source=EQUITY_SOURCE, can_trade=can_trade,
                      why="canTrade false: the firm stopped the account" if can is False
                      else "")

    def _account_row(self, account_id: int) -> dict[str, Any]:
        """The account as Account/search lists it, those that may not trade included: a
        firm's stop is what the guard must see."""
        data = self._call("/api/Account/search", {"onlyActiveAccounts": False})
        self._ok("/api/Account/search", data)
        for account in data.get("accounts") or []:
            if isinstance(account, dict) and account.get("id") == account_id:
                return account
        raise PermanentBrokerError(f"ProjectX: account {account_id} is not among this "
                                   "login's accounts (Account/search)")

    def _positions_open(self, account_id: int) -> list[dict[str, Any]]:
        """Position/searchOpen's records that hold something, in the order of their
        contract ids (so that two reads compare equal when nothing moved)."""
        data = self._call("/api/Position/searchOpen", {"accountId": account_id})
        self._ok("/api/Position/searchOpen", data)
        held = [p for p in data.get("positions") or []
                if not (isinstance(p, dict) and p.get("size") == 0)]
        return sorted(held, key=lambda p: str(p.get("contractId")) if isinstance(p, dict)
                      else repr(p))

    def _position_valued(self, position: object) -> tuple[Decimal, int]:
        """One open position's P&L at its contract's last price, and its contracts."""
        record = position if isinstance(position, dict) else {}
        contract_id = str(record.get("contractId"))
        try:
            name = self.contract_name(contract_id)
        except UnknownContract as exc:
            raise PermanentBrokerError(f"ProjectX: the open P&L of contract {contract_id!r} "
                                       f"cannot be valued: {exc.message}") from None

        def unvalued(why: str) -> PermanentBrokerError:
            return PermanentBrokerError(f"ProjectX: the open P&L of {name} cannot be "
                                        f"valued: {why}")

        try:
            qty = position_signed(record)
        except ValueError as exc:
            raise unvalued(str(exc)) from None
        average = amount(record.get("averagePrice"), f"the average price of {name}")
        value = self._point_value(contract_id, name)
        if value is None:
            raise unvalued("no point value is known for it (the venue states no tick value)")
        price = self._last_price(contract_id)
        if price is None:
            raise unvalued(f"no price in the last {PRICE_LOOKBACK.days} days "
                           "(History/retrieveBars has no bar)")
        return (price - average) * qty * value, abs(qty)

    def _last_price(self, contract_id: str) -> Decimal | None:
        """The close of the contract's newest daily bar, the one still forming included;
        None when there is none. The bars' order is not documented: the newest is found by
        its time."""
        now = dt.datetime.now(dt.UTC)
        data = self._call("/api/History/retrieveBars", {
            "contractId": contract_id, "live": False,
            "startTime": (now - PRICE_LOOKBACK).isoformat(), "endTime": now.isoformat(),
            "unit": BAR_DAY, "unitNumber": 1, "limit": PRICE_LOOKBACK.days + 2,
            "includePartialBar": True})
        self._ok("/api/History/retrieveBars", data)
        bars: list[tuple[dt.datetime, Any]] = []
        for bar in data.get("bars") or []:
            try:
                at = dt.datetime.fromisoformat(str(bar["t"]))
            except (KeyError, TypeError, ValueError):
                raise PermanentBrokerError(f"ProjectX: a bar of {contract_id} has no time "
                                           f"the copier can read: {bar!r:.80}") from None
            bars.append((at if at.tzinfo else at.replace(tzinfo=dt.UTC), bar.get("c")))
        if not bars:
            return None
        _at, close = max(bars, key=lambda b: b[0])
        return amount(close, f"the last price (bar close) of {contract_id}")

    def stream(self, session: Session | None) -> BrokerStream:
        return ProjectXStream(self, session)


def _point_value_learn(api: str, contract: Mapping[str, Any]) -> None:
    """What a contract record says its point is worth (`tickValue / tickSize`), or that it
    does not say (None); a look-up answers it from then on."""
    try:
        size = amount(contract.get("tickSize"), "a tick size")
        value = amount(contract.get("tickValue"), "a tick value")
    except PermanentBrokerError:
        size = value = Decimal(0)
    POINT_VALUES[(api, str(contract.get("id")))] = (value / size if size > 0 and value > 0
                                                     else None)
