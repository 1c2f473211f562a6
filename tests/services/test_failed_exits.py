"""The Failed Exit Queue: backoff, capping, claims against duplicate and early deliveries,
holding while paused, rejection, and the seven-day retention."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from brokers.sim import SimBroker
from copier import tasks
from copier.models import FailedExit, Order, Quarantine
from copier.services import failed_exits
from copier.services.stream_events import broker_events_pump
from core import clock
from tests.factories import (
    T0,
    account,
    broker_position,
    connect,
    copier_position,
    group,
    leader_fill,
)

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture(autouse=True)
def controlled(eager_tasks, frozen_clock):
    """Tasks in-process, the clock in the test's hands."""


@pytest.fixture
def queued():
    """F1 holds 3 ES; the leader's exit fails at the broker: one pending failed exit."""
    leader, f1 = account("L"), account("F1")
    group("g", leader, {f1: "1"})
    connect(leader, f1)
    leader_fill(leader, "ES", "buy", 3)
    SimBroker(f1).inject(fail=1)
    leader_fill(leader, "ES", "sell", 3)
    return f1, FailedExit.objects.get()


def at(seconds: float) -> None:
    clock.advance_to(T0 + dt.timedelta(seconds=seconds))


def test_first_transient_failure_counts_one_attempt_due_five_seconds_later(queued):
    _, fe = queued
    assert (fe.status, fe.attempts, fe.qty, fe.side) == ("pending", 1, 3, "sell")
    assert fe.next_attempt_at == T0 + dt.timedelta(seconds=5)


def test_backoff_doubles_and_is_capped_at_an_hour(queued):
    f1, fe = queued
    SimBroker(f1).inject(fail=20)
    delays = []
    for _ in range(12):
        clock.advance_to(fe.next_attempt_at)
        before = fe.next_attempt_at
        assert tasks.retry_failed_exit(fe.pk) == "pending"
        fe.refresh_from_db()
        delays.append((fe.next_attempt_at - before).total_seconds())
    assert delays == [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600, 3600]
    assert fe.attempts == 13


def test_early_or_duplicate_delivery_does_nothing(queued):
    f1, fe = queued
    at(4)
    assert tasks.retry_failed_exit(fe.pk) is None  # early
    at(5)
    assert tasks.retry_failed_exit(fe.pk) == "done"
    assert tasks.retry_failed_exit(fe.pk) is None  # duplicate
    assert Order.objects.filter(failed_exit=fe).count() == 1
    assert broker_position(f1, "ES") == 0


def test_retry_is_capped_to_what_the_follower_still_holds(queued):
    f1, fe = queued
    SimBroker(f1).execute_fill("ES", "sell", 2)  # a manual partial exit
    broker_events_pump(account=f1)
    at(5)
    assert tasks.retry_failed_exit(fe.pk) == "done"
    fe.refresh_from_db()
    assert fe.qty == 1
    assert broker_position(f1, "ES") == copier_position(f1, "ES") == 0


def test_nothing_left_to_close_resolves_without_an_order(queued):
    f1, fe = queued
    SimBroker(f1).execute_fill("ES", "sell", 3)
    broker_events_pump(account=f1)
    at(5)
    assert tasks.retry_failed_exit(fe.pk) == "resolved"
    assert not Order.objects.filter(failed_exit=fe).exists()


def test_rejection_at_a_retry_keeps_the_entry_and_quarantines(queued):
    f1, fe = queued
    SimBroker(f1).inject(reject=1)
    at(5)
    assert tasks.retry_failed_exit(fe.pk) == "rejected"
    fe.refresh_from_db()
    assert "rejected" in fe.last_error
    assert Quarantine.objects.filter(account=f1, symbol="ES", lifted_at__isnull=True).exists()
    at(10_000)
    assert tasks.retry_failed_exit(fe.pk) is None  # never retried


def test_paused_account_holds_its_queued_exits(queued):
    f1, fe = queued
    f1.copy_paused = True
    f1.save()
    at(60)
    assert failed_exits.failed_exits_due() == []
    assert tasks.retry_failed_exit(fe.pk) is None
    fe.refresh_from_db()
    assert (fe.status, fe.attempts) == ("pending", 1)


def test_periodic_dispatch_sends_due_retries_whose_task_was_lost(queued):
    _f1, fe = queued
    at(5)
    assert failed_exits.failed_exits_dispatch_due() == [fe.pk]
    fe.refresh_from_db()
    assert fe.status == "done"


def test_a_claim_left_in_flight_by_a_dead_worker_is_taken_over_after_a_minute(queued):
    f1, fe = queued
    at(5)
    FailedExit.objects.filter(pk=fe.pk).update(status="in_flight", in_flight_since=clock.now())
    assert tasks.retry_failed_exit(fe.pk) is None  # still someone else's
    at(66)
    assert tasks.retry_failed_exit(fe.pk) == "done"
    assert broker_position(f1, "ES") == 0


def test_entries_older_than_seven_days_are_pruned_and_pending_ones_logged(queued, caplog):
    f1, _fe = queued
    FailedExit.objects.create(account=f1, symbol="NQ", side="buy", qty=1, first_failed_at=T0,
                              next_attempt_at=T0, status="done", updated_at=T0)
    at(7 * 86400 - 1)
    assert failed_exits.failed_exits_prune() == 0
    at(7 * 86400 + 1)
    with caplog.at_level(logging.ERROR):
        assert failed_exits.failed_exits_prune() == 2
    assert "abandoned" in caplog.text
    assert not FailedExit.objects.exists()


def test_a_settled_exit_is_not_moved_again_by_its_orders_late_answer(queued):
    """A filled or rejected order settles its queued exit only while the exit's table allows:
    an exit resolved meanwhile stays resolved, and nothing is quarantined for it."""
    from copier.services.placement import order_failed_exit_settle

    f1, fe = queued
    FailedExit.objects.filter(pk=fe.pk).update(status=FailedExit.Status.RESOLVED)
    fe.refresh_from_db()
    order = Order(client_order_id="fx-late", account=f1, symbol="ES", side="sell", qty=3,
                  kind="exit", status=Order.Status.REJECTED, message="late", failed_exit=fe)
    assert order_failed_exit_settle(order) == ""
    fe.refresh_from_db()
    assert fe.status == FailedExit.Status.RESOLVED
    assert not Quarantine.objects.filter(account=f1).exists()
