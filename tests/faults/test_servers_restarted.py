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
