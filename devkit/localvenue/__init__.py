"""Local servers that speak a venue's documented wire protocol, on loopback.

The adapters' tests, the replay and fault tests on real protocols, and
`copier_bench --broker projectx|tradovate` run the real adapters against
these: REST and the streaming socket as the venue frames them, with the
venue's failure modes switchable (`inject`). They keep the books a venue
keeps (accounts, orders by client id, fills, positions) in memory.

Each server runs its own asyncio loop on a thread of the process that
starts it, so a synchronous test, a Celery worker subprocess and a listener
subprocess can all talk to it. aiohttp is a development dependency: this
package is imported by tests and the benchmark only.
"""

from __future__ import annotations

import abc
import asyncio
import threading
from collections import Counter
from collections.abc import Coroutine, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from core.trading import price_clean

if TYPE_CHECKING:
    from accounts.models import TradingAccount

T = TypeVar("T")

# What `LocalVenue.inject` can switch on, each for the next N requests of its kind:
FAULTS = (
    "http_5xx",        # next order placements answer HTTP 503 before executing anything
    "http_5xx_after",  # next order placements execute, then answer HTTP 503 (a gateway's
                       # error after the order went through: the client cannot tell these
                       # two apart, so it must look the order up)
    "rate_limit",      # next requests answer the venue's rate limit (429 / penalty ticket)
    "reject",          # next order placements are rejected for good by the venue
    "lose_response",   # next placements execute but the connection drops before the answer
    "lookup_fail",     # next order look-ups answer HTTP 503
    "partial",         # next placements fill in two parts (two fills on the stream)
    "late_fill",       # next placements answer "accepted/working"; the fill comes ~0.3 s later
    "hold",            # next placements rest open, unfilled, until `held_fill` / `held_cancel`
    "cancel_rest",     # next placements fill 1 contract and the venue cancels the rest at once
    "part_hold",       # next placements fill 1 contract at once; the rest is held (as `hold`)
    "auth_refused",    # next logins are refused (wrong credentials)
    "equity_5xx",      # next reads of the account's money answer HTTP 503 (ProjectX
                       # Account/search, Tradovate's cash balance snapshot)
    "no_prices",       # next price reads find none (ProjectX: History/retrieveBars answers
                       # no bars; Tradovate: the cash balance snapshot carries no open P&L)
    "risk_forbidden",  # next risk status reads are refused, HTTP 403, as for a login without
                       # the permission to read them (Tradovate's accountRiskStatus)
)


def price_check(price: object) -> float:
    """A price a test or the replay sets at a venue, checked as the sim's
    (`core.trading.price_clean`), as the float the venue's JSON carries."""
    return float(price_clean(price))


def contract_name_check(name: str) -> None:
    """A contract a test lists at a local venue: letters and digits, as real roots are."""
    if not name or not name.isalnum():
        raise ValueError(f"contract name must be letters and digits, got {name!r}")


def contract_point_value(name: str, default: float) -> float:
    """Money per point of a contract listed at a local venue: the root's real one where the
    copier knows it (so a replay values P&L as the sim does), else the venue's default."""
    from core.contracts import point_value

    known = point_value(name)
    return default if known is None else float(known)


class FaultBook:
    """The faults switched on: for any account's requests (key None) or for one account's.

    Counts add up, as a scenario's `fail_orders` given twice does. A request takes an
    account's own fault before a venue-wide one, so a fault aimed at one follower is
    never spent by another's request. Used on the venue's loop only.
    """

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str | None], int] = {}

    def add(self, fault: str, count: int, account_external_id: str | None) -> None:
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        if not isinstance(count, int) or count < 0:
            raise ValueError(f"fault count must be a whole number >= 0, got {count!r}")
        key = (fault, account_external_id)
        self._counts[key] = self._counts.get(key, 0) + count

    def take(self, fault: str, accounts: Iterable[object] = ()) -> bool:
        """Spend one `fault` on a request of `accounts` (venue ids); False: none is due."""
        for key in [*((fault, str(a)) for a in accounts), (fault, None)]:
            if self._counts.get(key, 0) > 0:
                self._counts[key] -= 1
                return True
        return False

    def left(self, fault: str) -> int:
        """How many of `fault` are still to come, over every account (for assertions)."""
        return sum(n for (f, _a), n in self._counts.items() if f == fault)


class LocalVenue(abc.ABC):
    """A venue on loopback. Start it, point an account's credentials at it, drive it."""

    kind: str  # the broker kind of the adapter that speaks to it
    starting_balance: float  # every account's balance before its first fill

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # Frames pushed per account, and (key None) sockets the venue closed.
        self._activity: Counter[str | None] = Counter()

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> LocalVenue:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._stop())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"{self.kind}-venue", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"local {self.kind} venue did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = self._thread = None

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the venue's loop from any thread and wait for it."""
        assert self._loop is not None, "venue not started"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    @abc.abstractmethod
    async def _start(self) -> None:
        """Bind 127.0.0.1 on a free port and serve."""

    @abc.abstractmethod
    async def _stop(self) -> None: ...

    # --- what a test or the benchmark drives --------------------------------------------
    @abc.abstractmethod
    def credentials(self, account_external_id: str) -> dict[str, str]:
        """Credentials JSON that point an account of this kind at this server."""

    @abc.abstractmethod
    def account_add(self, name: str) -> str:
        """Open an account at the venue; returns its venue id (`TradingAccount.external_id`)."""

    def trading_account(self, name: str) -> TradingAccount:
        """An account opened at the venue, as the copier's unsaved TradingAccount: the venue
        id and the login that point at this server (the replay, the benchmark, tests)."""
        import json

        from accounts.models import TradingAccount

        external_id = self.account_add(name)
        return TradingAccount(name=name, broker=self.kind, external_id=external_id,
                              credentials=json.dumps(self.credentials(external_id)))

    @abc.abstractmethod
    def trade(self, account_external_id: str, symbol: str, side: str, qty: int,
              fill_id: str | None = None) -> str:
        """A trade made at the venue outside the copier (a leader's, a manual one): fills,
        moves the position and is pushed on the account's stream. Returns the fill id.

        A `fill_id` the venue made before is not a new trade: the stream delivers that
        fill again (a venue's duplicate delivery) and nothing moves."""

    @abc.abstractmethod
    def working_order_add(self, account_external_id: str, symbol: str, side: str,
                          qty: int) -> str:
        """A limit order a trader left at the venue, away from the market: it rests, unfilled,
        until cancelled, and is pushed on the account's stream as the venue pushes a new
        order. Returns the venue's order id (what a flatten must cancel)."""

    @abc.abstractmethod
    def held_fill(self, account_external_id: str, qty: int | None = None) -> str:
        """Fill the account's oldest held order (`hold` fault): all that is left, or `qty`
        of it, pushed as the venue pushes a fill (order, trade, position). Returns the fill
        id. ValueError when the account has no held order open, or `qty` is not from 1 to
        what is left."""

    @abc.abstractmethod
    def held_cancel(self, account_external_id: str) -> str:
        """Cancel what is left of the account's oldest held order, as the venue cancels or
        expires an order itself, and push the order's update. Returns its order id.
        ValueError when the account has no held order open."""

    @abc.abstractmethod
    def fills(self, account_external_id: str) -> list[tuple[str | None, str, int]]:
        """Every fill the venue executed on the account, in order: (the client order id of
        its order, or None for a trade made at the venue; contract name; signed quantity).
        The truth an independent check replays, whatever the copier recorded."""

    def held_left(self, account_external_id: str) -> int:
        """How many held orders of the account are still open."""
        async def count() -> int:
            return len(self._held_open(int(account_external_id)))
        return self.call(count())

    @abc.abstractmethod
    def _held_open(self, account_id: int) -> list[dict[str, Any]]:
        """(On the venue's loop) the account's held orders still open, oldest first."""

    @staticmethod
    def _held_part(order_id: object, left: int, qty: int | None) -> int:
        """The part of a held order a `held_fill` fills, or ValueError."""
        part = left if qty is None else qty
        if isinstance(part, bool) or not isinstance(part, int) or not 0 < part <= left:
            raise ValueError(f"held_fill qty must be a whole number from 1 to {left} (what is "
                             f"left of order {order_id}), got {qty!r}")
        return part

    @abc.abstractmethod
    def price_set(self, symbol: str, price: object) -> None:
        """The market moves: market orders in the listed contract `symbol` fill at `price`
        from now on (a closing trade then realises the move). ValueError for a price that is
        not a finite number > 0, or a contract not listed."""

    @abc.abstractmethod
    def contract_add(self, name: str) -> None:
        """List a contract (by its name, e.g. `ESZ6`) at the venue; idempotent."""

    # Set by each venue: contract name -> its listing, and the names its look-ups hide.
    contracts: dict[str, Any]
    hidden: set[str]

    def contract_hide(self, name: str) -> None:
        """The venue's contract look-ups (by id and by name) stop finding the listed contract
        `name`, while it still trades and is held and streamed under its id: a contract the
        venue's reference data does not (or no longer) know, as venues list expired or
        feed-only contracts. ValueError for a contract not listed."""
        async def hide() -> None:
            if name not in self.contracts:
                raise ValueError(f"contract {name!r} is not listed at the local venue")
            self.hidden.add(name)
        self.call(hide())

    @abc.abstractmethod
    def account_lock(self, account_external_id: str, locked: bool = True) -> None:
        """The firm stops the account (`locked`), or lets it trade again: the venue's own
        word that it may not trade (ProjectX `canTrade` false, Tradovate's liquidate-only
        risk status), as a firm sets it on a breach. ValueError for an unknown account."""

    @abc.abstractmethod
    def positions(self, account_external_id: str) -> dict[str, int]:
        """Net position per contract name, flat omitted (what the venue holds)."""

    @abc.abstractmethod
    def orders(self, account_external_id: str) -> list[dict[str, Any]]:
        """Every order the venue received for the account, in order (for assertions)."""

    @abc.abstractmethod
    def inject(self, fault: str, count: int = 1, *,
               account_external_id: str | None = None) -> None:
        """Switch a failure mode on for the next `count` requests (see FAULTS), of one
        account's or of any."""

    def activity(self, account_external_id: str) -> int:
        """A number that moves whenever the venue pushes a frame for the account or closes
        any stream socket. A driver that reads it unchanged since it last waited for the
        account's stream to go quiet knows nothing is in flight there, and need not wait."""
        async def read() -> int:
            return self._activity[account_external_id] + self._activity[None]
        return self.call(read())

    def _activity_note(self, account_id: object | None) -> None:
        """(On the venue's loop) a frame pushed for `account_id`; None: a socket closed."""
        self._activity[None if account_id is None else str(account_id)] += 1

    @abc.abstractmethod
    def streams_drop(self) -> None:
        """Close every open stream socket, as a venue restart or network blip does."""

    @abc.abstractmethod
    def tokens_expire(self) -> None:
        """Make every issued token expire now (the next call with one gets 401)."""

    @abc.abstractmethod
    def set_reachable(self, reachable: bool, *, account_external_id: str | None = None) -> None:
        """While False, refuse every request and stream of the account (or of all) and
        drop its open streams: an outage as the copier sees it."""


VENUES = {
    "projectx": "devkit.localvenue.projectx.ProjectXVenue",
    "tradovate": "devkit.localvenue.tradovate.TradovateVenue",
}


def venue_start(kind: str) -> LocalVenue:
    """A started local server of the venue behind broker kind `kind`."""
    from django.utils.module_loading import import_string

    try:
        path = VENUES[kind]
    except KeyError:
        raise ValueError(f"no local server for broker {kind!r}; known: {', '.join(VENUES)}") \
            from None
    venue: LocalVenue = import_string(path)()
    return venue.start()
