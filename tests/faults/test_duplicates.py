"""Duplicate and out-of-order deliveries of leader fills, event tasks and retry tasks."""

from __future__ import annotations

import itertools
import random
import threading

import pytest
from django.db import connections, transaction

from brokers.sim import SimBroker
from copier import tasks
from copier.models import FailedExit, LeaderEvent, Order
from copier.services.ingest import FillInput, leader_fill_ingest
from tests.factories import broker_position, connect, leader_fill
from tests.faults.common import build_world, check_outcome, drain
from tests.helpers import wait_until

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"), pytest.mark.slow]


def _store_without_publishing(leader, rng, final) -> int:
    symbol, side, qty = rng.choice(["ES", "NQ"]), rng.choice(["buy", "sell"]), rng.randint(1, 3)
    with transaction.atomic():
        event = leader_fill_ingest(account=leader,
                                   fill=FillInput(f"f{rng.random()}", symbol, side, qty))
        transaction.get_connection().run_on_commit.clear()
    final[symbol] += qty if side == "buy" else -qty
    return event.pk


def test_event_tasks_delivered_three_times_in_random_order_copy_once(worker_process, capsys):
    rng = random.Random(5)
    leader, followers = build_world()
    final = {"ES": 0, "NQ": 0}
    ids = [_store_without_publishing(leader, rng, final) for _ in range(25)]
    deliveries = ids * 3
    rng.shuffle(deliveries)
    for event_id in deliveries:
        tasks.process_event.delay(event_id)
    worker_process.start()
    drain()
    figures = check_outcome(followers, final)
    with capsys.disabled():
        print(f"\n[duplicates] deliveries={len(deliveries)} "
              + " ".join(f"{k}={v}" for k, v in figures.items()))


def test_the_same_leader_fill_from_many_threads_is_one_event(worker_process):
    leader, followers = build_world()
    worker_process.start()
    errors: list[BaseException] = []

    def deliver() -> None:
        try:
            leader_fill_ingest(account=leader, fill=FillInput("same-fill", "ES", "buy", 2))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert LeaderEvent.objects.count() == 1
    drain()
    check_outcome(followers, {"ES": 2, "NQ": 0})


def test_different_fills_from_many_threads_chain_one_after_the_other(worker_process):
    """Ingestion is one statement that locks the leader's position row: a statement that
    waited for the lock must read P0 as the one before it left it, or the chain breaks."""
    leader, followers = build_world()
    worker_process.start()
    errors: list[BaseException] = []
    fills = [(f"t{t}-{i}", "ES", "buy" if (t + i) % 3 else "sell", 1 + (t * i) % 3)
             for t in range(8) for i in range(10)]

    def deliver(mine: list[tuple[str, str, str, int]]) -> None:
        try:
            for fill in mine:
                leader_fill_ingest(account=leader, fill=FillInput(*fill))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=deliver, args=(fills[t::8],)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    events = list(LeaderEvent.objects.order_by("id"))
    assert len(events) == len(fills)
    assert events[0].p0 == 0
    assert events[0].prev_event_id is None
    for before, after in itertools.pairwise(events):
        assert (after.p0, after.prev_event_id) == (before.p1, before.pk)
    final = sum(qty if side == "buy" else -qty for _, _, side, qty in fills)
    assert events[-1].p1 == final
    drain()
    check_outcome(followers, {"ES": final, "NQ": 0})


def test_retry_tasks_delivered_many_times_send_each_exit_once(worker_process):
    leader, followers = build_world()
    f1 = next(a for a in followers if a.name == "F1")
    worker_process.start()
    leader_fill(leader, "ES", "buy", 3)
    drain()
    SimBroker(f1).set_reachable(False)
    connect(f1)
    leader_fill(leader, "ES", "sell", 3)
    drain()
    fe = FailedExit.objects.get(account=f1)
    SimBroker(f1).set_reachable(True)
    connect(f1)  # reconnect: the queued exit is sent at once...
    for _ in range(20):  # ...and stray copies of its retry task arrive too
        tasks.retry_failed_exit.delay(fe.pk)
    wait_until(lambda: FailedExit.objects.get(pk=fe.pk).status == "done", timeout=30,
               what="queued exit done")
    wait_until(lambda: not _queue_busy(), timeout=30, what="retry copies consumed")
    assert Order.objects.filter(failed_exit=fe, status="filled").count() == 1
    assert broker_position(f1, "ES") == 0


def _queue_busy() -> bool:
    import redis
    from django.conf import settings

    return bool(redis.Redis.from_url(settings.REDIS_URL).llen("celery"))
