"""Redis and PostgreSQL restarted in the middle of a stream of leader events."""

from __future__ import annotations

import random
import time

import pytest
from django.db import connections

from copier.models import LeaderEvent
from tests.faults.common import build_world, check_outcome, drain, stream_fill

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"), pytest.mark.slow]


def test_redis_down_mid_stream_events_are_stored_and_copied_when_it_is_back(
    worker_process, redis_server, capsys
):
    rng = random.Random(7)
    leader, followers = build_world()
    final = {"ES": 0, "NQ": 0}
    worker_process.start()
    for _ in range(10):
        stream_fill(leader, rng, final)
    redis_server.stop()
    outage_start = LeaderEvent.objects.count()
    for _ in range(5):  # publishing fails: the events must still be stored
        stream_fill(leader, rng, final)
    stored_during_outage = LeaderEvent.objects.count() - outage_start
    assert stored_during_outage == 5
    assert LeaderEvent.objects.filter(status="received").count() >= 5
    redis_server.restart()
    time.sleep(rng.uniform(0.5, 1.5))
    for _ in range(10):
        stream_fill(leader, rng, final)
    rounds = drain()
    figures = check_outcome(followers, final)
    with capsys.disabled():
        print(f"\n[redis-restart] stored_during_outage={stored_during_outage} "
              f"redispatch_rounds={rounds} " + " ".join(f"{k}={v}" for k, v in figures.items()))


def test_postgresql_restarted_mid_stream_nothing_lost_or_doubled(
    worker_process, pg_server, capsys
):
    rng = random.Random(11)
    leader, followers = build_world()
    final = {"ES": 0, "NQ": 0}
    worker_process.start()
    for _ in range(15):
        stream_fill(leader, rng, final)
    connections.close_all()
    pg_server.restart()
    connections.close_all()
    for _ in range(15):
        stream_fill(leader, rng, final)
    rounds = drain()
    assert worker_process.alive, "the worker died with the database"
    figures = check_outcome(followers, final)
    with capsys.disabled():
        print(f"\n[postgres-restart] redispatch_rounds={rounds} "
              + " ".join(f"{k}={v}" for k, v in figures.items()))


def test_redis_down_a_guarded_accounts_fill_still_goes_through_the_stream(redis_server):
    """The guard read a fill publishes cannot be sent while Redis is away: the stream goes
    on, the fill is recorded, and the periodic check reads the account once it is back."""
    from decimal import Decimal

    from brokers.sim import SimBroker
    from copier.models import AccountGuard
    from copier.services import guard
    from copier.services.stream_events import broker_events_pump
    from core.trading import Side
    from tests.factories import account, connect, group

    leader, f = account("L"), account("F")
    group("g", leader, {f: "1"})
    connect(leader, f)
    AccountGuard.objects.create(account=f, starting_balance=Decimal(50000),
                                drawdown=Decimal(2000))
    redis_server.stop()
    try:
        SimBroker(f).execute_fill("MNQ", Side.BUY, 1, price="20000")  # by hand
        assert broker_events_pump(account=f) == 1
    finally:
        redis_server.restart()
    assert AccountGuard.objects.get(account=f).read_at is None
    assert guard.guards_check().read == 1
    assert AccountGuard.objects.get(account=f).equity == Decimal("50000.00")
