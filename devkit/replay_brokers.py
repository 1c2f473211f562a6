"""Where a replay's accounts trade: the sim, or a local server speaking a venue's protocol.

The replay's steps act at the broker (a trade, an outage, a rejected order) and
then let the copier's listener see it. On the sim, "seeing" is one poll of its
book; on a venue (`--broker projectx|tradovate`), the real adapter's stream
reads the frames the local server pushed, over a socket, and the same
`broker_events_handle` as in `copier_listen` gets them: the scenarios then prove
the adapters and their streams, not only the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from django.db import connections

from accounts.models import TradingAccount
from brokers.base import BrokerError, BrokerEvent, BrokerStream, Session
from brokers.models import SimAccount, SimPosition
from brokers.registry import adapter_for
from brokers.sessions import session_save
from brokers.sim import SimBroker
from copier.services.stream_events import broker_events_handle, broker_events_pump
from copier.services.sync_guard import connection_lost, connection_restored
from core.trading import Side

if TYPE_CHECKING:
    from devkit.localvenue import LocalVenue

T = TypeVar("T")
# A stream has said all it will about a step when it stays quiet this long: the local
# server has pushed every frame of the step before its call returned.
QUIET_SECONDS = 0.15
# Each step's faults at the venue, by the scenario op that asks for them.
FAULT_OF_OP = {"fail": "http_5xx", "reject": "reject", "hold": "hold"}


class SimBrokerDriver:
    kind = "sim"

    def account_create(self, name: str) -> TradingAccount:
        return TradingAccount.objects.create(name=name, broker="sim")

    def pump(self, account: TradingAccount) -> None:
        account.refresh_from_db()
        broker_events_pump(account=account)

    def reconnect(self, account: TradingAccount) -> None:
        account.refresh_from_db()
        if account.is_connected:
            connection_restored(account=account)
        self.pump(account)

    def fill(self, account: TradingAccount, symbol: str, side: str, qty: int,
             fill_id: str | None, price: Decimal | None = None) -> None:
        SimBroker(account).execute_fill(symbol, Side(side), qty, fill_id, price=price)

    def price_set(self, symbol: str, price: Decimal) -> None:
        SimBroker.price_set(symbol, price)

    def cash_set(self, account: TradingAccount, amount: Decimal) -> None:
        """The account's balance before its first fill: a guarded follower's starting
        balance (its equity adds every fill's P&L)."""
        SimAccount.objects.using("broker").update_or_create(account_id=account.pk,
                                                            defaults={"cash": amount})

    def reachable_set(self, account: TradingAccount, reachable: bool) -> None:
        SimBroker(account).set_reachable(reachable)

    def inject(self, account: TradingAccount, fault: str, count: int) -> None:
        SimBroker(account).inject(**{fault: count})

    def held_fill(self, account: TradingAccount, qty: int | None) -> None:
        SimBroker(account).fill_held(qty)

    def held_cancel(self, account: TradingAccount) -> None:
        SimBroker(account).cancel_held()

    def positions(self, names: Sequence[str]) -> dict[str, dict[str, int]]:
        held: dict[str, dict[str, int]] = {}
        for row in (
            SimPosition.objects.using("broker").filter(book__account__name__in=names)
            .exclude(qty=0).order_by("book__account__name", "symbol")
            .values("book__account__name", "symbol", "qty")
        ):
            held.setdefault(row["book__account__name"], {})[row["symbol"]] = row["qty"]
        return held

    def close(self) -> None:
        """Nothing to stop: the sim lives in the database."""


class _ClosingExecutor(ThreadPoolExecutor):
    """The streams' `asyncio.to_thread` work (an adapter reading a session or a contract)
    touches the database from pool threads: each job closes its thread's connections, or
    they would outlive the replay (and keep a test database from being dropped)."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        def job() -> T:
            try:
                return fn(*args, **kwargs)
            finally:
                connections.close_all()
        return super().submit(job)


class _Reader:
    """Reads one stream all the time, as a listener does, and keeps what it said until the
    account is pumped: the socket never backs up (the venue's pings are answered, a close
    is prompt), and the copier still sees the events when the sim's poll would."""

    def __init__(self, stream: BrokerStream) -> None:
        self.stream = stream
        self.events: list[BrokerEvent] = []
        self.error: BrokerError | None = None
        self.crash: Exception | None = None  # not the venue's doing: a bug, raised at the pump
        self.arrived = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                self.events += await self.stream.receive()
                self.arrived.set()
        except BrokerError as exc:  # the stream is over; a listener would reconnect
            self.error = exc
        except Exception as exc:
            self.crash = exc
        self.arrived.set()

    async def quiet(self) -> None:
        """Until nothing has come for QUIET_SECONDS (or the stream ended)."""
        while self.error is None and self.crash is None:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), QUIET_SECONDS)
            except TimeoutError:
                return

    def taken(self) -> tuple[list[BrokerEvent], BrokerError | None]:
        if self.crash is not None:
            raise RuntimeError(f"the stream's reader failed: {self.crash!r}") from self.crash
        events, self.events = self.events, []
        return events, self.error

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.stream.close()


class VenueBrokerDriver:
    """Accounts at a local protocol server; each with the real adapter's stream, kept open
    and read on an event loop of its own thread, as the listener keeps them."""

    def cash_set(self, account: TradingAccount, amount: Decimal) -> None:
        """A local venue's accounts all start at its own starting balance: a guard's
        starting balance must be that one."""
        from devkit.scenario import ScenarioError

        start = Decimal(str(self.venue.starting_balance))
        if amount != start:
            raise ScenarioError(f"{account.name}: the local {self.venue.kind} accounts start "
                                f"at {start:.2f}; a guard's starting_balance must be that")

    def __init__(self, venue: LocalVenue, symbols: list[str]) -> None:
        self.venue = venue
        self.kind = venue.kind
        for symbol in symbols:
            venue.contract_add(symbol)
        self.readers: dict[int, _Reader] = {}
        self.sessions: dict[int, Session | None] = {}
        # The venue's activity count of the account when its stream last went quiet.
        self.quiet_at: dict[int, int] = {}
        # A scenario's fill id -> the venue's (which numbers fills itself), per account.
        self.fill_ids: dict[tuple[int, str], str] = {}
        self.loop = asyncio.new_event_loop()
        self.loop.set_default_executor(_ClosingExecutor(max_workers=4,
                                                        thread_name_prefix="replay-io"))
        self.thread = threading.Thread(target=self.loop.run_forever, name="replay-streams",
                                       daemon=True)
        self.thread.start()

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def account_create(self, name: str) -> TradingAccount:
        account = self.venue.trading_account(name)
        account.save()
        session = adapter_for(account).session_obtain(None)
        if session is not None:
            session_save(account.pk, session, obtained_by="replay")
        self.sessions[account.pk] = session
        return account

    def _stream_open(self, account: TradingAccount) -> bool:
        """The listener's connect: the stream first, then the positions (the guard)."""
        stream = adapter_for(account).stream(self.sessions[account.pk])
        before = self.venue.activity(account.external_id)  # a new stream replays nothing
        try:
            self._run(stream.open())
            connection_restored(account=account)
        except BrokerError as exc:
            self._run(stream.close())
            connection_lost(account=account, reason=exc.message)
            return False

        async def reader() -> _Reader:
            return _Reader(stream)
        self.readers[account.pk] = self._run(reader())
        self.quiet_at[account.pk] = before
        return True

    def _stream_drop(self, account: TradingAccount, reason: str) -> None:
        reader = self.readers.pop(account.pk, None)
        if reader is not None:
            self._run(reader.close())
        connection_lost(account=account, reason=reason)

    def pump(self, account: TradingAccount) -> None:
        """What the stream said since the last pump goes to the listener's handler, once the
        stream is quiet: waited for only when the venue has pushed something meanwhile."""
        account.refresh_from_db()
        needs_connect = account.pk not in self.readers or not account.is_connected
        if needs_connect and not self._stream_open(account):
            return
        reader = self.readers[account.pk]
        activity = self.venue.activity(account.external_id)
        if activity != self.quiet_at.get(account.pk):
            self._run(reader.quiet())
            self.quiet_at[account.pk] = activity
        events, error = reader.taken()
        if events:
            broker_events_handle(account=account, events=events)
        if error is not None:
            self._stream_drop(account, error.message)

    def reconnect(self, account: TradingAccount) -> None:
        """As a listener reconnects: the stream closed, the session kept or renewed (a login
        when it is gone), a new stream, positions compared."""
        account.refresh_from_db()
        if account.pk in self.readers:
            self._stream_drop(account, "reconnect")
        try:
            session = adapter_for(account).session_obtain(self.sessions.get(account.pk))
        except BrokerError as exc:
            connection_lost(account=account, reason=exc.message)
            return
        if session is not None and session != self.sessions.get(account.pk):
            session_save(account.pk, session, obtained_by="replay")
        self.sessions[account.pk] = session
        self.pump(account)

    def price_set(self, symbol: str, price: Decimal) -> None:
        self.venue.price_set(symbol, price)

    def fill(self, account: TradingAccount, symbol: str, side: str, qty: int,
             fill_id: str | None, price: Decimal | None = None) -> None:
        if price is not None:  # a priced trade moves the venue's price, as the sim's does
            self.venue.price_set(symbol, price)
        if fill_id is None:
            self.venue.trade(account.external_id, symbol, side, qty)
            return
        made = self.fill_ids.get((account.pk, fill_id))
        if made is not None:  # the same fill delivered again
            self.venue.trade(account.external_id, symbol, side, qty, made)
        else:
            self.fill_ids[(account.pk, fill_id)] = self.venue.trade(
                account.external_id, symbol, side, qty)

    def reachable_set(self, account: TradingAccount, reachable: bool) -> None:
        self.venue.set_reachable(reachable, account_external_id=account.external_id)

    def inject(self, account: TradingAccount, fault: str, count: int) -> None:
        self.venue.inject(FAULT_OF_OP[fault], count, account_external_id=account.external_id)

    def held_fill(self, account: TradingAccount, qty: int | None) -> None:
        self.venue.held_fill(account.external_id, qty)

    def held_cancel(self, account: TradingAccount) -> None:
        self.venue.held_cancel(account.external_id)

    def positions(self, names: Sequence[str]) -> dict[str, dict[str, int]]:
        held: dict[str, dict[str, int]] = {}
        for account in TradingAccount.objects.filter(name__in=names).order_by("name"):
            venue_held = self.venue.positions(account.external_id)
            if venue_held:
                held[account.name] = dict(sorted(venue_held.items()))
        return held

    def close(self) -> None:
        async def close_all() -> None:
            await asyncio.gather(*(r.close() for r in self.readers.values()))
        self._run(close_all())
        self.readers.clear()
        self._run(self.loop.shutdown_default_executor())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
