"""The Sync Divergence Guard: pause on a changed account, adopt the broker's view, heal."""

from __future__ import annotations

import pytest

from accounts.models import TradingAccount
from brokers.sim import SimBroker
from copier.models import Decision, LeaderEvent
from copier.services.sync_guard import paused_heal_all
from tests.factories import account, connect, copier_position, group, leader_fill

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"),
              pytest.mark.usefixtures("eager_tasks")]


@pytest.fixture
def world():
    leader, f1 = account("L"), account("F1")
    group("g", leader, {f1: "2"})
    connect(leader, f1)
    leader_fill(leader, "ES", "buy", 1)
    return leader, f1


def _outage_with_manual_trade(f1: TradingAccount, side: str, qty: int) -> None:
    sim = SimBroker(f1)
    sim.set_reachable(False)
    connect(f1)
    sim.execute_fill("ES", side, qty)  # unseen by the copier
    sim.set_reachable(True)
    connect(f1)


def test_reconnect_with_unchanged_positions_does_not_pause(world):
    _, f1 = world
    SimBroker(f1).set_reachable(False)
    connect(f1)
    SimBroker(f1).set_reachable(True)
    connect(f1)
    assert not f1.copy_paused
    assert f1.connection_state == "connected"


def test_changed_positions_pause_record_the_difference_and_adopt_the_broker(world):
    _, f1 = world
    _outage_with_manual_trade(f1, "buy", 3)
    assert f1.copy_paused
    assert f1.pause_details == {"ES": {"copier": 2, "broker": 5}}
    assert "ES: copier +2, broker +5" in f1.pause_reason
    assert copier_position(f1, "ES") == 5


def test_paused_follower_gets_nothing_and_manual_trading_is_not_fought(world):
    leader, f1 = world
    _outage_with_manual_trade(f1, "buy", 3)
    leader_fill(leader, "ES", "buy", 1)
    assert Decision.objects.filter(account=f1).latest("id").reason == "paused"
    assert copier_position(f1, "ES") == 5


def test_pause_heals_when_the_trader_lines_up_again(world):
    leader, f1 = world
    _outage_with_manual_trade(f1, "buy", 3)
    SimBroker(f1).execute_fill("ES", "sell", 3)
    connect(f1)  # the position update triggers the heal check
    f1.refresh_from_db()
    assert not f1.copy_paused
    leader_fill(leader, "ES", "buy", 1)
    assert Decision.objects.filter(account=f1).latest("id").reason == "copied"
    assert copier_position(f1, "ES") == 4


def test_periodic_heal_check_clears_a_pause_once_the_leader_lines_up(world):
    leader, f1 = world
    _outage_with_manual_trade(f1, "sell", 2)  # F1 flat, leader long 1
    assert f1.copy_paused
    assert paused_heal_all() == []
    leader_fill(leader, "ES", "sell", 1)  # leader flat: the check at P0=1 keeps the pause
    assert paused_heal_all() == ["F1"]


def test_leader_reconnect_copies_what_it_missed_close_only(world):
    leader, f1 = world
    sim = SimBroker(leader)
    sim.set_reachable(False)
    connect(leader)
    sim.execute_fill("ES", "sell", 1)
    sim.set_reachable(True)
    connect(leader)
    event = LeaderEvent.objects.latest("id")
    assert (event.source, event.close_only, event.p0, event.p1) == ("reconcile", True, 1, 0)
    assert Decision.objects.get(event=event).reason == "close_only"
    assert copier_position(f1, "ES") == 0


def _later(clock, seconds: float) -> None:
    import datetime as dt

    clock.advance_to(clock.now() + dt.timedelta(seconds=seconds))


def test_follower_position_update_no_fill_explains_is_adopted_and_heals_a_pause(
    world, frozen_clock
):
    from brokers.base import PositionUpdate
    from copier.services.stream_events import broker_events_handle

    _, f1 = world
    _outage_with_manual_trade(f1, "buy", 3)
    assert f1.copy_paused
    broker_events_handle(account=f1, events=[PositionUpdate("es", 2)])
    assert copier_position(f1, "ES") == 5  # its fill may be on the way
    _later(frozen_clock, 3)
    broker_events_handle(account=f1, events=[])
    f1.refresh_from_db()
    assert copier_position(f1, "ES") == 2
    assert not f1.copy_paused


def test_leader_position_update_that_disagrees_is_a_missed_move_copied_close_only(
    world, frozen_clock
):
    from brokers.base import PositionUpdate
    from copier.services.stream_events import broker_events_handle

    leader, f1 = world
    broker_events_handle(account=leader, events=[PositionUpdate("ES", 3)])
    _later(frozen_clock, 3)
    broker_events_handle(account=leader, events=[PositionUpdate("ES", 3)])  # added: no copy
    broker_events_handle(account=leader, events=[PositionUpdate("ES", 3)])  # same: nothing
    assert list(LeaderEvent.objects.filter(source="reconcile").values_list("p0", "p1")) == [
        (1, 3)]
    assert Decision.objects.filter(account=f1).latest("id").reason == "close_only"
    assert copier_position(f1, "ES") == 2
    broker_events_handle(account=leader, events=[PositionUpdate("ES", 0)])
    _later(frozen_clock, 3)
    broker_events_handle(account=leader, events=[])
    assert copier_position(f1, "ES") == 0


@pytest.fixture
def frozen_clock():
    """A controlled clock: no retry is scheduled behind the test's back, time moves on demand."""
    from django.utils import timezone

    from core import clock

    clock.freeze(timezone.now())
    yield clock
    clock.release()


def test_a_retry_landing_between_the_reconnect_fetch_and_its_lock_leaves_no_stale_view(
    world, frozen_clock, monkeypatch
):
    """The queued exit's retry sells 2 right after the reconnect fetched the broker's
    positions: the comparison must not adopt the stale 2 (nor pause), and a later heal
    and leader exit must never sell what F1 does not hold."""
    import threading

    from django.db import connections

    from copier.models import FailedExit
    from copier.services.failed_exits import failed_exit_attempt
    from tests.factories import broker_position

    leader, f1 = world  # leader long 1, F1 long 2 (multiplier 2)
    SimBroker(f1).set_reachable(False)
    connect(f1)
    leader_fill(leader, "ES", "sell", 1)  # F1 disconnected: its exit of 2 is queued
    fe = FailedExit.objects.get(account=f1)
    assert (fe.side, fe.qty, fe.status, fe.attempts) == ("sell", 2, "pending", 0)

    original = SimBroker.positions
    retries: list[threading.Thread] = []

    def retry() -> None:
        try:
            failed_exit_attempt(failed_exit_id=fe.pk)
        finally:
            connections.close_all()

    def positions_then_a_retry(self: SimBroker) -> dict[str, int]:
        answer = original(self)
        if self.account.pk == f1.pk and not retries:
            retries.append(threading.Thread(target=retry))
            retries[0].start()
            retries[0].join(0.5)  # it lands now, unless the reconnect holds F1's rows
        return answer

    monkeypatch.setattr(SimBroker, "positions", positions_then_a_retry)
    SimBroker(f1).set_reachable(True)
    connect(f1)
    retries[0].join(10)
    assert not retries[0].is_alive()
    monkeypatch.setattr(SimBroker, "positions", original)
    f1.refresh_from_db()
    fe.refresh_from_db()
    assert fe.status == "done"
    assert broker_position(f1, "ES") == 0
    assert copier_position(f1, "ES") == 0  # the copier's view is the broker's
    assert not f1.copy_paused  # nothing changed outside the copier

    leader_fill(leader, "ES", "buy", 1)
    paused_heal_all()
    leader_fill(leader, "ES", "sell", 1)
    assert broker_position(f1, "ES") == copier_position(f1, "ES") == 0


def test_a_disconnected_paused_account_keeps_its_pause_until_the_reconnect_checks_it(world):
    """Its positions cannot be confirmed while it is away: no heal, not even periodically;
    the check right after the reconnect's comparison (no difference) clears it."""
    leader, f1 = world
    _outage_with_manual_trade(f1, "sell", 2)  # F1 flat, leader long 1: paused
    SimBroker(f1).set_reachable(False)
    connect(f1)
    leader_fill(leader, "ES", "sell", 1)  # leader flat: F1 at E(0) = 0
    assert paused_heal_all() == []
    f1.refresh_from_db()
    assert f1.copy_paused
    SimBroker(f1).set_reachable(True)
    connect(f1)
    assert not f1.copy_paused


def test_a_fill_on_a_disconnected_paused_follower_does_not_heal_it(world):
    from brokers.base import Fill
    from copier.services.stream_events import broker_events_handle
    from core import clock

    _, f1 = world
    _outage_with_manual_trade(f1, "buy", 3)  # F1 at 5, expected 2: paused
    SimBroker(f1).set_reachable(False)
    connect(f1)
    broker_events_handle(account=f1, events=[Fill("late-1", "ES", "sell", 3, clock.now())])
    f1.refresh_from_db()
    assert copier_position(f1, "ES") == 2
    assert f1.copy_paused


def test_an_order_in_doubt_is_asked_about_at_the_reconnect_and_counted_once(
    world, frozen_clock
):
    """A queued exit's attempt timed out and its look-up failed: the broker filled it, the
    copier does not know. At the reconnect its fill is in the broker's positions: asked
    about before the comparison, it is the copier's own (no pause), and the retry that
    follows finds nothing left to sell instead of counting it a second time."""
    from brokers.base import OrderRequest
    from copier.models import FailedExit, Order
    from tests.factories import broker_position

    leader, f1 = world  # leader long 1, F1 long 2
    SimBroker(f1).set_reachable(False)
    connect(f1)
    leader_fill(leader, "ES", "sell", 1)  # F1's exit of 2 is queued
    fe = FailedExit.objects.get(account=f1)
    SimBroker(f1).set_reachable(True)  # the attempt reaches the broker, the answer is lost
    SimBroker(f1).place_order(OrderRequest(f"fx{fe.pk}-1", "ES", "sell", 2))
    Order.objects.create(client_order_id=f"fx{fe.pk}-1", account=f1, symbol="ES", side="sell",
                         qty=2, kind="exit", status=Order.Status.UNKNOWN, failed_exit=fe,
                         created_at=frozen_clock.now())
    FailedExit.objects.filter(pk=fe.pk).update(attempts=1)
    connect(f1)
    f1.refresh_from_db()
    assert Order.objects.get(client_order_id=f"fx{fe.pk}-1").status == "filled"
    assert not f1.copy_paused
    assert broker_position(f1, "ES") == copier_position(f1, "ES") == 0
    fe.refresh_from_db()
    assert fe.status in ("done", "resolved")


# --- the guard after a run of the copier's own in flight (issue 18, item 7) -----------------


@pytest.fixture
def crash_world():
    from tests.factories import group as group_

    leader, f1 = account("L"), account("F1")
    group_("g", leader, {f1: "1"})
    connect(leader, f1)
    leader_fill(leader, "ES", "buy", 2)
    return leader, f1


def _away_then_back(f1: TradingAccount, *trades: tuple[str, int]) -> None:
    """F1's stream drops, the trader trades by hand unseen, F1 reconnects (the comparison)."""
    sim = SimBroker(f1)
    sim.set_reachable(False)
    connect(f1)
    for side, qty in trades:
        sim.execute_fill("ES", side, qty)  # type: ignore[arg-type]
    sim.set_reachable(True)
    connect(f1)


def test_a_hand_trade_left_once_the_in_flight_run_is_settled_pauses_the_account(crash_world):
    """The run bought F1's 1 and crashed before committing; while F1 was away its trader
    bought 1 more. At the reconnect the broker's +4 against the copier's +2 may be the
    run's order: the comparison waits. The re-run counts its order (+3): the +1 left is
    the trader's, and pauses F1 (it was adopted silently after the grace, and copying
    went on against the trader's hand)."""
    from brokers.base import PositionUpdate
    from copier import tasks
    from copier.models import Order
    from copier.services.stream_events import broker_events_handle
    from tests.factories import broker_position
    from tests.services.test_money_safety import crash_mid_copy, sent_at_broker, stored

    leader, f1 = crash_world
    entry = stored(leader, "x", "buy", 1)
    crash_mid_copy(entry)
    _away_then_back(f1, ("buy", 1))
    f1.refresh_from_db()
    assert not f1.copy_paused  # our own order may be the difference: not yet judged
    assert copier_position(f1, "ES") == 2
    tasks.process_event(entry.pk)  # the re-run looks its order up: filled, counted once
    order = Order.objects.get(client_order_id__startswith=f"cp{entry.pk}-{f1.pk}-")
    assert (order.status, order.filled_qty) == ("filled", 1)
    f1.refresh_from_db()
    assert f1.copy_paused, "the trader's +1 was adopted without a pause"
    assert f1.pause_details == {"ES": {"copier": 3, "broker": 4}}
    assert copier_position(f1, "ES") == broker_position(f1, "ES") == 4
    assert sent_at_broker(f1) == [("buy", 2), ("buy", 1)]
    # nothing more is copied to F1 while its trader's hand stands; the stream's statement of
    # the broker's +4 is no news
    broker_events_handle(account=f1, events=[PositionUpdate("ES", 4)])
    leader_fill(leader, "ES", "buy", 1)
    assert Decision.objects.filter(account=f1).latest("event_id").reason == "paused"
    assert broker_position(f1, "ES") == 4


def test_a_run_in_flight_with_nothing_sent_sends_nothing_on_a_view_the_broker_contradicts(
        crash_world):
    """The exit's run started and died before sending F1's order; F1's trader sold its 2 by
    hand while away. While the comparison waits for that run, its re-run must not sell 2
    against the copier's stale +2 (short 2): nothing new goes out before the comparison,
    which then finds the trader's sale (paused, adopted, healed: the leader is flat too)."""
    from copier import tasks
    from tests.factories import broker_position

    leader, f1 = crash_world
    exit_event = _stored_unsent(leader, "sell", 2)
    _away_then_back(f1, ("sell", 2))
    assert copier_position(f1, "ES") == 2
    tasks.process_event(exit_event.pk)
    assert broker_position(f1, "ES") == 0, "the re-run sold against a position the trader closed"
    assert copier_position(f1, "ES") == 0
    f1.refresh_from_db()
    assert not f1.copy_paused  # the trader's sale lines up with the leader's flat: healed


def _stored_unsent(leader: TradingAccount, side: str, qty: int) -> LeaderEvent:
    """A leader event whose first run started (counted) and died before any batch ran."""
    from copier.services import engine
    from tests.services.test_money_safety import stored

    event = stored(leader, "x-unsent", side, qty)
    started = engine.event_start(event_id=event.pk)
    assert started is not None
    return event


def test_the_comparison_waits_for_the_runs_order_in_doubt_and_the_periodic_check_makes_it(
        crash_world):
    """The re-run cannot ask about its order (the look-up fails): the order stays unknown,
    the run is not settled, and the comparison still waits (nothing paused, nothing
    adopted). The periodic check asks again, counts the order, and pauses for what the
    trader did."""
    from copier import tasks
    from copier.models import Order
    from copier.services.sync_guard import position_disagreements_settle
    from tests.factories import broker_position
    from tests.services.test_money_safety import crash_mid_copy, stored

    leader, f1 = crash_world
    entry = stored(leader, "x", "buy", 1)
    crash_mid_copy(entry)
    _away_then_back(f1, ("buy", 1))
    SimBroker(f1).inject(lookup_fail=2)  # the re-run's look-up, then the comparison's
    tasks.process_event(entry.pk)
    order = Order.objects.get(client_order_id__startswith=f"cp{entry.pk}-{f1.pk}-")
    assert order.status == "unknown"
    f1.refresh_from_db()
    assert (f1.copy_paused, f1.compare_pending_since is not None) == (False, True)
    assert copier_position(f1, "ES") == 2
    position_disagreements_settle()
    order.refresh_from_db()
    f1.refresh_from_db()
    assert (order.status, order.filled_qty) == ("filled", 1)
    assert (f1.copy_paused, f1.compare_pending_since) == (True, None)
    assert f1.pause_details == {"ES": {"copier": 3, "broker": 4}}
    assert copier_position(f1, "ES") == broker_position(f1, "ES") == 4
