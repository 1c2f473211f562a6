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
`copier.services.stream_events`): the part filled before the answer comes on the stream too,
and counting it here as well would count it twice. A look-up (`find_order`), which is
not followed by those fills, says what filled so far. One the venue cancelled or let
expire (`ordStatus` Canceled / Expired, or Completed short of its quantity) is
"cancelled" with what filled before, never "filled": the rest is still to be done.

Penalty tickets (HTTP 200 `{"p-ticket","p-time","p-captcha"}`) are honoured, never looped
on: the request is refused locally until `p-time` has passed, then resent with the ticket.
A ticket with `p-captcha` cannot be cleared by a program: about an hour.

Equity (`equity_read`) is the venue's own valuation: the cash balance snapshot's `netLiq`
and `openPnL` (the balance is their difference, so the guard's equity is `netLiq`, the
number a firm on Tradovate trails), the contracts from /position/list, and the account's
`accountRiskStatus` for the firm's stop. The stream's `cashBalance` and `accountRiskStatus`
pushes only say that these changed (`AccountChanged`): the guard reads outside the listener,
so it asks REST, and its numbers have one source.

No drawdown line is read from the venue (`Equity.line` stays None), because Tradovate does
not publish one. Its `userAccountAutoLiq` (GET /userAccountAutoLiq/deps?masterid=<account
id>, /item?id=, /items?ids=, /ldeps?masterids=; partner.tradovate.com/api/rest-api-endpoints
/risks/user-account-auto-liq-dependents) holds the firm's auto-liquidation *rules*, the ones
a firm sets with /userAccountAutoLiq/update (.../prop-firm-management/risk-management
/post-trade-risk): `trailingMaxDrawdown` "$ Trailing Max Drawdown" is the drawdown's size,
`trailingMaxDrawdownLimit` "$ Trailing Max Drawdown Limit" is where the trail stops ("Stop
drawdown at a certain value" in Tradovate's older entity docs; public clients show it as,
e.g., start + $100, Apex's stop), and `trailingMaxDrawdownMode` is EOD or RealTime.
Neither number is the level the account is liquidated at now: that is the venue's own
peak less the size, capped at the limit, and the peak is not in the entity
(`accountRiskStatus.maxNetLiq` may be it, but nothing documents what it is). Public clients
differ on the limit (some show it as the liquidation level), which is the ambiguity the
guard must not act on; the rules it keeps itself (docs/rules.md#the-account-guard) are
these numbers, entered by a person.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
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
    TransientBrokerError,
    UnknownContract,
    Unreadable,
    orders_cancel_error,
    unreadable,
    venue_text,
)
from brokers.contracts import ContractBook
from brokers.tradovate import credentials
from brokers.tradovate.records import (
    CAPTCHA_WAIT,
    LABEL,
    WORKING_STATUSES,
    accounts_named,
    refusal,
    risk_standing,
    settlement,
    side_of,
    time_of,
    whole,
)
from brokers.tradovate.stream import TradovateStream
from core import clock
from core.trading import OrderStatus, Side

log = logging.getLogger(__name__)

# Renew while this much of the token is left; below it, renewing races the expiry.
RENEW_MARGIN = dt.timedelta(seconds=30)
FILLS_CURSOR_READS = 3
EQUITY_READS = 3  # positions / snapshot / positions, until the positions stand still
EQUITY_SOURCE = "Tradovate: cashBalance snapshot (netLiq)"  # the guard's 40 characters
CENT = Decimal("0.01")
# This process's keep-alive pool to the venue, and the contracts it learned (per host:
# demo and live number contracts alike, not equally).
POOL = http.Pool(httpx.Limits(max_keepalive_connections=32, keepalive_expiry=60))
CONTRACTS: ContractBook[int] = ContractBook()
# The statuses the venue rate-limits with, and its wait when no Retry-After is sent:
# 423 a minute, 429 (a lock-out) the documented hour.
RATE_LIMITS: dict[int, float | None] = {423: 60.0, 429: 3600.0}


class TradovateBroker(BrokerAdapter):
    kind = "tradovate"
    label = "Tradovate / NinjaTrader"
    credential_fields: ClassVar[tuple[CredentialField, ...]] = credentials.FIELDS

    def __init__(self, account: AccountData) -> None:
        super().__init__(account)
        self._lock = threading.Lock()
        self._tickets: dict[str, tuple[str | None, float]] = {}  # path -> (ticket, not before)
        self._cursor: int | None = None
        self._unread: list[Unreadable] = []

    # --- credentials ----------------------------------------------------------------------
    @classmethod
    def credentials_clean(cls, values: dict[str, str]) -> dict[str, str]:
        return credentials.check(super().credentials_clean(
            {k: str(v).strip() for k, v in values.items() if v is not None}))

    @classmethod
    def credential_addresses(cls, cleaned: Mapping[str, str]) -> tuple[str, ...]:
        return credentials.addresses(cleaned)

    def _creds(self) -> dict[str, str]:
        """The login, only where its secrets were entered for its addresses (the base's
        `credentials_read`): every request's address comes from here."""
        return self.credentials_read()

    def _urls(self) -> tuple[str, str]:
        return credentials.addresses(self._creds())

    @classmethod
    def external_id_clean(cls, value: str) -> str:
        return credentials.external_id_clean(value)

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
        """One request; the JSON answer of an HTTP 2xx, else what the rest means
        (`brokers.http`: a placement whose answer is lost or is a 5xx is
        `OrderOutcomeUnknown`, a 401 is `http.Unauthorized`), or a penalty ticket's wait."""
        where = f"{LABEL}: {path}"
        body = self._ticket_attach(path, body)
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = http.request(POOL.client(), method, self._urls()[0] + path, where=where,
                                sending_order=placing, json=body, params=dict(params or {}),
                                headers=headers)
        http.status_check(response, where=where, sending_order=placing,
                          rate_limits=RATE_LIMITS)
        answer = http.json_of(response, where=where, sending_order=placing)
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
        except http.Unauthorized:
            again = self._session(fresh=True)
            if again.token == used:
                raise TransientBrokerError(f"{LABEL}: {path}: the session was refused (401); "
                                           "the listener logs in again") from None
        try:
            return self._send(method, path, token=again.token, body=body, params=params,
                              placing=placing)
        except http.Unauthorized:
            raise TransientBrokerError(f"{LABEL}: {path}: the session was refused (401) "
                                       "twice") from None

    def session_obtain(self, current: Session | None) -> Session | None:
        """Renew while `current` is good (same session), else log in (a new one)."""
        current = self.session_fits(current)  # obtained at other addresses: never sent here
        if current is not None and current.expires_at - RENEW_MARGIN > clock.now():
            try:
                answer = self._send("GET", "/auth/renewaccesstoken", token=current.token)
            except http.Unauthorized:
                answer = None  # revoked (quota) or logged out: only a login helps
            if isinstance(answer, dict) and answer.get("accessToken"):
                log.info("%s: %s session renewed", self.account, LABEL)
                return Session(token=str(answer["accessToken"]),
                               expires_at=time_of(answer.get("expirationTime")),
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
        return (str(answer["accessToken"]), time_of(answer.get("expirationTime")),
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
        names = accounts_named(listed)
        raise PermanentBrokerError(f"{LABEL}: account {wanted} is not among this login's "
                                   f"accounts: {names}")

    # --- contracts --------------------------------------------------------------------------
    def contract_name_known(self, contract_id: int) -> str | None:
        """The name if this process learned it already: no I/O, so the stream can skip a
        thread hop on every fill."""
        return CONTRACTS.name(self._urls()[0], contract_id)

    def contract_name(self, contract_id: int, *, token: str | None = None) -> str:
        base = self._urls()[0]
        name = CONTRACTS.name(base, contract_id)
        if name is None:
            try:
                row = self._call("GET", "/contract/item", params={"id": contract_id},
                                 token=token)
            except PermanentBrokerError:
                row = None
            if not isinstance(row, dict) or not row.get("name"):
                raise UnknownContract(f"{LABEL}: unknown contract id {contract_id}")
            name = str(row["name"])
            CONTRACTS.learn(base, contract_id, name)
        return name

    def contract_id(self, name: str) -> int:
        base = self._urls()[0]
        found = CONTRACTS.id(base, name)
        if found is None:
            try:
                row = self._call("GET", "/contract/find", params={"name": name})
            except PermanentBrokerError:
                row = None
            if not isinstance(row, dict) or row.get("id") is None:
                raise PermanentBrokerError(f"{LABEL}: unknown contract {name!r}")
            found = int(row["id"])
            CONTRACTS.learn(base, found, name)
        return found

    # --- orders -----------------------------------------------------------------------------
    def connect(self) -> None:
        """Nothing to prepare: positions are read over REST with the listener's session."""

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
        failure = refusal(answer)
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
        outcome, filled = settlement(status, qty, filled)
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
            side=side_of(order.get("action")), qty=qty or None)

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
            failure = refusal(answer) if isinstance(answer, dict) else None
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
                name = self.contract_name(whole(row["contractId"], "contractId"), token=token)
                qty = whole(row["netPos"], "netPos")
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
        answer = self._cash_snapshot()
        value = answer.get("realizedPnL")
        try:
            amount = None if value is None or isinstance(value, bool) else Decimal(str(value))
        except InvalidOperation:
            amount = None
        if amount is None or not amount.is_finite():
            raise TransientBrokerError(
                f"{LABEL}: cash balance snapshot without a realised P&L: {value!r}")
        return amount.quantize(Decimal("0.01"))

    def _cash_snapshot(self) -> dict[str, Any]:
        answer = self._call("POST", "/cashBalance/getCashBalanceSnapshot",
                            body={"accountId": self._account_id()})
        if not isinstance(answer, dict):
            raise TransientBrokerError(f"{LABEL}: cash balance snapshot: unexpected answer")
        if answer.get("errorText"):
            raise PermanentBrokerError(
                f"{LABEL}: cash balance snapshot refused: {venue_text(answer['errorText'])}")
        return answer

    def equity_read(self) -> Equity:
        """The cash balance snapshot's `netLiq` and `openPnL`, the contracts held, and the
        firm's stop from `accountRiskStatus` (see the module docstring). The positions are
        read before and after the snapshot until they stand still, so the contracts are
        those the snapshot valued."""
        mine = self._account_id()
        before = self._contracts_held(mine)
        for _ in range(EQUITY_READS):
            snapshot = self._cash_snapshot()
            after = self._contracts_held(mine)
            if after == before:
                break
            before = after
        else:
            raise TransientBrokerError(f"{LABEL}: the account kept trading while its equity "
                                       "was read; read again later")
        net_liq, open_pnl = (self._snapshot_money(snapshot, f) for f in ("netLiq", "openPnL"))
        can_trade, why = self._risk_status(mine)
        return Equity(balance=(net_liq - open_pnl).quantize(CENT),
                      open_pnl=open_pnl.quantize(CENT),
                      contracts=sum(abs(q) for q in after.values()), source=EQUITY_SOURCE,
                      can_trade=can_trade, why=why)

    def _contracts_held(self, mine: int) -> dict[int, int]:
        """The account's net position per contract id (no names: only counted here)."""
        rows = self._call("GET", "/position/list")
        held: dict[int, int] = {}
        for row in rows if isinstance(rows, list) else []:
            if not isinstance(row, dict) or row.get("accountId") != mine or not row.get("netPos"):
                continue
            try:
                held[whole(row["contractId"], "contractId")] = whole(row["netPos"], "netPos")
            except ValueError as exc:
                raise PermanentBrokerError(f"{exc}: the account's contracts cannot be counted"
                                           ) from None
        return held

    @staticmethod
    def _snapshot_money(snapshot: Mapping[str, Any], name: str) -> Decimal:
        value = snapshot.get(name)
        try:
            amount = None if value is None or isinstance(value, bool) else Decimal(str(value))
        except InvalidOperation:
            amount = None
        if amount is None or not amount.is_finite():
            raise PermanentBrokerError(f"{LABEL}: the cash balance snapshot has no {name} "
                                       f"({value!r:.40}): the account's equity cannot be valued")
        return amount

    def _risk_status(self, mine: int) -> tuple[bool | None, str]:
        """Whether the firm lets the account trade (`accountRiskStatus`), and why not.
        Reading it may need a permission a login lacks, and a firm with its own risk engine
        may keep none: a refusal or an empty answer says nothing (None), and the guard
        judges by the numbers alone. An admin action the copier does not know says nothing
        either."""
        try:
            rows = self._call("GET", "/accountRiskStatus/deps", params={"masterid": mine})
        except PermanentBrokerError as exc:
            log.info("%s: its risk status cannot be read (%s)", self.account, exc.message)
            return None, ""
        status = next((r for r in rows if isinstance(r, dict)), None) if isinstance(
            rows, list) else None
        if status is None:
            return None, ""
        return risk_standing(status)

    def flatten(self, symbol: str) -> None:
        answer = self._call("POST", "/order/liquidateposition", body={
            "accountId": self._account_id(), "contractId": self.contract_id(symbol),
            "admin": False})
        failure = refusal(answer) if isinstance(answer, dict) else None
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
                failure = refusal(answer) if isinstance(answer, dict) else None
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
                                       f"{accounts_named(listed)}")
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
