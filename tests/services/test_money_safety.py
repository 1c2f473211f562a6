"""Money safety under crashes, settings changes and races (issue 8, items 1 and 3 to 7).

Each test is a defect reproduced on the engine before the fix: an exit lost or
sent twice, or a follower traded on history that never concerned it. A crash
is the engine's batch rolled back after the sim broker executed (the sim
writes on its own connection, as a real broker keeps what it executed); a
broker's brief trouble is one of the sim's own fault controls.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, transaction

from accounts.models import Position, TradingAccount
from brokers.models import SimOrder
from brokers.sim import SimBroker
from copier import tasks
from copier.models import CopyGroup, Decision, FailedExit, Follower, LeaderEvent, Order, Quarantine
from copier.services import engine, failed_exits
from copier.services.ingest import FillInput, events_redispatch, leader_fill_ingest
from copier.services.stream_events import broker_events_pump
from core import clock
from tests.factories import (
    account,
    broker_position,
    connect,
    copier_position,
    group,
    leader_fill,
)

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"),
              pytest.mark.usefixtures("eager_tasks", "frozen_clock")]


@pytest.fixture
def world():
    leader, f1 = account("L"), account("F1")
    group("g", leader, {f1: "1"})
    connect(leader, f1)
    return leader, f1


def stored(leader: TradingAccount, fill_id: str, side: str, qty: int,
           symbol: str = "ES") -> LeaderEvent:
    """A leader event stored as ingestion does, its publish lost (as a crash would)."""
    with transaction.atomic():
        event = leader_fill_ingest(account=leader, fill=FillInput(fill_id, symbol, side, qty))
        transaction.get_connection().run_on_commit.clear()
    assert event is not None
    return event


def crash_mid_copy(event: LeaderEvent) -> None:
    """The worker dies after the broker executed, before the copier's transaction commits."""
    started = engine.event_start(event_id=event.pk)
    assert started is not None
    with pytest.raises(RuntimeError), transaction.atomic():
        engine.seats_copy(event=started.event, seats=started.batches[0])
        raise RuntimeError("SIGKILL")


def retry_due(fe: FailedExit) -> str | None:
    fe.refresh_from_db()
    clock.advance_to(fe.next_attempt_at)
    return failed_exits.failed_exit_attempt(failed_exit_id=fe.pk)


def sent_at_broker(acct: TradingAccount) -> list[tuple[str, int]]:
    return list(SimOrder.objects.using("broker").filter(book__account=acct, status="filled")
                .exclude(client_order_id=None).order_by("id").values_list("side", "qty"))


# --- 1. crash, then a brief outage at the re-run ------------------------------------------------


def test_an_exit_whose_look_up_fails_after_a_crash_stays_unknown_and_is_never_sent_again(world):
    leader, f1 = world
    leader_fill(leader, "ES", "buy", 2)
    exit_event = stored(leader, "x", "sell", 2)
    crash_mid_copy(exit_event)
    assert broker_position(f1, "ES") == 0
    assert copier_position(f1, "ES") == 2
    SimBroker(f1).inject(lookup_fail=1)  # the re-run's look-up fails transiently
    tasks.process_event(exit_event.pk)
    order = Order.objects.get(client_order_id__startswith=f"cp{exit_event.pk}-")
    assert order.status == Order.Status.UNKNOWN  # on record, not forgotten
    fe = FailedExit.objects.get()
    assert fe.status == "pending"
    broker_events_pump(account=f1)  # the stream delivers the first run's fill
    fe.refresh_from_db()
    order.refresh_from_db()
    assert (order.status, fe.status) == (Order.Status.FILLED, "done")
    retry_due(fe)
    assert broker_position(f1, "ES") == copier_position(f1, "ES") == 0
    assert sent_at_broker(f1) == [("buy", 2), ("sell", 2)]


def test_nothing_is_sent_for_a_follower_symbol_while_an_order_is_unknown(world):
    """The look-up keeps failing: the queued exit's attempts fail and count, no order goes out;
    once the broker answers, the executed exit is counted and never sent again."""
    leader, f1 = world
    leader_fill(leader, "ES", "buy", 2)
    exit_event = stored(leader, "x", "sell", 2)
    crash_mid_copy(exit_event)
    SimBroker(f1).inject(lookup_fail=3)
    tasks.process_event(exit_event.pk)
    fe = FailedExit.objects.get()
    assert retry_due(fe) == "pending"
    assert retry_due(fe) == "pending"
    fe.refresh_from_db()
    assert "outcome unknown" in fe.last_error
    assert fe.attempts == 3
    assert sent_at_broker(f1) == [("buy", 2), ("sell", 2)]
    assert retry_due(fe) == "done"  # the look-up answers: it filled
    fe.refresh_from_db()
    assert fe.last_error.startswith("settled:")  # says why it is done
    assert broker_position(f1, "ES") == copier_position(f1, "ES") == 0
    assert sent_at_broker(f1) == [("buy", 2), ("sell", 2)]


def test_a_later_event_looks_an_unknown_order_up_before_deciding(world):
    leader, f1 = world
    leader_fill(leader, "ES", "buy", 2)
    exit_event = stored(leader, "x", "sell", 2)
    crash_mid_copy(exit_event)
    SimBroker(f1).inject(lookup_fail=1)
    tasks.process_event(exit_event.pk)
    leader_fill(leader, "ES", "buy", 1)  # the look-up now answers: F1 was flat, in sync
    assert broker_position(f1, "ES") == copier_position(f1, "ES") == 1
    assert FailedExit.objects.get().status == "done"


# --- 3. an unknown exit settled by the stream is not sent again ---------------------------------


def test_an_unknown_exit_settled_by_the_stream_settles_its_queued_exit(world):
    leader, f1 = world
    leader_fill(leader, "ES", "buy", 4)
    SimBroker(f1).inject(timeout=1, lookup_fail=1)  # the exit times out, its look-up too
    leader_fill(leader, "ES", "sell", 2)
    order = Order.objects.get(side="sell")
    fe = FailedExit.objects.get()
    assert (order.status, fe.status, fe.qty) == (Order.Status.UNKNOWN, "pending", 2)
    broker_events_pump(account=f1)  # the stream: it filled
    fe.refresh_from_db()
    assert fe.status == "done"
    retry_due(fe)
    assert broker_position(f1, "ES") == copier_position(f1, "ES") == 2
    assert sent_at_broker(f1) == [("buy", 4), ("sell", 2)]


# --- 4. a rejection found by a look-up is a rejection -------------------------------------------


def test_a_rejection_found_by_the_re_runs_look_up_is_a_rejection(world):
    leader, f1 = world
    leader_fill(leader, "ES", "buy", 2)
    SimBroker(f1).inject(reject=1)
    exit_event = stored(leader, "x", "sell", 2)
    crash_mid_copy(exit_event)
    tasks.process_event(exit_event.pk)
    decision = Decision.objects.get(event=exit_event)
    assert decision.reason == "rejected"
    assert decision.placed_legs[0]["outcome"] == "rejected"
    assert Quarantine.objects.filter(account=f1, symbol="ES", lifted_at=None).exists()
    assert FailedExit.objects.get().status == "rejected"
    assert copier_position(f1, "ES") == 2


# --- 5. a re-run after a crash with a setting changed in between ---------------------------------


def test_disabling_the_follower_before_the_re_run_does_not_forget_its_executed_exit(world):
    leader, f1 = world
    leader_fill(leader, "ES", "buy", 2)
    exit_event = stored(leader, "x", "sell", 2)
    crash_mid_copy(exit_event)
    Follower.objects.filter(account=f1).update(enabled=False)
    tasks.process_event(exit_event.pk)
    assert broker_position(f1, "ES") == copier_position(f1, "ES") == 0
    assert Decision.objects.get(event=exit_event).reason == "copied"
    assert Order.objects.get(client_order_id__startswith=f"cp{exit_event.pk}-").status == "filled"


def test_toggling_reverse_before_the_re_run_never_misreads_the_executed_order(world):
    leader, f1 = world
    entry = stored(leader, "e", "buy", 2)
    crash_mid_copy(entry)
    CopyGroup.objects.filter(name="g").update(reverse=True)
    tasks.process_event(entry.pk)
    assert broker_position(f1, "ES") == copier_position(f1, "ES") == 2
    leader_fill(leader, "ES", "sell", 2)  # now a reverse group: the follower is diverged
    assert broker_position(f1, "ES") == copier_position(f1, "ES") == 0
    assert sent_at_broker(f1) == [("buy", 2), ("sell", 2)]


def test_removing_the_follower_before_the_re_run_records_its_order_and_finishes_the_event(world):
    leader, f1 = world
    entry = stored(leader, "e", "buy", 2)
    crash_mid_copy(entry)
    Follower.objects.filter(account=f1).delete()
    tasks.process_event(entry.pk)
    entry.refresh_from_db()
    assert entry.status == "done"
    assert copier_position(f1, "ES") == broker_position(f1, "ES") == 2
    assert events_redispatch(older_than_seconds=0) == []


def test_a_re_run_with_the_follower_disconnected_records_its_orders_in_doubt(world):
    """The broker cannot be asked now: the order is kept unknown and asked about first
    when the follower is back, so the queued exit never sells twice."""
    leader, f1 = world
    leader_fill(leader, "ES", "buy", 2)
    exit_event = stored(leader, "x", "sell", 2)
    crash_mid_copy(exit_event)
    SimBroker(f1).set_reachable(False)
    connect(f1)  # the listener sees the drop
    tasks.process_event(exit_event.pk)
    assert Order.objects.get(client_order_id__startswith=f"cp{exit_event.pk}-").status == "unknown"
    SimBroker(f1).set_reachable(True)
    connect(f1)
    fe = FailedExit.objects.get()
    fe.refresh_from_db()
    if fe.status == "pending":
        retry_due(fe)
    assert broker_position(f1, "ES") == copier_position(f1, "ES") == 0
    assert sent_at_broker(f1) == [("buy", 2), ("sell", 2)]


def test_a_stuck_event_never_starves_newer_lost_events(world):
    leader, _ = world
    events = [stored(leader, f"s{i}", "buy", 1) for i in range(3)]
    from copier.shell.celery import app

    app.conf.task_always_eager = False  # published to Redis, consumed by nobody: stuck
    try:
        first = events_redispatch(older_than_seconds=0, limit=2)
        second = events_redispatch(older_than_seconds=0, limit=2)
    finally:
        app.conf.task_always_eager = True
    assert first == [events[0].pk, events[1].pk]
    assert second[0] == events[2].pk


# --- 6. joining starts with the next event -------------------------------------------------------


@pytest.fixture
def busy_leader():
    """A second leader with a history of 22 events, and a follower of another group."""
    la, lb, f1 = account("LA"), account("LB"), account("F1")
    ga = group("ga", la, {f1: "1"})
    group("gb", lb, {})
    connect(la, lb, f1)
    for i in range(11):
        leader_fill(lb, "ES", "buy", 2)
        leader_fill(lb, "ES", "sell", 1 + i % 2)
    return la, lb, f1, ga


def test_a_follower_moved_to_another_group_starts_with_its_leaders_next_event(busy_leader):
    _la, lb, f1, _ga = busy_leader
    follower = Follower.objects.get(account=f1)
    follower.group = CopyGroup.objects.get(name="gb")
    follower.save()
    leader_fill(lb, "ES", "buy", 1)
    assert Decision.objects.filter(account=f1).count() == 1
    assert sent_at_broker(f1) == []  # held nothing: diverged from the leader, close-only


def test_a_group_given_another_leader_starts_with_that_leaders_next_event(busy_leader):
    _la, lb, f1, ga = busy_leader
    CopyGroup.objects.filter(name="gb").delete()
    ga.leader = lb
    ga.save()
    leader_fill(lb, "ES", "buy", 1)
    assert Decision.objects.filter(account=f1).count() == 1
    assert sent_at_broker(f1) == []


def test_a_follower_whose_account_is_replaced_starts_with_the_next_event():
    lb, f0, f2 = account("LB"), account("F0"), account("F2")
    group("gb", lb, {f0: "1"})
    connect(lb, f0, f2)
    for _ in range(11):
        leader_fill(lb, "ES", "buy", 2)
        leader_fill(lb, "ES", "sell", 1)
    follower = Follower.objects.get(account=f0)
    follower.account = f2  # the same follower row, another account
    follower.save()
    leader_fill(lb, "ES", "buy", 1)
    assert Decision.objects.filter(account=f2).count() == 1
    assert sent_at_broker(f2) == []


# --- 7. one follower never blocks the others -----------------------------------------------------


def test_an_oversized_entry_is_denied_for_that_follower_and_the_others_get_their_exit():
    leader, ok, big = account("L"), account("OK"), account("BIG")
    g = group("g", leader, {ok: "1"})
    Follower.objects.create(group=g, account=big, multiplier=Decimal(3000))  # no form: no check
    connect(leader, ok, big)
    leader_fill(leader, "ES", "buy", 1)
    leader_fill(leader, "ES", "buy", 999_998)  # a legal fill; 3e9 contracts on BIG
    assert Decision.objects.filter(account=big).latest("id").reason == "entry_failed"
    assert "denied" in Decision.objects.filter(account=big).latest("id").detail
    leader_fill(leader, "ES", "sell", 999_999)
    assert LeaderEvent.objects.exclude(status="done").count() == 0
    assert broker_position(ok, "ES") == copier_position(ok, "ES") == 0
    assert broker_position(big, "ES") == copier_position(big, "ES") == 0


def test_a_follower_the_database_refuses_fails_alone():
    leader, ok, sick = account("L"), account("OK"), account("SICK")
    group("g", leader, {ok: "1", sick: "1"})
    connect(leader, ok, sick)
    leader_fill(leader, "ES", "buy", 2)
    with connection.cursor() as cursor:  # the database refuses SICK's decisions
        cursor.execute(
            "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'refused';"
            " END $$ LANGUAGE plpgsql;"
            f" CREATE TRIGGER refuse BEFORE INSERT ON copier_decision FOR EACH ROW"
            f" WHEN (NEW.account_id = {sick.pk}) EXECUTE FUNCTION refuse()")
    try:
        leader_fill(leader, "ES", "sell", 1)
        leader_fill(leader, "ES", "sell", 1)
        assert broker_position(ok, "ES") == copier_position(ok, "ES") == 0
        sick.refresh_from_db()
        assert "failed" in sick.last_error
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER refuse ON copier_decision; DROP FUNCTION refuse()")
    events_redispatch(older_than_seconds=0)  # the sick one catches up, its orders looked up
    assert LeaderEvent.objects.exclude(status="done").count() == 0
    assert broker_position(sick, "ES") == copier_position(sick, "ES") == 0
    assert sent_at_broker(sick) == [("buy", 2), ("sell", 1), ("sell", 1)]


def test_the_multiplier_has_a_sane_upper_bound():
    leader, f1 = account("L"), account("F1")
    g = CopyGroup.objects.create(name="g", leader=leader)
    with pytest.raises(ValidationError, match="at most 100"):
        Follower(group=g, account=f1, multiplier=Decimal(3000)).full_clean()
    Follower(group=g, account=f1, multiplier=Decimal(100)).full_clean()


# --- the Failed Exit Queue's clarified points ----------------------------------------------------


def test_an_attempt_while_the_copier_sees_the_follower_disconnected_fails_and_sends_nothing(world):
    """The broker may be back, but until the listener has reconnected and compared
    positions, nothing is decided from a view the copier cannot confirm."""
    leader, f1 = world
    leader_fill(leader, "ES", "buy", 3)
    SimBroker(f1).inject(fail=1)
    leader_fill(leader, "ES", "sell", 3)
    fe = FailedExit.objects.get()
    SimBroker(f1).set_reachable(False)
    connect(f1)
    SimBroker(f1).set_reachable(True)  # back at the broker, not yet seen by the listener
    assert retry_due(fe) == "pending"
    fe.refresh_from_db()
    assert (fe.attempts, fe.last_error) == (2, "follower disconnected")
    assert sent_at_broker(f1) == [("buy", 3)]


def test_a_queued_exit_is_resolved_when_the_follower_already_holds_what_the_leader_calls_for(
    world,
):
    leader, f1 = world
    leader_fill(leader, "ES", "buy", 3)
    SimBroker(f1).inject(fail=1)
    leader_fill(leader, "ES", "sell", 3)  # F1's exit fails: queued
    leader_fill(leader, "ES", "buy", 3)  # the leader re-enters: F1 (still 3) is in line
    fe = FailedExit.objects.get()
    assert retry_due(fe) == "resolved"
    assert broker_position(f1, "ES") == copier_position(f1, "ES") == 3
    assert not Order.objects.filter(failed_exit=fe).exists()


# --- a crashed run's own order is not a trader's ----------------------------------------------


def _statement_waits_past_the_grace(f1: TradingAccount, stated: int) -> None:
    from django.conf import settings

    from brokers.base import PositionUpdate
    from copier.services.stream_events import broker_events_handle
    from copier.services.sync_guard import position_disagreements_settle

    broker_events_handle(account=f1, events=[PositionUpdate("ES", stated)])
    clock.advance_to(clock.now() + dt.timedelta(seconds=settings.COPIER_POSITION_GRACE_SECONDS + 1))
    assert position_disagreements_settle() == 0  # the event in flight may explain it


def test_a_follower_statement_after_a_crashed_run_waits_for_the_re_run_which_counts_it_once(world):
    """The run placed F1's order and crashed before committing: F1's broker states +3 where
    the copier has +2. Adopted after the grace, the re-run found F1 already at +3 and its
    executed order went unrecorded (or, looked up, counted a second time)."""
    from copier.services.sync_guard import position_disagreements_settle

    leader, f1 = world
    leader_fill(leader, "ES", "buy", 2)
    entry = stored(leader, "x", "buy", 1)
    crash_mid_copy(entry)
    assert (broker_position(f1, "ES"), copier_position(f1, "ES")) == (3, 2)
    _statement_waits_past_the_grace(f1, 3)
    assert copier_position(f1, "ES") == 2
    tasks.process_event(entry.pk)  # the re-run looks its order up: filled, counted once
    assert copier_position(f1, "ES") == broker_position(f1, "ES") == 3
    assert Order.objects.get(client_order_id__startswith=f"cp{entry.pk}-").status == "filled"
    assert sent_at_broker(f1) == [("buy", 2), ("buy", 1)]
    assert position_disagreements_settle() == 0  # the statement agrees now: answered
    assert not Position.objects.filter(account=f1, broker_qty__isnull=False).exists()


def test_a_trader_move_stated_while_no_event_is_in_flight_is_adopted_after_the_grace(world):
    """The wait is for events in flight only: once decided, a difference is the trader's."""
    from copier.services.sync_guard import position_disagreements_settle

    leader, f1 = world
    leader_fill(leader, "ES", "buy", 2)
    SimBroker(f1).execute_fill("ES", "buy", 1)  # the trader's own contract
    from brokers.base import PositionUpdate
    from copier.services.stream_events import broker_events_handle

    broker_events_handle(account=f1, events=[PositionUpdate("ES", 3)])
    clock.advance_to(clock.now() + dt.timedelta(seconds=60))
    assert position_disagreements_settle() == 1
    assert copier_position(f1, "ES") == 3


def test_a_follower_reconnecting_after_a_crashed_run_is_not_paused_for_the_runs_own_order(world):
    """The reconnect's comparison found F1 at +3 where the copier had +2, its own order of a
    run that crashed: it paused F1 and adopted +3, and the re-run then left the executed
    order unrecorded. Now the difference waits for the re-run, which counts the order."""
    leader, f1 = world
    leader_fill(leader, "ES", "buy", 2)
    entry = stored(leader, "x", "buy", 1)
    crash_mid_copy(entry)
    sim = SimBroker(f1)
    sim.set_reachable(False)
    broker_events_pump(account=f1)  # the stream drops
    sim.set_reachable(True)
    connect(f1)  # the reconnect compares
    assert not f1.copy_paused
    assert copier_position(f1, "ES") == 2
    tasks.process_event(entry.pk)
    assert copier_position(f1, "ES") == broker_position(f1, "ES") == 3
    assert Order.objects.get(client_order_id__startswith=f"cp{entry.pk}-").status == "filled"
    assert sent_at_broker(f1) == [("buy", 2), ("buy", 1)]
    f1.refresh_from_db()
    assert not f1.copy_paused


def test_a_positions_re_read_after_a_crashed_run_leaves_the_runs_own_order_to_its_re_run(world):
    """A refused follower fill re-reads the follower's positions; the crashed run's order
    in them is not adopted as the trader's: the re-run counts it, once."""
    from brokers.base import Fill
    from copier.services.stream_events import broker_events_handle

    leader, f1 = world
    leader_fill(leader, "ES", "buy", 2)
    entry = stored(leader, "x", "buy", 1)
    crash_mid_copy(entry)
    broker_events_handle(account=f1, events=[Fill("junk", "ES", "hold", 1, clock.now())])
    assert copier_position(f1, "ES") == 2
    tasks.process_event(entry.pk)
    assert copier_position(f1, "ES") == broker_position(f1, "ES") == 3
    assert Order.objects.get(client_order_id__startswith=f"cp{entry.pk}-").status == "filled"
