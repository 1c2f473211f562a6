"""The copy engine's money-safety mechanics, called directly (no broker for tasks needed).

Tasks run eagerly here: these tests are about idempotency and ordering in
the database, not delivery. Delivery, crashes and concurrency are proven
through a real worker in tests/tasks.
"""

from __future__ import annotations

import pytest
from django.db import transaction

from brokers.models import SimOrder
from brokers.sim import SimBroker
from copier import tasks
from copier.models import Decision, FailedExit, Follower, LeaderEvent, Order
from copier.services import engine
from copier.services.ingest import FillInput, events_redispatch, leader_fill_ingest
from copier.services.stream_events import follower_fill_record
from tests.factories import (
    account,
    broker_position,
    connect,
    copier_position,
    group,
    leader_fill,
)

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"),
              pytest.mark.usefixtures("eager_tasks")]


@pytest.fixture
def world():
    leader, f1, f2 = account("L"), account("F1"), account("F2")
    group("g", leader, {f1: "1", f2: "2"})
    connect(leader, f1, f2)
    return leader, f1, f2


def _ingest_without_processing(leader, fill_id, side, qty, symbol="ES"):
    """Store an event as ingestion does, but lose its publish (a crash right after commit)."""
    with transaction.atomic():
        event = leader_fill_ingest(account=leader, fill=FillInput(fill_id, symbol, side, qty))
        transaction.get_connection().run_on_commit.clear()
    return event


def test_a_repeated_event_task_places_nothing_new(world):
    leader, f1, f2 = world
    leader_fill(leader, "ES", "buy", 2)
    event = LeaderEvent.objects.get()
    tasks.process_event(event.pk)
    tasks.process_event(event.pk)
    assert Order.objects.count() == 2
    assert (broker_position(f1, "ES"), broker_position(f2, "ES")) == (2, 4)
    assert Decision.objects.count() == 2
    event.refresh_from_db()
    assert event.status == LeaderEvent.Status.DONE


def test_duplicate_leader_fill_changes_nothing(world):
    leader, f1, _ = world
    leader_fill(leader, "ES", "buy", 1, fill_id="x1")
    again = leader_fill_ingest(account=leader, fill=FillInput("x1", "ES", "buy", 1))
    assert again is None
    assert LeaderEvent.objects.count() == 1
    assert copier_position(leader, "ES") == 1
    assert broker_position(f1, "ES") == 1


def test_a_late_task_for_an_earlier_event_finds_it_decided_in_order(world):
    """Event 2's task runs first: it decides event 1 first, then 2; event 1's task does nothing."""
    leader, f1, f2 = world
    e1 = _ingest_without_processing(leader, "a", "buy", 3)
    e2 = _ingest_without_processing(leader, "b", "sell", 1)
    tasks.process_event(e2.pk)
    tasks.process_event(e1.pk)
    assert (broker_position(f1, "ES"), broker_position(f2, "ES")) == (2, 4)
    reasons = list(Decision.objects.order_by("event_id", "account__name")
                   .values_list("event_id", "account__name", "reason"))
    assert reasons == [(e1.pk, "F1", "copied"), (e1.pk, "F2", "copied"),
                       (e2.pk, "F1", "copied"), (e2.pk, "F2", "copied")]


def test_stored_but_never_enqueued_event_is_redispatched(world):
    leader, f1, _ = world
    event = _ingest_without_processing(leader, "lost", "buy", 1)
    assert events_redispatch(older_than_seconds=0) == [event.pk]
    assert broker_position(f1, "ES") == 1
    event.refresh_from_db()
    assert event.status == LeaderEvent.Status.DONE
    assert events_redispatch(older_than_seconds=0) == []


def test_crash_after_the_broker_filled_is_resent_under_the_same_id_and_filled_once(world):
    """The worker dies after the sim executed but before our transaction committed."""
    leader, f1, f2 = world
    event = _ingest_without_processing(leader, "c", "buy", 1)
    started = engine.event_start(event_id=event.pk)
    with pytest.raises(RuntimeError), transaction.atomic():
        engine.seats_copy(event=started.event, seats=started.batches[0])
        raise RuntimeError("SIGKILL")
    assert Order.objects.count() == 0  # our side rolled back...
    assert broker_position(f1, "ES") == 1  # ...the broker's did not
    tasks.process_event(event.pk)  # redelivery: runs > 1, orders looked up first
    assert (broker_position(f1, "ES"), broker_position(f2, "ES")) == (1, 2)
    assert (copier_position(f1, "ES"), copier_position(f2, "ES")) == (1, 2)
    cids = list(SimOrder.objects.using("broker").filter(client_order_id__isnull=False)
                .values_list("client_order_id", flat=True))
    assert len(cids) == len(set(cids)) == 2


def test_timeout_on_an_entry_is_looked_up_and_counted_once(world):
    leader, f1, _ = world
    SimBroker(f1).inject(timeout=1)
    leader_fill(leader, "ES", "buy", 2)
    order = Order.objects.get(account=f1)
    assert order.status == Order.Status.FILLED
    assert copier_position(f1, "ES") == broker_position(f1, "ES") == 2


def test_our_own_fills_on_the_stream_are_not_counted_twice(world):
    leader, f1, _ = world
    leader_fill(leader, "ES", "buy", 1)
    from copier.services.stream_events import broker_events_pump

    f1.refresh_from_db()
    broker_events_pump(account=f1)  # delivers the copier's own fill
    assert copier_position(f1, "ES") == 1


def test_manual_follower_fill_moves_the_confirmed_position(world):
    _, f1, _ = world
    SimBroker(f1).execute_fill("NQ", "sell", 2)
    from copier.services.stream_events import broker_events_pump

    broker_events_pump(account=f1)
    assert copier_position(f1, "NQ") == -2


def test_exit_to_a_disconnected_follower_is_queued_not_lost(world):
    leader, f1, f2 = world
    leader_fill(leader, "ES", "buy", 1)
    SimBroker(f1).set_reachable(False)
    connect(f1)  # the listener notices the outage
    leader_fill(leader, "ES", "sell", 1)
    fe = FailedExit.objects.get()
    assert (fe.account, fe.side, fe.qty, fe.status) == (f1, "sell", 1, "pending")
    assert fe.attempts <= 1  # due at once; an attempt while still down fails and counts
    assert Decision.objects.get(account=f1, event__fill_id__isnull=False,
                                event__side="sell").reason == "exit_queued"
    assert broker_position(f2, "ES") == 0
    SimBroker(f1).set_reachable(True)
    connect(f1)  # reconnect: queued exits at once
    fe.refresh_from_db()
    assert fe.status == FailedExit.Status.DONE
    assert broker_position(f1, "ES") == 0


def test_entries_to_a_disconnected_follower_are_dropped_with_a_reason(world):
    leader, f1, _ = world
    SimBroker(f1).set_reachable(False)
    connect(f1)
    leader_fill(leader, "ES", "buy", 1)
    assert Decision.objects.get(account=f1).reason == "disconnected"
    assert not FailedExit.objects.exists()


def test_fill_record_for_an_unknown_order_settles_it(world):
    """A timeout whose look-up failed: the stream's fill later settles the order."""
    from brokers.base import Fill
    from core import clock

    _, f1, _ = world
    order = Order.objects.create(
        client_order_id="cp999-1-0", account=f1, symbol="ES", side="buy", qty=1, kind="entry",
        status=Order.Status.UNKNOWN, created_at=clock.now(),
    )
    follower_fill_record(account=f1, fill=Fill("x", "ES", "buy", 1, clock.now(), "cp999-1-0"))
    order.refresh_from_db()
    assert order.status == Order.Status.FILLED
    assert copier_position(f1, "ES") == 1


def test_a_follower_removed_after_the_event_started_is_still_decided_and_the_event_done(world):
    """The event froze its followers when it first ran: the removed one is decided with
    the settings it had (orders may have gone out for it), and the event completes."""
    leader, f1, f2 = world
    event = _ingest_without_processing(leader, "r", "buy", 1)
    started = engine.event_start(event_id=event.pk)
    ids = [seat.follower_id for seat in started.batches[0]]
    Follower.objects.filter(account=f2).delete()
    engine.fanned_out_batch_copy(event_id=event.pk, follower_ids=ids)
    event.refresh_from_db()
    assert (event.status, event.followers_total) == ("done", 2)
    assert (broker_position(f1, "ES"), broker_position(f2, "ES")) == (1, 2)


HOT_TABLES = ["copier_leaderevent", "copier_follower", "copier_copygroup", "accounts_position",
              "accounts_tradingaccount", "brokers_simaccount", "brokers_simorder"]


def test_prepared_hot_statements_survive_a_migration_that_adds_a_column(world):
    """PostgreSQL refuses a prepared statement whose result columns changed (`SELECT *`):
    a worker that kept running through `migrate` must not fail on its next copy."""
    from django.db import connection

    def columns(action: str) -> None:
        with connection.cursor() as cursor:
            for table in HOT_TABLES:
                cursor.execute(f"ALTER TABLE {table} {action}")

    leader, f1, f2 = world
    for _ in range(7):  # psycopg prepares a statement on its fifth run
        leader_fill(leader, "ES", "buy", 1)
    columns("ADD COLUMN added_later integer")
    try:
        leader_fill(leader, "ES", "buy", 1)
        assert LeaderEvent.objects.exclude(status=LeaderEvent.Status.DONE).count() == 0
        assert (copier_position(f1, "ES"), copier_position(f2, "ES")) == (8, 16)
    finally:
        columns("DROP COLUMN added_later")
