"""`copier_listen`: the long-lived process that keeps every account's broker stream.

One asyncio loop runs one stream per account of every enabled copy group (the leaders, and
the enabled followers of enabled groups), and of every follower a flatten's exit still waits
on, whatever its or its group's mode (docs/rules.md#flatten-and-the-kill-switch: its
connection is kept until they are done). Each second it scans the database: accounts that
joined (or were enabled) get a stream, accounts that left lose theirs, and an account whose
broker, broker-side id, credentials or role changed gets its stream restarted. Per account:

    session (obtain or renew, stored for the workers) -> stream.open()
    -> connection_restored()  (the Sync Divergence Guard: positions re-read AFTER
       the stream is open, so nothing falls between; the fills' seq tells what the
       read already counted)
    -> loop: stream.receive() -> broker_events_handle(received_at=when it was read)

A session the venue refuses before its expiry (`SessionRefused`: a 401 at the
stream's open, or a worker's 401, which drops the stored session and is found at the
next scan) is dropped and the reconnect logs in again, rather than reopening with a
dead token until it expires. A transient error marks the account disconnected with
the reason, closes the stream and reconnects after a backoff (0.5 s doubling to
30 s, full jitter, never sooner than the venue's `retry_after`); a refused login
(permanent) waits until its credentials change or `PERMANENT_WAIT` passes.

Threads: everything that touches Django or a broker's blocking API runs on the
listener's own ThreadPoolExecutor (also the loop's default executor, so the
streams' `asyncio.to_thread` land there), never on the loop. It grows with the
number of accounts (two threads each, at least `MIN_THREADS`), so one slow
account's work never waits for a free thread behind another's. Each account's
work stays in order because its coroutine awaits each job before the next; a job
is never abandoned mid-way (a cancelled account waits for its running job), so a
restarted stream cannot overtake its predecessor's last batch. Django's
connections are per thread: every job starts and ends with
`close_old_connections()`, which applies CONN_MAX_AGE and the health checks
exactly as a request does, so a connection the server dropped is replaced rather
than failing every later job of that thread. Each thread holds at most one
connection per alias (default and the sim's `broker`).

Ownership: each account's stream belongs to one listener at a time, the holder of
the PostgreSQL session-level advisory lock (`LEASE_CLASS`, account id) on the
listener's own lease connection (not Django's: Django closes and reopens its
connections, which would drop the locks). Several listeners may run: each takes
what nobody holds. Why advisory locks and not a lease row with an expiry: the
lock is tied to the connection, so a listener that dies (SIGKILL, OOM, a lost
host) releases its accounts the moment PostgreSQL sees its connection close, with
no expiry to wait for and no clock to trust, and no heartbeat writes every second
per account; a lease row needs renewals and a takeover after its expiry, which
is either slow (a long expiry) or unsafe (a short one under a GC pause or a slow
disk). The listener checks its lease connection every second (`LEASE_CHECK_TIMEOUT`):
lost, every stream stops at once (another listener may own them already) and it
starts over. The caveat is a network partition: the server learns of a dead
client only by TCP, and without keepalives could hold its locks for many minutes
while the client, which noticed within seconds, has stopped; or (worse) a client
that does not check would stream on after the server released its locks. Hence
keepalives on both ends of the lease connection (`_LEASE_KEEPALIVES`: the server
drops it after ~10 s without an answer, `tcp_user_timeout` bounds unacknowledged
sends), while the listener stops its streams after at most ~4 s: the old owner is
gone before a new one can take the lock. Even an overlap would not send anything
twice: leader fills are stored once per broker fill id and follower fills are
settled once (see copier.services.stream_events), but each account's stream should
have one reader.

A listener that dies between reading a batch and storing it loses that batch from its
stream; the new owner's reconnect re-reads the positions, which include it: a missed move,
copied close-only (docs/rules.md#sync-divergence-guard), as for any fill made while no
stream was open.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import hashlib
import logging
import os
import random
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from django.db import close_old_connections, connections

from accounts.models import TradingAccount
from brokers.base import (
    BrokerAdapter,
    BrokerError,
    BrokerEvent,
    BrokerStream,
    ConnectionLost,
    PermanentBrokerError,
    Session,
    SessionRefused,
    TransientBrokerError,
)
from brokers.registry import adapter_for
from brokers.sessions import session_drop, session_load, session_save, sessions_stored
from brokers.sim import sim_announcements_close
from copier.models import CopyGroup, Follower
from copier.services.failed_exits import flatten_exits_open
from copier.services.stream_events import account_is_leader, broker_events_handle
from copier.services.sync_guard import connection_lost, connection_restored
from core import clock
from core.rawsql import database_conninfo

log = logging.getLogger(__name__)
T = TypeVar("T")

# The advisory lock class of account streams ("Copy"); the second key is the account id.
LEASE_CLASS = 0x436F7079
SCAN_SECONDS = 1.0
# A lease connection that does not answer this fast is taken for lost.
LEASE_CHECK_TIMEOUT = 3.0
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
# A login the venue refused is tried again after this long (or at once if edited).
PERMANENT_WAIT = 300.0
# Renew a session this long before it expires (at most half its remaining life).
RENEW_MARGIN = dt.timedelta(minutes=10)
RENEW_RETRY_SECONDS = 15.0
STREAM_CLOSE_TIMEOUT = 10.0
MIN_THREADS = 16
THREADS_PER_ACCOUNT = 2
_LEASE_KEEPALIVES: dict[str, str | int] = {
    "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
    # the server's end of the same connection, in this session only
    "options": "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2"
               " -c tcp_keepalives_count=3 -c tcp_user_timeout=10000",
}


def backoff_delay(attempt: int, retry_after: float | None = None, *,
                  rng: random.Random | None = None) -> float:
    """Seconds before reconnect attempt `attempt` (0 first): full jitter on a doubling cap.

    Full jitter spreads the reconnects of many accounts after a venue outage over the
    whole window instead of in waves; the venue's `retry_after` is a floor.
    """
    cap = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(attempt, 16))
    delay = (rng or random).uniform(0, cap)
    return max(delay, retry_after or 0.0)


def session_renew_wait(session: Session, now: dt.datetime) -> float:
    """Seconds until the session should be renewed (0: now)."""
    remaining = session.expires_at - now
    margin = min(RENEW_MARGIN, remaining / 2)
    return max((remaining - margin).total_seconds(), 0.0)


def accounts_wanted() -> dict[int, str]:
    """Account id -> identity of every account that needs a stream now: those of enabled
    groups, and the followers a flatten's exit waits on (a person's order: whatever the
    follower's or its group's mode, its connection is kept until the exit is done).

    The identity changes with what the stream depends on (broker, broker-side id,
    credentials, leader or follower), so that a change restarts the stream. It is a
    digest: the credentials are not kept in the listener's memory.
    """
    leaders = set(CopyGroup.objects.filter(enabled=True).values_list("leader_id", flat=True))
    followers = set(Follower.objects.filter(enabled=True, group__enabled=True)
                    .values_list("account_id", flat=True))
    followers |= flatten_exits_open() - leaders
    rows = TradingAccount.objects.filter(pk__in=leaders | followers).only(
        "id", "broker", "external_id", "credentials")
    return {a.pk: _identity(a, is_leader=a.pk in leaders) for a in rows}


def _identity(account: TradingAccount, *, is_leader: bool) -> str:
    text = "\0".join([account.broker, account.external_id, str(account.credentials or ""),
                      "leader" if is_leader else "follower"])
    return hashlib.sha256(text.encode()).hexdigest()


def stream_owner_mark(account_id: int, owner: str) -> None:
    """We hold the account's lease now: say so, and that it is not connected until our
    stream is (a listener that died left its last state on the row)."""
    account = TradingAccount.objects.filter(pk=account_id).first()
    if account is None:
        return
    if account.is_connected:
        previous = account.stream_owner or "no listener"
        connection_lost(account=account,
                        reason=f"stream taken over from {previous} by {owner}")
    TradingAccount.objects.filter(pk=account_id).update(stream_owner=owner[:128],
                                                        stream_owned_since=clock.now())


def stream_owner_clear(account_id: int, owner: str, reason: str) -> None:
    """Our stream of the account stopped: nobody streams it until another listener takes it."""
    account = TradingAccount.objects.filter(pk=account_id, stream_owner=owner[:128]).first()
    if account is None:
        return
    connection_lost(account=account, reason=reason)
    TradingAccount.objects.filter(pk=account_id, stream_owner=owner[:128]).update(
        stream_owner="", stream_owned_since=None)


def _django_job(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """A listener thread's unit of Django work, with a request's connection hygiene."""
    close_old_connections()
    try:
        return fn(*args, **kwargs)
    finally:
        close_old_connections()


class _ReopenStream(Exception):
    """The session was renewed with a new token this venue's open stream cannot use."""


@dataclass
class _Slot:
    """One owned account: its stream's task and what it was started for."""

    account_id: int
    identity: str
    task: asyncio.Task[None]


@dataclass
class _Pool:
    """The listener's threads; it counts them so that each can close its connections."""

    size: int
    executor: ThreadPoolExecutor = field(init=False)
    threads: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.executor = ThreadPoolExecutor(self.size, thread_name_prefix="listen",
                                           initializer=self._counted)

    def _counted(self) -> None:
        with self._lock:
            self.threads += 1

    def close(self) -> None:
        """Close every thread's Django connections, then stop the threads.

        One job per thread, each waiting at a barrier, so that every thread runs one.
        """
        count = self.threads
        if count:
            barrier = threading.Barrier(count)

            def closed() -> None:
                connections.close_all()
                with contextlib.suppress(threading.BrokenBarrierError):
                    barrier.wait(timeout=10)

            for _ in range(count):
                self.executor.submit(closed)
        self.executor.shutdown(wait=True)


class Listener:
    """One `copier_listen` process (see the module's docstring)."""

    def __init__(self, name: str | None = None, *, scan_seconds: float = SCAN_SECONDS,
                 heartbeat: Path | None = None) -> None:
        self.name = (name or f"{socket.gethostname()}:{os.getpid()}")[:128]
        self.scan_seconds = scan_seconds
        # touched after each turn that found the lease connection alive and scanned
        self.heartbeat = heartbeat
        self._slots: dict[int, _Slot] = {}
        self._lease: psycopg.AsyncConnection[Any] | None = None
        self._lease_attempt = 0
        self._pool = _Pool(MIN_THREADS)
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # The open streams that run on a stored session: set when it is found dropped.
        self._session_watch: dict[int, asyncio.Event] = {}

    # --- running ---------------------------------------------------------------------------
    @property
    def owned(self) -> set[int]:
        return set(self._slots)

    def stop(self) -> None:
        """Ask the listener to stop (a signal handler, or another thread)."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def run(self) -> None:
        """Scan and stream until stopped; then close every stream and release every lease."""
        self._loop = asyncio.get_running_loop()
        self._loop.set_default_executor(self._pool.executor)
        self._stop = asyncio.Event()
        log.info("listener %s started", self.name)
        try:
            while not self._stop.is_set():
                await self._turn()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.scan_seconds)
        finally:
            await self._shutdown()
            log.info("listener %s stopped", self.name)

    async def _turn(self) -> None:
        if self._lease is None and not await self._lease_connect():
            return
        if not await self._lease_alive():
            await self._all_dropped()
            return
        try:
            await self._scan()
        except (psycopg.Error, TimeoutError):
            await self._all_dropped()
            return
        except Exception:
            log.exception("listener %s: scan failed; trying again", self.name)
            return
        if self.heartbeat is not None:
            self.heartbeat.touch()

    async def _db(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run Django work on the listener's threads; a cancelled caller waits for it to end."""
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(self._pool.executor,
                                   functools.partial(_django_job, fn, *args, **kwargs))
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            while not job.done():  # its account's next work must not overtake it
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait({job})
            raise

    # --- leases ----------------------------------------------------------------------------
    async def _lease_connect(self) -> bool:
        conninfo = database_conninfo("default", application_name="copier_listen",
                                     **_LEASE_KEEPALIVES)
        try:
            self._lease = await asyncio.wait_for(
                psycopg.AsyncConnection.connect(conninfo, autocommit=True), LEASE_CHECK_TIMEOUT)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            delay = backoff_delay(self._lease_attempt)
            self._lease_attempt += 1
            log.warning("listener %s: no lease connection (%s); trying again in %.1f s",
                        self.name, type(exc).__name__, delay)
            if self._stop is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
            return False
        self._lease_attempt = 0
        log.info("listener %s: lease connection open", self.name)
        return True

    async def _lease_query(self, query: str, params: list[Any]) -> list[tuple[Any, ...]]:
        assert self._lease is not None
        lease = self._lease

        async def run() -> list[tuple[Any, ...]]:
            cursor = await lease.execute(query, params)
            return await cursor.fetchall()

        return await asyncio.wait_for(run(), LEASE_CHECK_TIMEOUT)

    async def _lease_alive(self) -> bool:
        try:
            await self._lease_query("SELECT 1", [])
        except (psycopg.Error, OSError, TimeoutError) as exc:
            log.error("listener %s: lease connection lost (%s); stopping every stream",
                      self.name, type(exc).__name__)
            return False
        return True

    async def _leases_take(self, account_ids: list[int]) -> list[int]:
        if not account_ids:
            return []
        rows = await self._lease_query(
            "SELECT id FROM unnest(%s::int[]) AS id WHERE pg_try_advisory_lock(%s, id)",
            [account_ids, LEASE_CLASS])
        return [row[0] for row in rows]

    async def _lease_release(self, account_id: int) -> None:
        await self._lease_query("SELECT pg_advisory_unlock(%s, %s)", [LEASE_CLASS, account_id])

    async def _lease_close(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(lease.close(), LEASE_CHECK_TIMEOUT)

    # --- the scan --------------------------------------------------------------------------
    async def _scan(self) -> None:
        wanted = await self._db(accounts_wanted)
        for account_id in sorted(set(self._slots) - set(wanted)):
            await self._release(account_id, "not in an enabled copy group, no flatten waiting")
        for account_id, identity in wanted.items():
            slot = self._slots.get(account_id)
            if slot is None:
                continue
            if slot.identity != identity:
                log.info("account %s: broker, credentials or role changed; restarting its "
                         "stream", account_id)
            elif slot.task.done():
                log.error("account %s: its stream's task ended; restarting it", account_id)
            else:
                continue
            await self._slot_stop(slot)
            self._slots[account_id] = self._slot_start(account_id, identity)
        taken = await self._leases_take(sorted(set(wanted) - set(self._slots)))
        for account_id in taken:
            await self._db(stream_owner_mark, account_id, self.name)
            self._slots[account_id] = self._slot_start(account_id, wanted[account_id])
        self._pool_fit()
        await self._sessions_check()

    async def _sessions_check(self) -> None:
        """Streams whose stored session a worker dropped (the venue refused it before its
        expiry) are told to log in again: one query per scan for all of them, where each
        stream asking on its own would cost a query per account and second."""
        watched = {a: e for a, e in self._session_watch.items() if not e.is_set()}
        if not watched:
            return
        stored = await self._db(sessions_stored, watched)
        for account_id, dropped in watched.items():
            if account_id not in stored:
                dropped.set()

    def _pool_fit(self) -> None:
        """Enough threads for every account at once; a bigger pool replaces a small one."""
        need = MIN_THREADS + THREADS_PER_ACCOUNT * len(self._slots)
        if need <= self._pool.size:
            return
        old, self._pool = self._pool, _Pool(max(need, 2 * self._pool.size))
        if self._loop is not None:
            self._loop.set_default_executor(self._pool.executor)
        threading.Thread(target=old.close, name="listen-pool-close", daemon=True).start()

    def _slot_start(self, account_id: int, identity: str) -> _Slot:
        task = asyncio.get_running_loop().create_task(self._account_run(account_id),
                                                      name=f"stream-{account_id}")
        return _Slot(account_id, identity, task)

    async def _slot_stop(self, slot: _Slot) -> None:
        slot.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await slot.task

    async def _release(self, account_id: int, reason: str) -> None:
        """Stop our stream of the account, say so on its row, then let go of its lease."""
        slot = self._slots.pop(account_id)
        await self._slot_stop(slot)
        log.info("account %s: stream stopped (%s)", account_id, reason)
        try:
            await self._db(stream_owner_clear, account_id, self.name, reason)
        finally:
            await self._lease_release(account_id)

    async def _all_dropped(self) -> None:
        """The lease connection is gone: another listener may own our accounts now."""
        slots, self._slots = list(self._slots.values()), {}
        for slot in slots:
            slot.task.cancel()
        await asyncio.gather(*(s.task for s in slots), return_exceptions=True)
        await self._lease_close()

    async def _shutdown(self) -> None:
        try:
            if self._lease is not None:
                for account_id in sorted(self._slots):
                    try:
                        await self._release(account_id, f"listener {self.name} stopped")
                    except (psycopg.Error, TimeoutError):
                        log.warning("listener %s: lease connection lost while stopping",
                                    self.name)
                        break
            await self._all_dropped()
            await sim_announcements_close()
        finally:
            self._pool.close()  # the last thing the loop does: blocking here is fine

    # --- one account -----------------------------------------------------------------------
    async def _account_run(self, account_id: int) -> None:
        """Keep one account's stream open until cancelled, reconnecting after each loss."""
        attempt = 0
        account: TradingAccount | None = None

        def connected() -> None:
            nonlocal attempt
            attempt = 0

        while True:
            try:
                if account is None:
                    account = await self._db(TradingAccount.objects.get, pk=account_id)
                await self._stream_run(account, on_connected=connected)
                continue
            except _ReopenStream:
                continue
            except TransientBrokerError as exc:
                reason, delay = exc.message, backoff_delay(attempt, exc.retry_after)
                attempt += 1
            except PermanentBrokerError as exc:
                reason, delay = exc.message, PERMANENT_WAIT
            except Exception as exc:
                log.exception("account %s: listener error", account_id)
                reason, delay = f"listener error: {type(exc).__name__}", backoff_delay(attempt)
                attempt += 1
            name = f"account {account_id}" if account is None else account.name
            if account is not None:
                try:
                    await self._db(connection_lost, account=account, reason=reason)
                except Exception:
                    log.exception("%s: could not mark it disconnected", name)
            log.warning("%s: stream down (%s); reconnecting in %.1f s", name, reason, delay)
            await asyncio.sleep(delay)

    async def _stream_run(self, account: TradingAccount, *,
                          on_connected: Callable[[], None]) -> None:
        adapter = await self._db(adapter_for, account)
        session = await self._db(self._session_ready, account, adapter)
        stream = adapter.stream(session)
        renewer: asyncio.Task[None] | None = None
        dropped = asyncio.Event()
        try:
            await stream.open()
            await self._db(connection_restored, account=account)
            is_leader = await self._db(account_is_leader, account)
            log.info("%s connected (stream owner %s)", account.name, self.name)
            on_connected()
            if session is not None:
                self._session_watch[account.pk] = dropped
                renewer = asyncio.get_running_loop().create_task(
                    self._session_keep(account, adapter, stream, dropped),
                    name=f"renew-{account.pk}")
            while True:
                events = await self._receive(stream, renewer)
                received_at = clock.now()
                await self._db(broker_events_handle, account=account, events=events,
                               received_at=received_at, is_leader=is_leader)
                lost = [e for e in events if isinstance(e, ConnectionLost)]
                if lost:
                    raise TransientBrokerError(lost[-1].reason or "the venue closed the stream")
        except SessionRefused:
            # Refused long before its expiry: kept, it would be refused at every reopen
            # until then. Dropped (if still the stored one), the next turn logs in.
            if stream.session is not None:
                await self._db(session_drop, account.pk, token=stream.session.token)
            raise
        finally:
            if self._session_watch.get(account.pk) is dropped:
                del self._session_watch[account.pk]
            if renewer is not None:
                renewer.cancel()
                with contextlib.suppress(BaseException):
                    await renewer
            await self._stream_close(account, stream)

    async def _receive(self, stream: BrokerStream,
                       renewer: asyncio.Task[None] | None) -> list[BrokerEvent]:
        """The stream's next batch; raises `_ReopenStream` when the renewal asks for it."""
        if renewer is None:
            return await stream.receive()
        receive = asyncio.ensure_future(stream.receive())
        try:
            done, _ = await asyncio.wait({receive, renewer},
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not receive.done():
                receive.cancel()
                with contextlib.suppress(BaseException):
                    await receive
        if receive in done:
            return receive.result()
        renewer.result()  # a refused renewal raises here
        raise _ReopenStream

    async def _stream_close(self, account: TradingAccount, stream: BrokerStream) -> None:
        try:
            await asyncio.wait_for(stream.close(), STREAM_CLOSE_TIMEOUT)
        except (BrokerError, OSError, TimeoutError) as exc:
            log.warning("%s: closing the stream failed (%s)", account.name, type(exc).__name__)

    # --- sessions --------------------------------------------------------------------------
    def _session_ready(self, account: TradingAccount, adapter: BrokerAdapter) -> Session | None:
        """The account's session, logged in or renewed if needed, stored for the workers."""
        current = session_load(account.pk, fresh=True)
        session = adapter.session_obtain(current)
        if session is not None and session != current:
            session_save(account.pk, session, obtained_by=self.name)
        return session

    def _session_renewed(self, account: TradingAccount, adapter: BrokerAdapter,
                         current: Session) -> Session | None:
        session = adapter.session_obtain(current)
        if session is not None and session != current:
            session_save(account.pk, session, obtained_by=self.name)
            log.info("%s: session renewed until %s", account.name,
                     session.expires_at.isoformat())
        return session

    async def _session_keep(self, account: TradingAccount, adapter: BrokerAdapter,
                            stream: BrokerStream, dropped: asyncio.Event) -> None:
        """Renew the stream's session before it expires; returns when the stream must reopen.

        A transient failure is retried (the session is still good for a while); a
        refused renewal raises PermanentBrokerError. `dropped` is set by the scan when a
        worker dropped the stored session (the venue refused it): SessionRefused, and
        the account's next turn logs in again.
        """
        session: Session | None = stream.session
        while session is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(dropped.wait(), session_renew_wait(session, clock.now()))
            if dropped.is_set():
                raise SessionRefused(f"{account.name}: the venue refused the session before "
                                     "its expiry (a worker's 401); logging in again")
            try:
                renewed = await self._db(self._session_renewed, account, adapter, session)
            except TransientBrokerError as exc:
                log.warning("%s: session renewal failed (%s); trying again", account.name,
                            exc.message)
                await asyncio.sleep(max(RENEW_RETRY_SECONDS, exc.retry_after or 0))
                continue
            token_changed = renewed is not None and renewed.token != session.token
            stream.session = session = renewed  # None: the venue has no login after all
            if token_changed and stream.reopen_on_new_session:
                return
        await asyncio.Event().wait()  # nothing to renew: never asks for a reopen
