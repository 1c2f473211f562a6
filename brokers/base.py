"""The broker adapter interface every venue implements, and its two error kinds.

The copy engine talks to brokers only through `BrokerAdapter`. Errors say
whether retrying can help, because that decides between the Failed Exit
Queue (transient) and a quarantine (permanent): see docs/rules.md#placing-the-plan.

An adapter module provides (the checklist for adding a broker, see README):

| member            | required | why                                                        |
|-------------------|----------|------------------------------------------------------------|
| `kind`            | yes      | registry key, stored on `TradingAccount.broker`            |
| `place_order`     | yes      | market order carrying the copier's client order id         |
| `find_order`      | yes      | look-up by client order id before anything is resent       |
| `order_cancel`    | yes      | cancel a working order by client order id (working-order timeout) |
| `positions`       | yes      | the Sync Divergence Guard compares these on reconnect      |
| `connect`         | yes      | ready a reconnect's reads (the Sync Divergence Guard calls it) |
| `fills_cursor`    | no       | newest fill in the last `positions()`: late fills not recounted |
| `positions_unread` | no      | what the last `positions()` could not read (refused, not failed) |
| `stream`          | yes      | the live stream `copier_listen` runs (`BrokerStream`)    |
| `session_obtain`  | venues with logins | log in / renew; only the owning listener calls it |
| `credential_fields`, `credentials_clean` | venues with logins | the admin's form per kind |
| `connection_test` | venues with logins | the admin's "test connection" action         |
| `flatten`         | no       | close one symbol's position at the venue (kill switch)      |
| `realized_pnl`    | no       | the session's realised P&L: the daily loss limit            |
| `poll_events`     | no       | a poll-only stream (the sim's): `broker_events_pump` reads it |

Sessions: a venue's login (token) belongs to the account's owning listener, which
obtains and renews it and stores it encrypted (`brokers.sessions`); the Celery
workers that place orders only read it. No login per order: Tradovate flags
accounts that open thousands of sessions and ProjectX limits them.

A `Fill` carries the broker's `seq` where the venue numbers its fills in order
(sim: its order id; Tradovate: the fill id; ProjectX: the trade id).
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from http import HTTPStatus
from typing import Any, ClassVar, Literal, Protocol, TypeVar

# An order's side and status mean one thing from the rules to the broker: the ground floor's
# (the status re-exported for the adapters, which name it with the rest of the interface).
from core.trading import OrderStatus as OrderStatus
from core.trading import Side

PLACE_MANY_THREADS = 32


class AccountData(Protocol):
    """What an adapter knows of its account: its row's id, name, kind, venue id and login.

    The accounts app's `TradingAccount` is one as it stands (structurally, so the brokers
    never import the app above them, tests/test_layering.py); a test or the harness may
    pass any object with these. `credentials` is written too: the adapter cache
    (`brokers.registry.adapter_for`) fills in a login the row was read without. `pk` is
    typed as Django types a row's (an int), and is None on a row not saved yet.
    """

    @property
    def pk(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def broker(self) -> str: ...

    @property
    def external_id(self) -> str: ...

    @property
    def credentials(self) -> str: ...

    @credentials.setter
    def credentials(self, value: str) -> None: ...

    @property
    def credentials_md5(self) -> str | None:
        """The stored token's digest, read with the row (see `adapter_for`)."""


class BrokerError(Exception):
    """Base of every broker failure; `permanent` tells whether a retry can help."""

    permanent: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TransientBrokerError(BrokerError):
    """Unreachable, timeout, 5xx, rate limit: usually resolves itself, so exits are retried.

    `retry_after`: the seconds the venue asked us to wait (HTTP 429 Retry-After,
    Tradovate's penalty ticket `p-time`), so that a retry does not come sooner.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OrderOutcomeUnknown(TransientBrokerError):
    """The order may or may not have executed: anything that failed after the request was
    sent (a timeout, a dropped connection, an HTTP 5xx, an unreadable answer).

    Never resend blindly: look the client order id up first. Only a failure that proves
    the request never ran (connection refused, a rate limit's refusal, a 401) is a plain
    TransientBrokerError on an order.
    """


class SessionRefused(TransientBrokerError):
    """The venue refused the session's token (HTTP 401) before its expiry: revoked by an
    API key reset, a session limit, a logout elsewhere. Waiting cannot help; a new login
    can. The stored session is dropped and the account's owning listener logs in again
    (`copier.stream.process`); the request itself did not run.
    """


class PermanentBrokerError(BrokerError):
    """Rejected for good (unknown symbol, margin, account closed): needs a person."""

    permanent = True


class UnknownContract(PermanentBrokerError):
    """The venue's own contract look-up does not know an id it listed or streamed (an
    expired contract, one its reference data lacks): the copier cannot name it."""


def orders_cancel_error(label: str, cancelled: int, failures: list[BrokerError]) -> BrokerError:
    """One error for a cancel-all that failed on some orders, after trying every one.

    Transient if any failure is (a retry may finish the job); the message says how many
    were cancelled, so the caller's record is true even though no count is returned.
    """
    text = f"{label}: cancelled {cancelled} working order(s), {len(failures)} failed: " + \
        "; ".join(f.message for f in failures[:5])
    if any(not f.permanent for f in failures):
        return TransientBrokerError(text)
    return PermanentBrokerError(text)


@dataclass(frozen=True, slots=True)
class OrderRequest:
    client_order_id: str
    symbol: str
    side: Side
    qty: int


@dataclass(frozen=True, slots=True)
class OrderResult:
    """An order as the broker has it.

    `status`: "filled" = all of it filled; "accepted" = still working (`filled_qty` is
    what filled so far, possibly > 0); "cancelled" = settled by a cancel or an expiry at
    the venue after `filled_qty` filled (0 up to qty - 1); "rejected" = refused, nothing
    filled. A venue that cancels the rest of a part-filled order says "cancelled", never
    "filled": what it did not fill is still to be done (docs/rules.md#orders-in-flight).
    The status is in the copier's own vocabulary (core.trading.OrderStatus), one of its
    VENUE_ANSWERS: the copier stores it as it came.
    """

    client_order_id: str
    broker_order_id: str
    status: OrderStatus
    filled_qty: int
    message: str = ""
    # What the broker has on record, where a look-up tells: after a crash the copier may
    # plan differently from the run that sent the order, and what went out is what counts.
    symbol: str | None = None
    side: Side | None = None
    qty: int | None = None
    # When the venue's answer to the placement itself arrived (it accepted the order),
    # where learning the fill takes another request (ProjectX, Tradovate read the order
    # back): the latency a trader compares with other copiers ends here. None where the
    # answer carries the fill (the sim) or the result comes from a look-up.
    acknowledged_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class Equity:
    """One look at an account's money, for its guard against the firm's drawdown line
    (copier.services.guard): the balance (realised), the open P&L at the venue's prices,
    the contracts held (all symbols), where the numbers came from, and the venue's own
    word that the firm stopped the account (`can_trade` False, with `why`), where it
    gives one (None: it does not say), and the firm's drawdown line as the venue
    publishes it (`line`: the equity, in the account's money, at or below which the firm
    liquidates; None where it is not published or cannot be read: the guard then goes by
    the line it computes, docs/rules.md#the-account-guard)."""

    balance: Decimal
    open_pnl: Decimal
    contracts: int
    source: str
    can_trade: bool | None = None
    why: str = ""
    line: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Fill:
    """A fill seen on the account's stream, with the ids of the order that made it.

    It is the copier's own only when that order is one the copier recorded on the
    account (by the exact client order id, or the broker's order id); any other fill,
    whatever its tag, is the trader's (docs/rules.md#whose-fill-it-is).
    """

    fill_id: str
    symbol: str
    side: Side
    qty: int
    time: dt.datetime
    client_order_id: str | None = None
    # The broker's own monotonic number of the fill, where it has one: a fill numbered at
    # or below a reconnect's `fills_cursor()` is already in the positions read then.
    seq: int | None = None
    # The broker's id of the order that filled, where the venue names it: a fill of an order
    # of the copier's whose tag the stream could not learn is still known to be the copier's.
    broker_order_id: str | None = None


@dataclass(frozen=True, slots=True)
class PositionUpdate:
    """The broker's net position on a symbol, as some venues stream it."""

    symbol: str
    qty: int


@dataclass(frozen=True, slots=True)
class OrderUpdate:
    """One of the account's orders reached a settled state at the venue (streamed).

    Sent once per order when it is filled, cancelled or expired (`status` "cancelled",
    `filled_qty` what filled before), or rejected; its fills come as `Fill`s of their own
    and move the position, this never does. `client_order_id` None: not an order that
    carried one (a trader's own, or a venue that does not say).
    """

    client_order_id: str | None
    broker_order_id: str
    symbol: str
    status: OrderStatus
    filled_qty: int
    qty: int


@dataclass(frozen=True, slots=True)
class AccountChanged:
    """The venue says the account's money or standing changed (its balance, its cash
    balance, its risk status, whether the firm lets it trade), as some venues stream it.

    It carries no amounts: the account guard reads the equity again (`equity_read`, the
    one place that values it) rather than trusting a pushed figure the read could
    contradict. `why`: what the venue pushed, for the log; `can_trade`: the venue's word
    that the firm still lets the account trade (False: stopped), where the record says
    (None: it does not, or not readably), so that a firm's stop shows where it arrived.
    """

    why: str
    can_trade: bool | None = None


@dataclass(frozen=True, slots=True)
class ConnectionLost:
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Session:
    """A venue login: the token the owning listener obtained, and until when it is good.

    `data` holds what the venue said with it that orders need (Tradovate's user id,
    the venue's account id): never a password. The token is stored encrypted.
    """

    token: str
    expires_at: dt.datetime
    data: Mapping[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # tokens never reach a log
        return f"Session(token='***', expires_at={self.expires_at.isoformat()})"


@dataclass(frozen=True, slots=True)
class CredentialField:
    """One field of a broker kind's login, as the admin asks for it."""

    name: str
    label: str
    secret: bool = False
    required: bool = True
    help_text: str = ""
    choices: tuple[tuple[str, str], ...] = ()
    # A venue address (a URL): the login's secrets go there, and are bound to it.
    address: bool = False


# The key, in an account's stored login and in a session's data, of the digest of the venue
# addresses the secrets were entered for (the token obtained at): see `credentials_read`.
BOUND_KEY = "bound_to"
VENUE_TEXT_LIMIT = 80


def addresses_digest(kind: str, addresses: Sequence[str]) -> str:
    """What a login's secrets are bound to: a digest, so the binding says nothing by itself."""
    return hashlib.sha256("\0".join([kind, *addresses]).encode()).hexdigest()


def numeric_account_id(value: str, *, venue: str, listed_by: str) -> str:
    """A venue whose account id is a number: caught in the admin, not at the first order."""
    value = value.strip()
    if not value.isdigit():
        raise ValueError(
            f"the {venue} account id is a whole number (as {listed_by} lists it; "
            f"'test connection' shows it), not {value!r}")
    return value


def status_phrase(status: int) -> str:
    """The standard name of an HTTP status ("Forbidden"): what an error answer is shown as."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def venue_text(value: object, limit: int = VENUE_TEXT_LIMIT) -> str:
    """A venue's own error text as a person may read it: one line of printable characters,
    at most `limit` long, never a whole answer. What answers may not be the venue (an address
    typed wrong, an internal service), and its page must not be read through the copier."""
    text = " ".join("".join(c if c.isprintable() else " " for c in str(value or "")).split())
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A fill or a position the venue reported that the adapter cannot read: a contract the
    venue's look-up does not know, a field that is not what the venue documents.

    Delivered (by a stream, or by `BrokerAdapter.positions_unread` after a read), never
    raised: one record the copier cannot take must not stop the account's stream or fail its
    reconnect. The copier records it as refused (docs/rules.md#refused-and-duplicate-fills).
    `payload`: the venue's record as JSON holds it; `symbol`: the contract's name, where
    that was read.
    """

    kind: Literal["fill", "position"]
    reason: str
    payload: Mapping[str, Any]
    fill_id: str = ""
    symbol: str | None = None


# What an adapter's parse of a venue record may raise that makes that record unreadable
# (and only it): the contract unknown to the venue's look-up (or any refusal of the
# look-up), a field missing or of the wrong kind.
RECORD_ERRORS = (PermanentBrokerError, AttributeError, KeyError, TypeError, ValueError)


def unreadable(kind: Literal["fill", "position"], record: object, exc: Exception, *,
               label: str, fill_id: object = None, symbol: str | None = None) -> Unreadable:
    """The `Unreadable` for a venue record whose parse raised `exc` (one of RECORD_ERRORS)."""
    if isinstance(exc, BrokerError):
        reason = exc.message
    else:
        reason = f"{label}: unreadable {kind} record ({type(exc).__name__}: {exc})"
    payload = dict(record) if isinstance(record, Mapping) else {"record": repr(record)}
    return Unreadable(kind, reason, payload, "" if fill_id is None else str(fill_id)[:128],
                      symbol)


# No "connection restored" event: the listener's next turn reconnects an account that is
# not connected, and only the positions read then say the connection is back.
BrokerEvent = (Fill | PositionUpdate | OrderUpdate | AccountChanged | ConnectionLost
               | Unreadable)


class BrokerStream(abc.ABC):
    """One account's live stream, run by the account's owning listener on its event loop.

    The listener opens it, then re-reads the account's positions (the Sync
    Divergence Guard), then hands every batch `receive` returns to the copier.
    Opening before reading means nothing falls between the two; what the read
    already counted, the fills' `seq` tells (see `BrokerAdapter.fills_cursor`).
    Nothing here may block the loop: blocking work goes to a thread.
    """

    # The owning listener renews the session before it expires and sets `session` to the
    # new one. True: this venue's open stream must then be reopened to use the new token
    # (the listener closes it, opens a new one and reconciles); False: the open
    # connection lives on, and the next open uses the new token.
    reopen_on_new_session: ClassVar[bool] = False

    def __init__(self, adapter: BrokerAdapter, session: Session | None) -> None:
        self.adapter = adapter
        self.session = session

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and subscribe; from its return every event of the account is delivered.

        Raises TransientBrokerError (unreachable, refused for now) or
        PermanentBrokerError (the login is refused: a person must fix it).
        """

    @abc.abstractmethod
    async def receive(self) -> list[BrokerEvent]:
        """Wait for the next events, oldest first (never an empty list).

        Raises TransientBrokerError when the stream is lost: the listener marks
        the account disconnected, closes the stream and opens a new one after a
        backoff. Events a venue replays on a new connection (a snapshot's old
        fills and rejects) are the stream's to drop, by the venue's entity id.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connection; safe to call twice and after a failed `open`."""


def position_fill(net: int, average: Decimal | None, delta: int, price: Decimal | None
                  ) -> tuple[int, Decimal | None, int, Decimal | None]:
    """One fill of `delta` contracts at `price` on a position of `net` held at `average`:
    (net after, average after, contracts closed, points realised on them, i.e. the price
    move times the contracts closed, signed by the side held; times the point value it is
    money). The average-cost method, as the venues report a day's realised P&L.

    A fill toward flat realises (price - average) per contract closed, signed by the side
    held; what it opens beyond flat starts a new average at its price. An unknown price or
    average (None) makes what depends on it unknown (None), never zero.
    """
    realized: Decimal | None = Decimal(0)
    closed = 0
    if net and delta and (net > 0) != (delta > 0):
        closed = min(abs(net), abs(delta))
        realized = (None if price is None or average is None
                    else (price - average) * closed * (1 if net > 0 else -1))
        net += closed if net < 0 else -closed
        delta += closed if delta < 0 else -closed
        if net == 0:
            average = None
    if delta:
        if net == 0:
            average = price
        elif average is not None and price is not None:
            average = (average * abs(net) + price * abs(delta)) / (abs(net) + abs(delta))
        else:
            average = None
        net += delta
    return net, average, closed, realized


_T = TypeVar("_T")
_A = TypeVar("_A")


def _each_account(batch: Sequence[tuple[AccountData, _A]],
                  call: Callable[[BrokerAdapter, _A], _T]) -> list[_T | BrokerError]:
    """`call` on each account's adapter, concurrently on threads past one (venues with an
    HTTP API spend their time waiting), a BrokerError returned in its place, not raised.
    Each adapter comes from the registry's cache in the thread that uses it (a cache miss
    reads and decrypts the login there); the registry is imported late because it
    imports this module."""
    def one(item: tuple[AccountData, _A]) -> _T | BrokerError:
        from brokers.registry import adapter_for

        account, arg = item
        try:
            return call(adapter_for(account), arg)
        except BrokerError as exc:
            return exc

    if len(batch) <= 1:
        return [one(item) for item in batch]
    with ThreadPoolExecutor(max_workers=min(PLACE_MANY_THREADS, len(batch))) as pool:
        return list(pool.map(one, batch))


class BrokerAdapter(abc.ABC):
    """One account at one broker: what the workers and the listener ask the venue.

    Instances are reused (`brokers.registry.adapter_for` keeps one per account
    and process), so an adapter keeps its HTTP connection pool and its cached
    session warm between orders; it must be safe to call from several threads.
    """

    kind: ClassVar[str]
    label: ClassVar[str]
    # The admin's credentials form for this kind; empty: the venue needs no login (sim).
    credential_fields: ClassVar[tuple[CredentialField, ...]] = ()

    def __init__(self, account: AccountData) -> None:
        self.account = account

    @classmethod
    def credentials_clean(cls, values: dict[str, str]) -> dict[str, str]:
        """Check a login as typed in the admin; raise ValueError saying what is wrong."""
        missing = [f.label for f in cls.credential_fields if f.required and not values.get(f.name)]
        if missing:
            raise ValueError(f"missing: {', '.join(missing)}")
        return {f.name: values[f.name] for f in cls.credential_fields if values.get(f.name)}

    @classmethod
    def credential_addresses(cls, cleaned: Mapping[str, str]) -> tuple[str, ...]:
        """Every venue address a cleaned login's secrets are sent to (a default standing in
        for a field left blank): what they are bound to."""
        return tuple(cleaned.get(f.name, "") for f in cls.credential_fields if f.address)

    @classmethod
    def credentials_bound(cls, values: Mapping[str, str]) -> dict[str, str]:
        """The login as stored: `values` with the digest of the addresses its secrets are
        entered for now. Only `TradingAccount.save` calls it, when the secrets are new: a
        kept secret keeps the binding it had (ValueError as `credentials_clean`)."""
        plain = {str(k): str(v) for k, v in values.items() if k != BOUND_KEY}
        cleaned = cls.credentials_clean(dict(plain))
        return {**plain, BOUND_KEY: addresses_digest(cls.kind, cls.credential_addresses(cleaned))}

    @classmethod
    def credentials_addresses_of(cls, values: Mapping[str, str]) -> tuple[str, ...] | None:
        """The addresses of a login as stored or typed; None when it is not a valid login."""
        try:
            cleaned = cls.credentials_clean({str(k): str(v) for k, v in values.items()
                                             if k != BOUND_KEY})
        except ValueError:
            return None
        return cls.credential_addresses(cleaned)

    def credentials_read(self) -> dict[str, str]:
        """The stored login, cleaned, with its binding (`BOUND_KEY`), if its secrets were
        entered for the addresses it names now; else PermanentBrokerError, and nothing is
        sent anywhere: a secret only ever goes where it was typed for."""
        where = f"account {self.account.name}: its {self.label} credentials"
        raw = str(self.account.credentials or "")
        try:
            values = json.loads(raw) if raw else {}
        except ValueError:
            raise PermanentBrokerError(f"{where} are not JSON") from None
        if not isinstance(values, dict):
            raise PermanentBrokerError(f"{where} are not a JSON object")
        try:
            cleaned = self.credentials_clean({str(k): str(v) for k, v in values.items()
                                              if k != BOUND_KEY and v is not None})
        except ValueError as exc:
            raise PermanentBrokerError(f"account {self.account.name}: {self.label} "
                                       f"credentials: {exc}") from None
        bound = addresses_digest(self.kind, self.credential_addresses(cleaned))
        if values.get(BOUND_KEY) != bound:
            raise PermanentBrokerError(
                f"{where} were not entered for the venue address(es) they name now: type "
                "the secrets again in the account's form (nothing was sent)")
        return {**cleaned, BOUND_KEY: bound}

    def session_bind(self, session: Session) -> Session:
        """A session just obtained, marked with the addresses it was obtained at."""
        return dataclasses.replace(
            session, data={**session.data, BOUND_KEY: self.credentials_read()[BOUND_KEY]})

    def session_fits(self, session: Session | None) -> Session | None:
        """The session if it was obtained at the addresses the login names now, else None:
        a venue's token is a secret too, never sent to an address that did not issue it."""
        if session is None or session.data.get(BOUND_KEY) != self.credentials_read()[BOUND_KEY]:
            return None
        return session

    @classmethod
    def external_id_clean(cls, value: str) -> str:
        """Check the venue's account id as typed in the admin; raise ValueError if malformed."""
        return value.strip()

    def session_obtain(self, current: Session | None) -> Session | None:
        """Log in, or renew `current` while it is still good; None: the venue has no login.

        Only the account's owning listener calls this, so there is one session per
        account however many workers place orders.
        """
        return None

    def connection_test(self) -> str:
        """Log in and list what the venue shows of the account, for a person to read.

        Raises BrokerError saying what failed (the login, the account, the positions).
        """
        return f"{self.label}: {len(self.positions())} open position(s)"

    def flatten(self, symbol: str) -> None:
        """Ask the venue to close the account's position in `symbol` (a request, not a fill)."""
        raise PermanentBrokerError(f"{self.label}: flatten is not supported")

    def orders_cancel_all(self) -> int:
        """Cancel every working (open, unfilled) order of the account at the venue; how many.

        A flatten calls it first: a resting order a trader left (a limit, a stop) could
        fill after the positions are closed and open one again. The copier itself only
        sends market orders, so this default answers 0 for venues whose orders fill at
        once and never rest (the sim). Raises TransientBrokerError / PermanentBrokerError;
        an adapter that fails on some orders still tries the rest before raising
        (`orders_cancel_error`).
        """
        return 0

    def realized_pnl(self, since: dt.datetime) -> Decimal:
        """The account's realised profit and loss since `since` (the session's start), in
        the account's currency, net of the fees where the venue reports them.

        What a daily loss limit is checked against (copier.services.losslimit). Raises
        BrokerError when it cannot be read or valued (a fill without a price, a contract
        whose point value is unknown): a guessed number could lock or free a follower
        wrongly, so none is ever made up.
        """
        raise PermanentBrokerError(f"{self.label}: the realised P&L cannot be read here")

    def equity_read(self) -> Equity:
        """The account's balance and open P&L now (and whether the firm still lets it
        trade), for its account guard. Raises BrokerError when they cannot be read or
        valued: the guard never acts on a made-up number, and says it is blind."""
        raise PermanentBrokerError(f"{self.label}: the account's equity cannot be read here")

    @abc.abstractmethod
    def stream(self, session: Session | None) -> BrokerStream:
        """A new, unopened stream of this account for the listener (`copier_listen`)."""

    @abc.abstractmethod
    def connect(self) -> None:
        """Ready the account for a reconnect's reads (sim: the stream starts from now)."""

    @abc.abstractmethod
    def place_order(self, request: OrderRequest) -> OrderResult:
        """Send a market order. Raises TransientBrokerError / PermanentBrokerError.

        Sending the same client order id twice must never execute twice.
        """

    @classmethod
    def place_many(
        cls, batch: Sequence[tuple[AccountData, OrderRequest]]
    ) -> list[OrderResult | BrokerError]:
        """Place orders on many accounts of this broker at once; errors are returned, not raised.

        A fan-out to hundreds of followers must not wait for each order in
        turn: by default the orders go out concurrently on threads (venues
        with an HTTP API spend their time waiting). An adapter with a native
        batch endpoint overrides this.

        A classmethod because the batch spans accounts, so no one adapter owns it; each
        order's adapter comes from the registry's cache in the thread that sends it (a
        cache miss reads and decrypts the login there, not in the caller), and the
        registry is imported late because it imports this module.
        """
        return _each_account(batch, lambda adapter, request: adapter.place_order(request))

    @classmethod
    def equity_read_many(cls, accounts: Sequence[AccountData]
                         ) -> list[Equity | BrokerError]:
        """`equity_read` of many accounts of this broker at once, errors returned, not
        raised: the guards of every follower a market move crossed are read together. By
        default on threads (a venue's reads wait on HTTP); the sim reads its books in a
        few statements for all of them. Anything but a BrokerError is raised."""
        return _each_account([(a, None) for a in accounts],
                             lambda adapter, _none: adapter.equity_read())

    @classmethod
    def orders_cancel_all_many(cls, accounts: Sequence[AccountData]) -> list[int | BrokerError]:
        """`orders_cancel_all` of many accounts of this broker at once, errors returned, not
        raised: a flatten of many followers (the account guard's, after a market move)
        cancels their working orders together rather than one account after the other. By
        default on threads; the sim cancels its books' held orders in a few statements."""
        return _each_account([(a, None) for a in accounts],
                             lambda adapter, _none: adapter.orders_cancel_all())

    @abc.abstractmethod
    def find_order(self, client_order_id: str) -> OrderResult | None:
        """The broker's record of an order we sent, or None if it never arrived."""

    @abc.abstractmethod
    def order_cancel(self, client_order_id: str) -> OrderResult | None:
        """Cancel our order at the venue if it is still working; the order as it stands after.

        Status "cancelled" with what filled before the cancel, or "filled"/"rejected" when it
        settled first; None when the venue has no order with that client order id. What the
        copier's working-order timeout calls (docs/rules.md#orders-in-flight). Raises
        TransientBrokerError when the venue cannot be asked now.
        """

    @abc.abstractmethod
    def positions(self) -> dict[str, int]:
        """Net position per symbol at the broker, flat symbols omitted."""

    def positions_unread(self) -> list[Unreadable]:
        """The positions of this adapter's last `positions()` answer that it could not read
        (left out of it): the reconnect records them as refused and applies the rest, so
        that a contract the venue cannot name does not fail every reconnect."""
        return []

    def fills_cursor(self) -> int | None:
        """The `seq` of the newest fill reflected in this adapter's last `positions()` answer.

        A reconnect re-reads the positions, so the fills they include must not be
        counted again when the stream delivers them late. Read in the same snapshot
        as the positions, or a fill in between is counted twice or never. None: the
        broker does not number its fills, and the copier falls back to fill times.
        """
        return None

    def poll_events(self) -> list[BrokerEvent]:
        """Events received since the last poll, oldest first: a poll-only venue's stream.

        The sim's stream is its book's undelivered fills; a venue that pushes events
        over a socket delivers them through `stream()` instead.
        """
        raise NotImplementedError(f"{self.label} streams through copier_listen only")
