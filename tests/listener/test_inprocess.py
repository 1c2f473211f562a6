"""The listener's parts in this process: backoff, renewal timing, leases, the sim's wake-up."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from accounts.models import TradingAccount
from brokers.base import Session, TransientBrokerError
from brokers.sim import FALLBACK_POLL_SECONDS, SimBroker
from copier.stream.process import (
    BACKOFF_MAX,
    LEASE_CLASS,
    _Pool,
    backoff_delay,
    session_renew_wait,
)
from core.rawsql import database_conninfo
from tests.factories import account, group
from tests.helpers import wait_until
from tests.listener.helpers import listener_thread

T0 = dt.datetime(2026, 3, 2, 15, 0, tzinfo=dt.UTC)


def test_backoff_is_full_jitter_on_a_doubling_cap_and_honours_retry_after():
    rng = random.Random(7)
    for attempt, cap in [(0, 0.5), (1, 1.0), (3, 4.0), (6, BACKOFF_MAX), (60, BACKOFF_MAX)]:
        delays = [backoff_delay(attempt, rng=rng) for _ in range(300)]
        assert 0 <= min(delays) < cap / 4  # spread over the whole window, not in waves
        assert cap * 3 / 4 < max(delays) <= cap
    assert backoff_delay(0, retry_after=12.0, rng=rng) == 12.0


def test_a_session_is_renewed_before_it_expires():
    session = Session(token="t", expires_at=T0 + dt.timedelta(minutes=90))
    assert session_renew_wait(session, T0) == 80 * 60  # ten minutes before
    short = Session(token="t", expires_at=T0 + dt.timedelta(minutes=4))
    assert session_renew_wait(short, T0) == 120  # at half its remaining life
    assert session_renew_wait(short, T0 + dt.timedelta(minutes=5)) == 0


def _owner(acct: TradingAccount) -> str:
    return TradingAccount.objects.get(pk=acct.pk).stream_owner


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_an_account_whose_lease_is_held_elsewhere_is_left_alone_until_it_is_released():
    leader, follower = account("L"), account("F1")
    group("g", leader, {follower: "1"})
    with psycopg.connect(database_conninfo(), autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s, %s)", [LEASE_CLASS, leader.pk])
        with listener_thread("A") as a:
            wait_until(lambda: _owner(follower) == "A", what="A took the free account")
            time.sleep(0.6)  # a few scans
            assert a.owned == {follower.pk}
            assert _owner(leader) == ""
            other.close()  # its holder is gone: PostgreSQL releases the lock
            wait_until(lambda: _owner(leader) == "A", what="A took the released account")
            wait_until(lambda: TradingAccount.objects.get(pk=leader.pk).is_connected,
                       what="A connected it")
            held = psycopg.connect(database_conninfo(), autocommit=True)
            with held:
                got = held.execute("SELECT pg_try_advisory_lock(%s, %s)",
                                   [LEASE_CLASS, leader.pk]).fetchone()
                assert got == (False,)  # one owner at a time
    # stopped: the leases are free and the rows say nobody streams them
    with psycopg.connect(database_conninfo(), autocommit=True) as after:
        got = after.execute("SELECT pg_try_advisory_lock(%s, %s)",
                            [LEASE_CLASS, leader.pk]).fetchone()
        assert got == (True,)
    assert (_owner(leader), _owner(follower)) == ("", "")
    assert not TradingAccount.objects.get(pk=leader.pk).is_connected


@pytest.mark.django_db(transaction=True, databases="__all__")
@pytest.mark.django_db(transaction=True, databases="__all__")
def test_a_second_listener_takes_over_when_the_first_stops():
    leader, follower = account("L"), account("F1")
    group("g", leader, {follower: "1"})
    with contextlib.ExitStack() as first:
        first.enter_context(listener_thread("A"))
        wait_until(lambda: _owner(leader) == _owner(follower) == "A", what="A owns both")
        with listener_thread("B") as b:
            time.sleep(0.6)  # B scans and finds both held
            assert b.owned == set()
            first.close()  # A stops: marks them disconnected, then releases the leases
            wait_until(lambda: b.owned == {leader.pk, follower.pk}, what="B took both")
            wait_until(lambda: _owner(leader) == _owner(follower) == "B", what="B's name")
            wait_until(lambda: TradingAccount.objects.get(pk=leader.pk).is_connected,
                       what="B connected them")


def _in_loop(fn: Callable[[], Any]) -> Any:
    """Run a coroutine function on a loop whose threads close their connections at the end."""
    pool = _Pool(4)

    async def main() -> Any:
        asyncio.get_running_loop().set_default_executor(pool.executor)
        try:
            return await fn()
        finally:
            pool.close()

    return asyncio.run(main())


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_a_sim_stream_is_woken_by_the_fills_notification_not_by_its_fallback_poll():
    sim = SimBroker(account("L"))

    async def scenario() -> tuple[float, list[str], float]:
        from brokers.sim import sim_announcements_close

        stream = sim.stream(None)
        await stream.open()
        with pytest.raises(TimeoutError):  # nothing to read: it waits, never returns []
            await asyncio.wait_for(stream.receive(), 0.3)
        receive = asyncio.ensure_future(stream.receive())
        await asyncio.sleep(0.2)
        placed = time.monotonic()
        await asyncio.to_thread(sim.execute_fill, "ES", "buy", 1, "f-1")
        events = await asyncio.wait_for(receive, 5)
        woken_after = time.monotonic() - placed
        await asyncio.to_thread(sim.set_reachable, False)
        started = time.monotonic()
        with pytest.raises(TransientBrokerError, match="outage"):
            await asyncio.wait_for(stream.receive(), 5)
        outage_after = time.monotonic() - started
        await stream.close()
        await sim_announcements_close()
        return woken_after, [e.fill_id for e in events], outage_after

    woken_after, fills, outage_after = _in_loop(scenario)
    assert fills == ["f-1"]
    assert woken_after < FALLBACK_POLL_SECONDS / 2, woken_after
    assert outage_after < FALLBACK_POLL_SECONDS / 2, outage_after
