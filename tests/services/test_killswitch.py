"""The kill switch (copier.services.killswitch) and the modes it sets, against the sim broker.

Each test drives the copier as the listener does (fills at the sim, pumped), calls the
service as the admin or the command would, and reads the broker's books for the truth.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import pytest
from django.db import IntegrityError, transaction

from accounts.models import ConnectionState, Position, TradingAccount
from brokers.registry import adapter_for, adapters_forget
from brokers.sessions import session_save
from brokers.sim import SimBroker
from copier import tasks
from copier.domain.rules import Reason
from copier.models import (
    Alert,
    AlertKind,
    CopyGroup,
    Decision,
    FailedExit,
    Follower,
    LeaderEvent,
    Mode,
    OperatorAction,
    Order,
    Quarantine,
)
from copier.services import engine, killswitch
from copier.services.ingest import FillInput, leader_fill_ingest
from core import clock
from core.trading import Side
from devkit.localvenue import LocalVenue, venue_start
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
    g = group("g", leader, {f1: "1", f2: "2"})
    connect(leader, f1, f2)
    return g, leader, f1, f2


def _reasons(**filters) -> list[tuple[str, str, str]]:
    return list(Decision.objects.filter(**filters).order_by("account__name", "symbol")
                .values_list("account__name", "symbol", "reason"))


# --- entries: stop and resume ------------------------------------------------------------------


def test_entries_stop_holds_back_entries_and_still_copies_exits(world):
    g, leader, f1, f2 = world
    leader_fill(leader, "ES", "buy", 2)
    action = killswitch.entries_stop(groups=[g], by="alice")
    g.refresh_from_db()
    assert g.mode == Mode.EXITS_ONLY
    assert (action.kind, action.by, action.group) == (OperatorAction.Kind.ENTRIES_STOP, "alice", g)
    assert _reasons(action=action) == [("F1", "", "exits_only"), ("F2", "", "exits_only")]
    assert "ES +2" in Decision.objects.get(action=action, account=f1).detail
    assert Alert.objects.filter(kind=AlertKind.KILL_SWITCH, group=g).count() == 1

    leader_fill(leader, "ES", "buy", 1)  # an add: not copied
    assert (broker_position(f1, "ES"), broker_position(f2, "ES")) == (2, 4)
    leader_fill(leader, "ES", "sell", 3)  # the exit: copied
    assert (broker_position(f1, "ES"), broker_position(f2, "ES")) == (0, 0)
    event_reasons = list(Decision.objects.filter(event__isnull=False).order_by(
        "event_id", "account__name").values_list("reason", flat=True))
    assert event_reasons == ["copied", "copied", "exits_only", "exits_only",
                             "close_only", "close_only"]


def test_entries_stop_twice_records_the_second_press_and_changes_nothing(world):
    g, *_ = world
    killswitch.entries_stop(groups=[g], by="alice")
    again = killswitch.entries_stop(groups=None, by="bob")  # every group
    assert "already so: g" in again.detail
    assert not again.decisions.exists()
    assert Alert.objects.filter(kind=AlertKind.KILL_SWITCH).count() == 1


def test_entries_resume_sets_the_group_active_but_keeps_a_followers_own_exits_only(world):
    g, leader, f1, f2 = world
    Follower.objects.filter(account=f2).update(mode=Mode.EXITS_ONLY)
    killswitch.entries_stop(groups=[g], by="alice")
    action = killswitch.entries_resume(groups=[g], by="alice")
    g.refresh_from_db()
    assert g.mode == Mode.ACTIVE
    assert _reasons(action=action) == [("F1", "", "entries_resumed")]
    leader_fill(leader, "ES", "buy", 1)
    assert (broker_position(f1, "ES"), broker_position(f2, "ES")) == (1, 0)


# --- seats: the mode is frozen with the event ---------------------------------------------------


def _stored(leader, fill_id, side, qty):
    with transaction.atomic():
        event = leader_fill_ingest(account=leader, fill=FillInput(fill_id, "ES", side, qty))
        transaction.get_connection().run_on_commit.clear()  # its publish lost
    return event


@pytest.mark.parametrize(("first", "then", "copied"), [(Mode.ACTIVE, Mode.EXITS_ONLY, 1),
                                               (Mode.EXITS_ONLY, Mode.ACTIVE, 0)])
def test_a_run_decides_with_the_mode_the_event_first_saw(world, first, then, copied):
    g, leader, f1, _f2 = world
    CopyGroup.objects.filter(pk=g.pk).update(mode=first)
    event = _stored(leader, "a", "buy", 1)
    started = engine.event_start(event_id=event.pk)  # the first run freezes the seats
    assert started is not None
    CopyGroup.objects.filter(pk=g.pk).update(mode=then)  # changed before the copy ran
    for batch in started.batches:
        engine.seats_copy(event=started.event, seats=batch)
    assert broker_position(f1, "ES") == copied


# --- flatten -----------------------------------------------------------------------------------


def test_flatten_plan_lists_every_order_from_the_confirmed_positions(world):
    g, leader, _f1, f2 = world
    leader_fill(leader, "ES", "buy", 2)
    leader_fill(leader, "NQ", "sell", 1)
    plan = killswitch.flatten_plan(groups=[g])
    assert [(p.account, p.symbol, p.side, p.qty) for p in plan] == [
        ("F1", "ES", Side.SELL, 2), ("F1", "NQ", Side.BUY, 1),
        ("F2", "ES", Side.SELL, 4), ("F2", "NQ", Side.BUY, 2)]
    assert killswitch.flatten_plan(followers=[Follower.objects.get(account=f2)])[0].account == "F2"
    assert Order.objects.count() == 4  # a plan sends nothing


def test_flatten_closes_every_position_then_the_next_entry_is_not_copied(world):
    g, leader, f1, f2 = world
    leader_fill(leader, "ES", "buy", 2)
    result = killswitch.flatten(groups=[g], by="alice")
    assert (broker_position(f1, "ES"), broker_position(f2, "ES")) == (0, 0)
    assert (copier_position(f1, "ES"), copier_position(f2, "ES")) == (0, 0)
    assert _reasons(action=result.action) == [("F1", "ES", "flattened"), ("F2", "ES", "flattened")]
    ids = [o.client_order_id for o in result.orders]
    assert all(i.startswith(f"fl{result.action.pk}-") for i in ids)
    assert Order.objects.filter(client_order_id__in=ids).count() == len(ids)  # on record
    assert [(o.side, o.qty, o.status, o.decision.action_id) for o in result.orders] == [
        ("sell", 2, "filled", result.action.pk), ("sell", 4, "filled", result.action.pk)]
    g.refresh_from_db()
    assert (g.mode, g.enabled) == (Mode.EXITS_ONLY, True)
    assert Alert.objects.filter(kind=AlertKind.KILL_SWITCH, group=g).exists()

    connect(f1, f2)  # the fills of our flatten orders on the stream: counted once
    assert (copier_position(f1, "ES"), copier_position(f2, "ES")) == (0, 0)
    leader_fill(leader, "ES", "buy", 1)
    assert (broker_position(f1, "ES"), broker_position(f2, "ES")) == (0, 0)

    again = killswitch.flatten(groups=[g], by="alice")  # safe twice: nothing to close
    assert again.orders == []
    assert _reasons(action=again.action) == [("F1", "", "exits_only"), ("F2", "", "exits_only")]


@pytest.fixture(params=["projectx", "tradovate"])
def venue(request: pytest.FixtureRequest) -> Iterator[LocalVenue]:
    v = venue_start(request.param)
    try:
        yield v
    finally:
        v.stop()


def _venue_follower(venue: LocalVenue, leader: TradingAccount) -> TradingAccount:
    """A connected follower at the local venue, logged in (its session stored), holding
    ESZ6 +2 there and in the copier's books, with a trader's sell limit resting."""
    ext = venue.account_add("FV")
    acct = TradingAccount.objects.create(
        name="FV", broker=venue.kind, external_id=ext,
        credentials=json.dumps(venue.credentials(ext)),
        connection_state=ConnectionState.CONNECTED)
    group("gv", leader, {acct: "1"})
    adapters_forget()
    session = adapter_for(acct).session_obtain(None)
    assert session is not None
    session_save(acct.pk, session)
    venue.trade(ext, "ESZ6", "buy", 2)
    Position.objects.create(account=acct, symbol="ESZ6", qty=2)
    venue.working_order_add(ext, "ESZ6", "buy", 1)
    return acct


def _working(venue: LocalVenue, ext: str) -> int:
    return sum(1 for o in venue.orders(ext) if o.get("ordStatus", o.get("status"))
               in ("Working", 1))


def test_flatten_cancels_the_followers_working_orders_then_closes_its_position(venue):
    f = _venue_follower(venue, account("L"))
    assert _working(venue, f.external_id) == 1
    result = killswitch.flatten(followers=[Follower.objects.get(account=f)], by="alice")
    assert _working(venue, f.external_id) == 0
    assert venue.positions(f.external_id) == {}
    assert copier_position(f, "ESZ6") == 0
    [decision] = result.decisions
    assert (decision.symbol, decision.reason) == ("ESZ6", Reason.FLATTENED)
    assert "1 working order(s) at the venue cancelled" in decision.detail


def test_a_failed_cancel_is_recorded_and_the_position_is_still_closed():
    venue = venue_start("tradovate")
    try:
        f = _venue_follower(venue, account("L"))
        venue.inject("rate_limit", 1, account_external_id=f.external_id)  # order/list
        result = killswitch.flatten(followers=[Follower.objects.get(account=f)], by="alice")
        assert _working(venue, f.external_id) == 1  # not cancelled: a person must
        assert venue.positions(f.external_id) == {}
        [decision] = result.decisions
        assert decision.reason == Reason.FLATTENED
        assert "working orders at the venue NOT cancelled" in decision.detail
        assert "rate limited" in decision.detail
    finally:
        venue.stop()


def test_flatten_of_one_follower_leaves_the_group_and_the_others_alone(world):
    g, leader, f1, f2 = world
    leader_fill(leader, "ES", "buy", 1)
    killswitch.flatten(followers=[Follower.objects.get(account=f1)], by="alice")
    g.refresh_from_db()
    assert g.mode == Mode.ACTIVE
    assert Follower.objects.get(account=f1).mode == Mode.EXITS_ONLY
    assert Follower.objects.get(account=f2).mode == Mode.ACTIVE
    assert (broker_position(f1, "ES"), broker_position(f2, "ES")) == (0, 2)


def test_flatten_switches_an_off_follower_to_exits_only_so_its_exit_can_go(world):
    _g, leader, f1, _f2 = world
    leader_fill(leader, "ES", "buy", 1)
    Follower.objects.filter(account=f1).update(enabled=False)
    killswitch.flatten(followers=[Follower.objects.get(account=f1)], by="alice")
    f = Follower.objects.get(account=f1)
    assert (f.enabled, f.mode, broker_position(f1, "ES")) == (True, Mode.EXITS_ONLY, 0)


@pytest.mark.usefixtures("frozen_clock")
def test_a_transient_failure_queues_the_exit_and_the_retry_closes_to_flat(world):
    """The leader still holds: an event's queued exit would resolve (C == E(P)); a flatten's
    target is flat, so its retry closes what the follower holds."""
    g, leader, f1, _f2 = world
    leader_fill(leader, "ES", "buy", 2)
    SimBroker(f1).inject(fail=1)
    result = killswitch.flatten(groups=[g], by="alice")
    assert _reasons(action=result.action)[0] == ("F1", "ES", "exit_queued")
    fe = FailedExit.objects.get(account=f1)
    assert (fe.action_id, fe.side, fe.qty, fe.attempts, fe.status) == (
        result.action.pk, "sell", 2, 1, "pending")
    [planned] = killswitch.flatten_plan(groups=[g])  # its queued exit closes it: again
    assert (planned.account, planned.qty, planned.queued) == ("F1", 2, True)
    assert "queued by an earlier flatten: attempted again now" in planned.describe()
    assert broker_position(f1, "ES") == 2
    clock.advance_to(fe.next_attempt_at)
    tasks.retry_failed_exit(fe.pk)
    fe.refresh_from_db()
    assert fe.status == FailedExit.Status.DONE
    assert (broker_position(f1, "ES"), copier_position(f1, "ES")) == (0, 0)


def test_a_rejected_flatten_order_quarantines_and_is_kept_rejected(world):
    g, leader, f1, _f2 = world
    leader_fill(leader, "ES", "buy", 1)
    SimBroker(f1).inject(reject=1)
    result = killswitch.flatten(groups=[g], by="alice")
    assert _reasons(action=result.action)[0] == ("F1", "ES", "rejected")
    assert FailedExit.objects.get(account=f1).status == FailedExit.Status.REJECTED
    assert Quarantine.objects.filter(account=f1, symbol="ES", lifted_at__isnull=True).exists()


@pytest.mark.usefixtures("frozen_clock")  # the retry runs when the test says: at the reconnect
def test_a_disconnected_followers_exit_is_queued_and_sent_on_reconnect(world):
    g, leader, f1, f2 = world
    leader_fill(leader, "ES", "buy", 1)
    SimBroker(f1).set_reachable(False)
    connect(f1)
    result = killswitch.flatten(groups=[g], by="alice")
    assert _reasons(action=result.action) == [("F1", "ES", "exit_queued"),
                                              ("F2", "ES", "flattened")]
    fe = FailedExit.objects.get(account=f1)
    assert (fe.status, fe.attempts, fe.qty) == (FailedExit.Status.PENDING, 0, 1)
    assert broker_position(f1, "ES") == 1
    SimBroker(f1).set_reachable(True)
    connect(f1)
    fe.refresh_from_db()
    assert fe.status == FailedExit.Status.DONE
    assert (broker_position(f1, "ES"), broker_position(f2, "ES")) == (0, 0)


# --- the record --------------------------------------------------------------------------------


def test_a_decision_belongs_to_exactly_one_event_or_action(world):
    _g, leader, f1, _f2 = world
    leader_fill(leader, "ES", "buy", 1)
    action = OperatorAction.objects.create(kind="flatten", by="x", created_at=clock.now())
    event = LeaderEvent.objects.get()
    for kw in ({}, {"event": event, "action": action}):
        with pytest.raises(IntegrityError), transaction.atomic():
            Decision.objects.create(account=f1, symbol="NQ", reason=Reason.FLATTENED,
                                    created_at=clock.now(), **kw)


def test_action_decisions_name_their_action(world):
    g, *_ = world
    action = killswitch.entries_stop(groups=[g], by="alice")
    d = Decision.objects.filter(action=action).first()
    assert str(d).startswith(f"action {action.pk} / ")
    assert str(action) == f"#{action.pk} entries_stop by alice"
    assert d.created_at - clock.now() < dt.timedelta(minutes=1)


# --- the commands ------------------------------------------------------------------------------


def _command(*args: str, stdin: str | None = None) -> str:
    import io

    from django.core.management import call_command

    out = io.StringIO()
    kw = {"stdin": io.StringIO(stdin)} if stdin is not None else {}
    call_command(*args, stdout=out, **kw)
    return out.getvalue()


def test_copier_flatten_prints_the_plan_asks_and_sends(world):
    from django.core.management.base import CommandError

    _g, leader, f1, f2 = world
    leader_fill(leader, "ES", "buy", 1)
    with pytest.raises(CommandError, match="not confirmed"):
        _command("copier_flatten", "--group", "g", stdin="n\n")
    assert broker_position(f1, "ES") == 1
    out = _command("copier_flatten", "--follower", "F1", "--by", "ops", stdin="y\n")
    assert "F1 ES: sell 1" in out
    assert "F1 ES: sell 1 placed (flattened); now +0" in out
    assert (broker_position(f1, "ES"), broker_position(f2, "ES")) == (0, 2)
    out = _command("copier_flatten", "--all", "--yes")
    assert "F2 ES: sell 2 placed (flattened)" in out
    assert OperatorAction.objects.filter(by="ops").count() == 1


@pytest.mark.parametrize(("args", "message"), [
    ((), "say what"), (("--group", "nope"), "no such copy group: nope"),
    (("--follower", "L"), "not a follower of any group: L"),
    (("--all", "--group", "g"), "cannot be combined")])
def test_copier_flatten_refuses_bad_input_and_changes_nothing(world, args, message):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match=message):
        _command("copier_flatten", *args, "--yes")
    assert not OperatorAction.objects.exists()


def test_copier_kill_stops_and_resumes_entries(world):
    g, *_ = world
    assert "entries stopped on: g" in _command("copier_kill", "stop", "--group", "g")
    g.refresh_from_db()
    assert g.mode == Mode.EXITS_ONLY
    assert "entries resumed on: g" in _command("copier_kill", "resume", "--all")
    g.refresh_from_db()
    assert g.mode == Mode.ACTIVE


# --- a flatten is a person's order (docs/rules.md#flatten-and-the-kill-switch) ---------------


def _flatten_exit(acct: TradingAccount) -> FailedExit:
    [fe] = FailedExit.objects.filter(account=acct, action__isnull=False)
    return fe


@pytest.mark.usefixtures("frozen_clock")
def test_a_flattens_retry_closes_what_an_entry_in_doubt_proved_to_hold(world):
    """The follower's add times out at the sim (executed) and cannot be asked about, so the
    flatten queues a sell of the 2 it knows. At the retry the add proves filled: the
    follower holds 3, and the retry sells 3, not the 2 planned."""
    _g, leader, f1, _f2 = world
    leader_fill(leader, "ES", "buy", 2)
    SimBroker(f1).inject(timeout=1, lookup_fail=2)  # the copy's look-up and the flatten's
    leader_fill(leader, "ES", "buy", 1)  # F1's buy 1 executes; its answer is lost
    assert (broker_position(f1, "ES"), copier_position(f1, "ES")) == (3, 2)
    result = killswitch.flatten(followers=[Follower.objects.get(account=f1)], by="alice")
    assert _reasons(action=result.action) == [("F1", "ES", "exit_queued")]
    fe = _flatten_exit(f1)
    assert (fe.side, fe.qty, fe.status) == ("sell", 2, "pending")
    clock.advance_to(fe.next_attempt_at)
    tasks.retry_failed_exit(fe.pk)
    fe.refresh_from_db()
    assert (fe.status, fe.side, fe.qty) == (FailedExit.Status.DONE, "sell", 3)
    assert (broker_position(f1, "ES"), copier_position(f1, "ES")) == (0, 0)


@pytest.mark.usefixtures("frozen_clock")
def test_a_flattens_retry_closes_a_buy_made_by_hand_before_it(world):
    _g, leader, f1, _f2 = world
    leader_fill(leader, "ES", "buy", 2)
    SimBroker(f1).inject(fail=1)
    killswitch.flatten(followers=[Follower.objects.get(account=f1)], by="alice")
    fe = _flatten_exit(f1)
    assert (fe.qty, fe.attempts, fe.status) == (2, 1, "pending")
    leader_fill(f1, "ES", "buy", 1)  # the trader, by hand, seen on the stream
    assert copier_position(f1, "ES") == 3
    clock.advance_to(fe.next_attempt_at)
    tasks.retry_failed_exit(fe.pk)
    fe.refresh_from_db()
    assert (fe.status, fe.qty) == (FailedExit.Status.DONE, 3)
    assert (broker_position(f1, "ES"), copier_position(f1, "ES")) == (0, 0)


@pytest.mark.usefixtures("frozen_clock")
def test_a_flatten_queued_while_away_goes_out_at_the_reconnect_that_pauses(world):
    """Away, the follower is flattened (queued) and the trader buys 1 by hand: the reconnect
    sees the difference and pauses, and the flatten's exit goes out all the same, at once,
    closing the 3 held."""
    _g, leader, f1, _f2 = world
    leader_fill(leader, "ES", "buy", 2)
    SimBroker(f1).set_reachable(False)
    connect(f1)
    killswitch.flatten(followers=[Follower.objects.get(account=f1)], by="alice")
    fe = _flatten_exit(f1)
    assert (fe.qty, fe.attempts, fe.status) == (2, 0, "pending")
    SimBroker(f1).execute_fill("ES", "buy", 1)  # unseen: the broker is away for the copier
    SimBroker(f1).set_reachable(True)
    connect(f1)  # the reconnect: compared, paused, the flatten's exit attempted at once
    f1.refresh_from_db()
    assert f1.copy_paused
    fe.refresh_from_db()
    assert (fe.status, fe.qty, fe.attempts) == (FailedExit.Status.DONE, 3, 0)
    assert (broker_position(f1, "ES"), copier_position(f1, "ES")) == (0, 0)


@pytest.mark.usefixtures("frozen_clock")
def test_a_paused_followers_flatten_exit_is_due_and_claimed_but_an_events_waits(world):
    """Paused: the event's queued exit waits for the heal; the flatten's is due as usual."""
    _g, leader, f1, _f2 = world
    leader_fill(leader, "ES", "buy", 2)
    leader_fill(leader, "NQ", "buy", 1)
    SimBroker(f1).inject(fail=2)
    leader_fill(leader, "NQ", "sell", 1)  # F1's exit fails: queued, the event's
    killswitch.flatten(followers=[Follower.objects.get(account=f1)], by="alice")
    TradingAccount.objects.filter(pk=f1.pk).update(copy_paused=True, pause_reason="test")
    flat = _flatten_exit(f1)
    event_exit = FailedExit.objects.get(account=f1, action__isnull=True)
    clock.advance_to(clock.now() + dt.timedelta(minutes=1))
    assert tasks.retry_failed_exit(event_exit.pk) is None
    due = [fe_id for fe_id, _about in killswitch.failed_exits.failed_exits_due()]
    assert flat.pk in due
    assert event_exit.pk not in due
    assert tasks.retry_failed_exit(flat.pk) == FailedExit.Status.DONE
    assert (broker_position(f1, "ES"), broker_position(f1, "NQ")) == (0, 0)  # NQ: the flatten's
    event_exit.refresh_from_db()
    assert (event_exit.status, event_exit.attempts) == ("pending", 1)  # waits for the heal


@pytest.mark.usefixtures("frozen_clock")
def test_flattening_again_attempts_the_queued_exit_at_once_and_queues_no_second(world):
    _g, leader, f1, _f2 = world
    leader_fill(leader, "ES", "buy", 2)
    SimBroker(f1).inject(fail=1)
    killswitch.flatten(followers=[Follower.objects.get(account=f1)], by="alice")
    fe = _flatten_exit(f1)
    assert (fe.status, fe.attempts) == ("pending", 1)
    assert fe.next_attempt_at > clock.now()  # its backoff
    again = killswitch.flatten(followers=[Follower.objects.get(account=f1)], by="bob")
    fe.refresh_from_db()
    assert (fe.status, fe.qty, fe.attempts) == (FailedExit.Status.DONE, 2, 1)
    assert FailedExit.objects.filter(account=f1).count() == 1
    assert (broker_position(f1, "ES"), copier_position(f1, "ES")) == (0, 0)
    [decision] = again.decisions
    assert (decision.symbol, decision.reason) == ("ES", Reason.FLATTENED)
    assert "queued exit" in decision.detail
    assert (decision.position_before, decision.position_after) == (2, 0)


def test_a_flattens_queued_exit_cancels_the_working_orders_before_it_closes(venue):
    """Away at the flatten, nothing could be cancelled; its queued exit's attempt at the
    reconnect cancels the trader's resting order first, then closes what is held."""
    from copier.services.sync_guard import connection_lost, connection_restored

    f = _venue_follower(venue, account("L"))
    connection_lost(account=f, reason="test: away")
    result = killswitch.flatten(followers=[Follower.objects.get(account=f)], by="alice")
    [decision] = result.decisions
    assert "NOT cancelled: follower disconnected" in decision.detail
    assert (_working(venue, f.external_id), venue.positions(f.external_id)) == (1, {"ESZ6": 2})
    connection_restored(account=f)  # the listener's reconnect: the queued exit at once
    assert _working(venue, f.external_id) == 0
    assert venue.positions(f.external_id) == {}
    assert _flatten_exit(f).status == FailedExit.Status.DONE
