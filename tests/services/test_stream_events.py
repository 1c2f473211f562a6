"""The listener: what a broker's stream says, routed into the services exactly once."""

from __future__ import annotations

import pytest

from brokers.sim import SimBroker
from copier.models import Decision, LeaderEvent
from copier.services.stream_events import broker_events_pump
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
    leader, f1 = account("L"), account("F1")
    group("g", leader, {f1: "1"})
    connect(leader, f1)
    leader_fill(leader, "ES", "buy", 2)
    return leader, f1


def test_a_leader_fill_missed_in_an_outage_and_delivered_after_the_reconcile_is_not_copied_again(
    world,
):
    leader, f1 = world
    sim = SimBroker(leader)
    sim.set_reachable(False)
    connect(leader)
    sim.execute_fill("ES", "sell", 1, fill_id="missed")  # unseen: the stream is down
    sim.set_reachable(True)
    connect(leader)  # the reconcile copies 2 -> 1 close-only
    assert copier_position(f1, "ES") == 1
    reconciled = LeaderEvent.objects.latest("id")
    assert (reconciled.source, reconciled.p0, reconciled.p1) == ("reconcile", 2, 1)

    sim.execute_fill("ES", "sell", 1, fill_id="missed")  # the stream delivers it late
    broker_events_pump(account=leader)
    assert LeaderEvent.objects.latest("id") == reconciled  # covered: not a new event
    assert copier_position(leader, "ES") == broker_position(leader, "ES") == 1
    assert copier_position(f1, "ES") == broker_position(f1, "ES") == 1


def test_a_manual_follower_fill_missed_in_an_outage_and_delivered_later_counts_once(world):
    _, f1 = world
    sim = SimBroker(f1)
    sim.set_reachable(False)
    connect(f1)
    sim.execute_fill("ES", "buy", 1, fill_id="by-hand")
    sim.set_reachable(True)
    connect(f1)  # adopted (and paused)
    assert copier_position(f1, "ES") == 3
    sim.execute_fill("ES", "buy", 1, fill_id="by-hand")  # delivered late
    broker_events_pump(account=f1)
    assert copier_position(f1, "ES") == broker_position(f1, "ES") == 3


def test_a_late_fill_without_a_broker_sequence_is_judged_by_its_time(world):
    """Brokers that number no fills: one from before the reconnect's read is covered."""
    import datetime as dt

    from brokers.base import Fill
    from copier.services.stream_events import broker_events_handle
    from core import clock

    leader, f1 = world
    SimBroker(leader).set_reachable(False)
    connect(leader)
    SimBroker(leader).set_reachable(True)
    connect(leader)
    before = clock.now() - dt.timedelta(seconds=5)
    broker_events_handle(account=leader, events=[Fill("old", "ES", "sell", 1, before)])
    assert not LeaderEvent.objects.filter(fill_id="old").exists()
    broker_events_handle(account=leader, events=[Fill("new", "ES", "sell", 1, clock.now())])
    assert LeaderEvent.objects.filter(fill_id="new").exists()
    assert Decision.objects.filter(event__fill_id="new", account=f1).get().reason == "copied"


def test_a_manual_follower_fill_delivered_twice_moves_the_position_once(world):
    from brokers.base import Fill
    from copier.services.stream_events import broker_events_handle
    from core import clock

    _, f1 = world
    sim = SimBroker(f1)
    sim.execute_fill("ES", "sell", 1, fill_id="by-hand")
    broker_events_pump(account=f1)
    sim.execute_fill("ES", "sell", 1, fill_id="by-hand")  # the stream delivers it again
    broker_events_pump(account=f1)
    assert copier_position(f1, "ES") == broker_position(f1, "ES") == 1
    twice = [Fill("twice", "NQ", "buy", 1, clock.now())] * 2
    assert broker_events_handle(account=f1, events=twice) == 1
    assert copier_position(f1, "NQ") == 1


def test_a_leader_fill_beyond_the_limit_is_refused_and_the_difference_copied_close_only(world):
    from copier.models import Order, RefusedFill

    leader, f1 = world  # leader long 2, F1 long 2
    # beyond the limit of a fill; the position it leaves is within that of a position
    SimBroker(leader).execute_fill("ES", "sell", 1_000_001, fill_id="huge")
    assert broker_events_pump(account=leader) == 0
    refused = RefusedFill.objects.get()
    assert (refused.account, refused.fill_id, refused.payload["qty"]) == (leader, "huge",
                                                                           1_000_001)
    assert "beyond" in refused.reason
    event = LeaderEvent.objects.latest("id")  # the leader re-read: a missed move
    assert (event.source, event.close_only, event.p0, event.p1) == ("reconcile", True, 2,
                                                                    -999_999)
    assert copier_position(leader, "ES") == broker_position(leader, "ES") == -999_999
    assert copier_position(f1, "ES") == broker_position(f1, "ES") == 0  # closed, no entry
    assert list(Order.objects.filter(account=f1).values_list("kind", flat=True)) == [
        "entry", "exit"]


def test_a_malformed_follower_fill_is_refused_and_its_positions_re_read(world):
    from brokers.base import Fill
    from copier.models import RefusedFill
    from copier.services.stream_events import broker_events_handle
    from core import clock

    _, f1 = world
    SimBroker(f1).execute_fill("ES", "buy", 1, fill_id="by-hand")  # the broker: 3
    broker_events_handle(account=f1, events=[Fill("by-hand", "ES", "hold", 1, clock.now())])
    refused = RefusedFill.objects.get()
    assert (refused.account, refused.payload["side"]) == (f1, "hold")
    assert copier_position(f1, "ES") == 3  # the broker's view, adopted
    f1.refresh_from_db()
    assert not f1.copy_paused
    broker_events_pump(account=f1)  # the stream's own copy of the fill: in the re-read
    assert copier_position(f1, "ES") == 3


@pytest.fixture
def frozen_clock():
    from django.utils import timezone

    from core import clock

    clock.freeze(timezone.now())
    yield clock
    clock.release()


def _later(clock, seconds: float) -> None:
    import datetime as dt

    clock.advance_to(clock.now() + dt.timedelta(seconds=seconds))


def test_a_leader_position_update_ahead_of_its_fill_is_not_counted_twice(world, frozen_clock):
    from brokers.base import Fill, PositionUpdate
    from copier.models import Order
    from copier.services.stream_events import broker_events_handle

    leader, f1 = world  # leader long 2, F1 long 2
    broker_events_handle(account=leader, events=[
        PositionUpdate("ES", 3), Fill("up-1", "ES", "buy", 1, frozen_clock.now()),
        PositionUpdate("ES", 3),
    ])
    _later(frozen_clock, 60)
    broker_events_handle(account=leader, events=[])
    assert copier_position(leader, "ES") == 3
    assert copier_position(f1, "ES") == broker_position(f1, "ES") == 3  # the buy 1, copied
    assert not Order.objects.filter(account=f1, side="sell").exists()
    assert not LeaderEvent.objects.filter(source="reconcile").exists()


def test_a_leader_position_update_no_fill_explains_is_a_missed_move_after_the_grace(
    world, frozen_clock
):
    from brokers.base import PositionUpdate
    from copier.services.stream_events import broker_events_handle
    from copier.services.sync_guard import position_disagreements_settle

    leader, f1 = world
    broker_events_handle(account=leader, events=[PositionUpdate("ES", 1)])
    _later(frozen_clock, 2)
    assert position_disagreements_settle() == 0  # its fill may still be on the way
    assert copier_position(f1, "ES") == 2
    _later(frozen_clock, 1.5)
    broker_events_handle(account=leader, events=[])
    event = LeaderEvent.objects.latest("id")
    assert (event.source, event.close_only, event.p0, event.p1) == ("reconcile", True, 2, 1)
    assert copier_position(f1, "ES") == broker_position(f1, "ES") == 1
    assert position_disagreements_settle() == 0


def test_a_follower_position_update_ahead_of_its_manual_fill_is_not_counted_twice(
    world, frozen_clock
):
    from brokers.base import Fill, PositionUpdate
    from copier.services.stream_events import broker_events_handle

    _, f1 = world  # F1 long 2
    broker_events_handle(account=f1, events=[PositionUpdate("ES", 3)])
    broker_events_handle(account=f1, events=[Fill("m-1", "ES", "buy", 1, frozen_clock.now())])
    assert copier_position(f1, "ES") == 3
    broker_events_handle(account=f1, events=[PositionUpdate("ES", 3)])
    assert copier_position(f1, "ES") == 3

    from copier.services.sync_guard import position_disagreements_settle

    broker_events_handle(account=f1, events=[PositionUpdate("NQ", -1)])  # no fill follows
    _later(frozen_clock, 3)
    assert position_disagreements_settle() == 1
    assert copier_position(f1, "NQ") == -1
    assert copier_position(f1, "ES") == 3


def test_a_reconnect_the_broker_cannot_confirm_leaves_the_account_disconnected(world):
    _, f1 = world
    SimBroker(f1).set_reachable(False)
    broker_events_pump(account=f1)  # the stream drops
    f1.refresh_from_db()
    assert f1.connection_state == "disconnected"
    broker_events_pump(account=f1)  # the reconnect's read fails
    f1.refresh_from_db()
    assert f1.connection_state == "disconnected"
    SimBroker(f1).set_reachable(True)
    broker_events_pump(account=f1)  # the next turn reconnects
    f1.refresh_from_db()
    assert f1.connection_state == "connected"


def test_symbols_new_to_the_copier_at_a_reconnect_are_compared_too(world):
    _, f1 = world
    sim = SimBroker(f1)
    sim.set_reachable(False)
    connect(f1)
    sim.execute_fill("NQ", "sell", 2)
    sim.set_reachable(True)
    connect(f1)
    assert f1.copy_paused
    assert f1.pause_details == {"NQ": {"copier": 0, "broker": -2}}
    assert copier_position(f1, "NQ") == -2


def test_follower_fill_ids_are_forgotten_after_thirty_days():
    import datetime as dt

    from accounts.models import FollowerFill
    from copier.services.stream_events import follower_fills_prune
    from core import clock

    f1 = account("PRUNE")
    now = clock.now()
    FollowerFill.objects.create(account=f1, fill_id="old", seen_at=now - dt.timedelta(days=31))
    FollowerFill.objects.create(account=f1, fill_id="new", seen_at=now - dt.timedelta(days=29))
    assert follower_fills_prune() == 1
    assert list(FollowerFill.objects.values_list("fill_id", flat=True)) == ["new"]


HUGE = 3_000_000_000  # beyond a 32-bit column: stored as -1,294,967,296 before


def test_a_huge_leader_statement_is_refused_and_never_applied_as_a_reversal(world, frozen_clock):
    """A garbled 3,000,000,000 stated on the leader's stream: recorded as refused, never
    waiting on the row (before: stored as -1,294,967,296 and, after the grace, copied as a
    reversal that closed every follower)."""
    from brokers.base import PositionUpdate
    from copier.models import RefusedFill
    from copier.services.stream_events import broker_events_handle

    leader, f1 = world  # leader long 2, F1 long 2
    broker_events_handle(account=leader, events=[PositionUpdate("ES", HUGE)])
    refused = RefusedFill.objects.get()
    assert (refused.account, refused.kind) == (leader, "position")
    assert str(HUGE) in refused.reason
    assert "beyond" in refused.reason
    _later(frozen_clock, 60)
    broker_events_handle(account=leader, events=[])
    assert copier_position(leader, "ES") == 2
    assert copier_position(f1, "ES") == broker_position(f1, "ES") == 2
    assert not LeaderEvent.objects.filter(source="reconcile").exists()


def test_a_huge_fill_and_the_position_it_leaves_are_refused_and_the_copier_stands(world):
    """The sim fills 3,000,000,000 (its books are 64-bit): the fill is refused, the re-read
    refuses the position it leaves, and the copier's view of ES stays where it was."""
    from copier.models import RefusedFill

    leader, f1 = world
    SimBroker(leader).execute_fill("ES", "buy", HUGE, fill_id="garbled")
    assert broker_position(leader, "ES") == HUGE + 2
    assert broker_events_pump(account=leader) == 0
    kinds = sorted(RefusedFill.objects.filter(account=leader).values_list("kind", flat=True))
    assert kinds == ["fill", "position"]
    assert copier_position(leader, "ES") == 2
    assert copier_position(f1, "ES") == broker_position(f1, "ES") == 2
    assert not LeaderEvent.objects.filter(source="reconcile").exists()
    leader.refresh_from_db()
    assert leader.is_connected


def test_a_reconnect_that_reads_a_huge_position_refuses_it_and_applies_the_rest(world):
    from copier.models import RefusedFill

    _, f1 = world  # F1 long 2 ES
    sim = SimBroker(f1)
    sim.set_reachable(False)
    connect(f1)
    sim.execute_fill("ES", "buy", HUGE)
    sim.execute_fill("NQ", "sell", 1)
    sim.set_reachable(True)
    connect(f1)
    assert f1.is_connected
    assert copier_position(f1, "ES") == 2  # refused: the copier's view stands
    assert copier_position(f1, "NQ") == -1  # the trader's, adopted
    assert f1.pause_details == {"NQ": {"copier": 0, "broker": -1}}
    assert RefusedFill.objects.filter(account=f1, kind="position").count() == 1


def test_a_fill_whose_sequence_no_column_holds_is_refused(world):
    from brokers.base import Fill
    from copier.models import RefusedFill
    from copier.services.stream_events import broker_events_handle
    from core import clock

    leader, _ = world
    broker_events_handle(account=leader, events=[
        Fill("seq-huge", "ES", "buy", 1, clock.now(), seq=2**64)])
    assert "sequence" in RefusedFill.objects.get(fill_id="seq-huge").reason
    assert not LeaderEvent.objects.filter(fill_id="seq-huge").exists()
