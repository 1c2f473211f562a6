"""Concurrent leader events through a real Celery worker (threads, concurrency 4) on Redis.

The worker takes tasks in whatever order Redis and its threads give them;
per-(follower, symbol) row locks and watermarks must make the outcome the
same as a sequential run.
"""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from brokers.models import SimOrder
from copier.domain import rules
from copier.models import Decision, LeaderEvent
from core.trading import signed
from tests.factories import account, broker_position, connect, copier_position, group, leader_fill
from tests.helpers import wait_until

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"), pytest.mark.worker]


@pytest.mark.parametrize("batch_size", [1, 25])
def test_concurrent_events_end_where_a_sequential_run_ends(celery_worker, settings, batch_size):
    settings.COPIER_BATCH_SIZE = batch_size
    rng = random.Random(batch_size)
    leader = account("L")
    followers = {account("F1"): "1", account("F2"): "2", account("F3"): "0.5",
                 account("R1"): "1"}
    normal = {a: m for a, m in followers.items() if a.name != "R1"}
    group("g", leader, normal)
    group("r", leader, {a: m for a, m in followers.items() if a.name == "R1"}, reverse=True)
    connect(leader, *followers)
    final = {"ES": 0, "NQ": 0}
    for _ in range(30):
        symbol = rng.choice(["ES", "NQ"])
        side = rng.choice(["buy", "sell"])
        qty = rng.randint(1, 3)
        leader_fill(leader, symbol, side, qty)
        final[symbol] += signed(side, qty)
    wait_until(lambda: not LeaderEvent.objects.exclude(status="done").exists(), timeout=60)
    for follower, multiplier in followers.items():
        reverse = follower.name == "R1"
        for symbol, p in final.items():
            expected = rules.expected_position(p, Decimal(multiplier), reverse)
            assert broker_position(follower, symbol) == expected, (follower.name, symbol)
            assert copier_position(follower, symbol) == expected
    assert Decision.objects.count() == 30 * len(followers)
    assert set(Decision.objects.values_list("reason", flat=True)) <= {"copied", "no_change"}
    cids = list(SimOrder.objects.using("broker").exclude(client_order_id=None)
                .values_list("client_order_id", flat=True))
    assert len(cids) == len(set(cids))
