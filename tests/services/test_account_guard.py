"""The account guard through the database (copier.services.guard, the beat task, the kill
switch it acts with), against the sim broker: equity read from the sim's priced fills and
last prices, the line trailed, the follower flattened and locked inside the buffer with a
decision and an alert with the numbers, entries held while locked, only a person resuming
it, a warning that changes nothing, the venue's own stop, a failed read that changes
nothing, a soft stop that ends with its session and a profit target that does not."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from accounts.models import TradingAccount
from brokers.base import PermanentBrokerError
from brokers.models import SimAccount
from brokers.sim import SimBroker
from copier import tasks
from copier.domain.guard import GuardState
from copier.domain.rules import Reason
from copier.models import AccountGuard, Alert, AlertKind, AuditEntry, Decision, Follower, Mode
from copier.services import guard, killswitch
from core import clock
from core.trading import Side
from tests.factories import T0, account, broker_position, connect, group

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"),
              pytest.mark.usefixtures("eager_tasks", "frozen_clock")]
SYMBOL = "MNQ"  # $2 a point
# T0 is Monday 2 March 2026 15:00 UTC, 09:00 in Chicago: the session reset is 23:00 UTC
RESET = dt.datetime(2026, 3, 2, 23, 0, tzinfo=dt.UTC)


def fill(acct: TradingAccount, side: str, qty: int, price: str | None = None) -> None:
    """A trade of the leader at the sim (at `price`, the market's from then on), seen by
    the listener and copied."""
    from copier.services.stream_events import broker_events_pump

    SimBroker(acct).execute_fill(SYMBOL, Side(side), qty, price=price)
    acct.refresh_from_db()
    broker_events_pump(account=acct)


def check() -> dict[str, int]:
    return tasks.check_guards.delay().get()


def decisions(f: TradingAccount) -> list[Decision]:
    return list(Decision.objects.filter(account=f).order_by("id"))


def guard_of(f: TradingAccount) -> AccountGuard:
    return AccountGuard.objects.get(account=f)


@pytest.fixture
def world():
    """An Apex-like 50K: $2,500 trailing on the intraday peak, stopping at start + $100,
    a $150 buffer and a $400 warning."""
    leader, f = account("L"), account("F3")
    group("g", leader, {f: "1"})
    connect(leader, f)
    AccountGuard.objects.create(
        account=f, starting_balance=Decimal(50000), drawdown=Decimal(2500),
        drawdown_model=AccountGuard.Model.INTRADAY_TRAILING, trail_stop=Decimal(100),
        buffer=Decimal(150), warn=Decimal(400))
    return leader, f


def test_the_sim_reads_equity_from_its_cash_fills_and_last_prices(world):
    leader, f = world
    fill(leader, "buy", 2, "20000")
    SimBroker.price_set(SYMBOL, "20100")
    eq = SimBroker(f).equity_read()
    assert (eq.balance, eq.open_pnl, eq.contracts, eq.can_trade) == (
        Decimal("50000.00"), Decimal("400.00"), 2, True)  # 100 points x 2 x $2
    fill(leader, "sell", 1, "20050")  # F realises 50 x $2, holds 1 from 20000
    eq = SimBroker(f).equity_read()
    assert (eq.balance, eq.open_pnl, eq.contracts) == (
        Decimal("50100.00"), Decimal("100.00"), 1)
    SimAccount.objects.filter(account=f).update(closed=True)
    assert SimBroker(f).equity_read().can_trade is False


def test_a_position_the_sim_cannot_value_is_an_error_not_a_guess(world):
    _leader, f = world
    SimBroker(f).execute_fill("ZB", Side.BUY, 1, price="110")  # no point value for ZB
    with pytest.raises(PermanentBrokerError, match="open P&L of ZB cannot be valued"):
        SimBroker(f).equity_read()


def test_inside_the_buffer_the_follower_is_flattened_and_locked_until_a_person_resumes(world):
    leader, f = world
    fill(leader, "buy", 2, "20000")
    SimBroker.price_set(SYMBOL, "21000")  # +$4,000 open: the peak is $54,000
    assert check() == {"read": 1, "failed": 0, "locked": 0}
    row = guard_of(f)
    assert (row.high_water, row.line, row.state) == (Decimal("54000.00"), Decimal("50100.00"),
                                                     GuardState.OK)  # stopped at start + 100
    # the market falls: equity 50,000 + (20,060 - 20,000) x 2 x $2 = $50,240, within the
    # $150 buffer over the $50,100 line (it acts at $50,250 or less)
    SimBroker.price_set(SYMBOL, "20060")
    clock.advance_to(T0 + dt.timedelta(seconds=5))
    assert check()["locked"] == 1
    row.refresh_from_db()
    assert (row.state, row.equity, row.locked_at) == (
        GuardState.LOCKED, Decimal("50240.00"), T0 + dt.timedelta(seconds=5))
    assert broker_position(f, SYMBOL) == 0
    follower = Follower.objects.get(account=f)
    assert follower.mode == Mode.EXITS_ONLY
    flattened = decisions(f)[-1]
    assert flattened.reason == Reason.FLATTENED
    alert = Alert.objects.get(kind=AlertKind.GUARD)
    assert alert.text.startswith(
        "F3: equity $50,240, line $50,100, buffer $150: flattened MNQ +2; entries locked")
    assert alert.text.endswith("entries locked until a person resumes (admin: Account guards)")
    # the leader enters again: not copied; readings go on and alert nothing new
    fill(leader, "buy", 1, "20060")
    assert decisions(f)[-1].reason == Reason.EXITS_ONLY
    assert broker_position(f, SYMBOL) == 0
    clock.advance_to(T0 + dt.timedelta(seconds=10))
    check()
    assert Alert.objects.filter(kind=AlertKind.GUARD).count() == 1
    # the follower's own switch may not set it active: the guard is resumed instead
    with pytest.raises(killswitch.GuardLocked, match="account guard of F3 locked"):
        killswitch.follower_switch(follower=follower, to=killswitch.Switch(True, Mode.ACTIVE),
                                   by="trader")
    assert Follower.objects.get(account=f).mode == Mode.EXITS_ONLY
    done = guard.guard_resume(row, by="boss")
    assert done.resumed == ("F3 in g",)
    row.refresh_from_db()
    assert (row.state, row.resumed_by, row.switched) == (GuardState.OK, "boss", [])
    assert Follower.objects.get(account=f).mode == Mode.ACTIVE
    entry = AuditEntry.objects.get(action=AuditEntry.Action.GUARD_RESUME)
    assert (entry.who, entry.changes) == ("boss", {"state": ["locked", "ok"]})


def test_a_line_the_venue_publishes_above_the_computed_one_is_acted_at(world):
    leader, f = world
    fill(leader, "buy", 2, "20000")
    SimBroker.price_set(SYMBOL, "20000")
    read = SimBroker(f).equity_read()  # $50,000: $2,500 over the computed $47,500
    # the firm's own line at $49,900: the guard acts at $50,050 or less, so now
    outcome = guard.reading_seen(f.pk, replace(read, line=Decimal("49900.00")))
    assert (outcome.state, outcome.line, outcome.flattened) == (
        GuardState.LOCKED, Decimal("49900.00"), ("MNQ +2",))
    row = guard_of(f)
    assert (row.line, row.line_source, row.high_water) == (
        Decimal("49900.00"), "venue", Decimal("50000.00"))  # the marks are the copier's
    assert broker_position(f, SYMBOL) == 0
    guard.guard_resume(row, by="boss")
    # a published line below the computed one changes nothing: the computed one stands
    clock.advance_to(T0 + dt.timedelta(seconds=5))
    outcome = guard.reading_seen(f.pk, replace(SimBroker(f).equity_read(),
                                               line=Decimal("47000.00")))
    assert (outcome.state, outcome.line) == (GuardState.OK, Decimal("47500.00"))
    assert guard_of(f).line_source == "computed"


def test_a_locked_account_still_holding_is_flattened_again_not_on_every_reading(world):
    leader, f = world
    fill(leader, "buy", 2, "20000")
    SimBroker.price_set(SYMBOL, "19000")  # equity $46,000: far inside
    SimAccount.objects.filter(account=f).update(fail_next=1)  # the flatten's exit fails
    check()
    assert guard_of(f).state == GuardState.LOCKED
    SimBroker(f).execute_fill(SYMBOL, Side.BUY, 1)  # and a trade raced it
    connect(f)
    held = broker_position(f, SYMBOL)
    assert held != 0
    clock.advance_to(T0 + dt.timedelta(seconds=5))
    check()  # 5 s later: the last flatten's exits are given time
    assert broker_position(f, SYMBOL) == held
    clock.advance_to(T0 + dt.timedelta(seconds=31))
    check()
    assert broker_position(f, SYMBOL) == 0


def test_the_warning_alerts_once_and_changes_nothing(world):
    leader, f = world
    fill(leader, "buy", 1, "20000")
    SimBroker.price_set(SYMBOL, "19900")  # equity $49,800 over the $47,500 line: fine
    check()
    assert guard_of(f).state == GuardState.OK
    SimBroker.price_set(SYMBOL, "18950")  # $47,900: within $400 of the line
    check()
    check()
    row = guard_of(f)
    assert row.state == GuardState.WARNING
    alert = Alert.objects.get(kind=AlertKind.GUARD)
    assert alert.text == ("F3: equity $47,900 is within $400 of the line $47,500: copying "
                          "goes on")
    assert Follower.objects.get(account=f).mode == Mode.ACTIVE
    fill(leader, "buy", 1, "18950")
    assert decisions(f)[-1].reason == Reason.COPIED


def test_the_venue_stopping_the_account_pauses_the_follower_without_orders(world):
    leader, f = world
    fill(leader, "buy", 1, "20000")
    SimAccount.objects.filter(account=f).update(closed=True)
    check()
    row = guard_of(f)
    assert row.state == GuardState.LOCKED
    assert row.findings[0] == {"trip": "venue", "why": "account closed"}
    assert Follower.objects.get(account=f).mode == Mode.EXITS_ONLY
    assert broker_position(f, SYMBOL) == 1  # nothing sent to a venue that refuses it
    assert "the venue stopped the account: account closed" in Alert.objects.get(
        kind=AlertKind.GUARD).text


def test_a_failed_read_changes_nothing_and_is_alerted_once_per_session(world):
    _leader, f = world
    check()
    SimBroker(f).set_reachable(False)
    assert check() == {"read": 0, "failed": 1, "locked": 0}
    check()
    row = guard_of(f)
    assert "unreachable" in row.read_error
    assert row.state == GuardState.OK
    failed = Alert.objects.get(kind=AlertKind.GUARD)
    assert "the account guard is blind until it can be. Nothing was changed." in failed.text


def test_a_soft_daily_loss_stops_entries_for_the_session_only(world):
    leader, f = world
    AccountGuard.objects.filter(account=f).update(daily_loss=Decimal(600),
                                                  daily_loss_hard=False)
    fill(leader, "buy", 2, "20000")
    SimBroker.price_set(SYMBOL, "19880")  # -$480 open: within the $150 buffer of $600
    check()
    row = guard_of(f)
    assert row.state == GuardState.ENTRIES_STOPPED
    assert broker_position(f, SYMBOL) == 2  # soft: positions kept
    assert Follower.objects.get(account=f).mode == Mode.EXITS_ONLY
    # the market comes back within the session: still stopped, the reason kept
    SimBroker.price_set(SYMBOL, "20000")
    clock.advance_to(T0 + dt.timedelta(minutes=5))
    check()
    assert guard_of(f).state == GuardState.ENTRIES_STOPPED
    assert guard_of(f).findings[0]["trip"] == "daily_loss"
    # the next session: entries copy again, set active by the guard that stopped them
    clock.advance_to(RESET + dt.timedelta(minutes=1))
    check()
    assert guard_of(f).state == GuardState.OK
    assert Follower.objects.get(account=f).mode == Mode.ACTIVE
    fill(leader, "buy", 1, "20000")
    assert decisions(f)[-1].reason == Reason.COPIED


def test_a_profit_target_stops_entries_until_a_person_resumes(world):
    leader, f = world
    AccountGuard.objects.filter(account=f).update(profit_target=Decimal(3000))
    fill(leader, "buy", 2, "20000")
    SimBroker.price_set(SYMBOL, "20800")  # +$3,200
    check()
    assert guard_of(f).state == GuardState.ENTRIES_STOPPED
    assert "evaluation passed, entries stopped" in Alert.objects.get(kind=AlertKind.GUARD).text
    clock.advance_to(RESET + dt.timedelta(minutes=1))
    check()
    assert guard_of(f).state == GuardState.ENTRIES_STOPPED  # not a soft stop
    assert Follower.objects.get(account=f).mode == Mode.EXITS_ONLY


def test_an_end_of_day_line_moves_at_the_session_close_only(world):
    leader, f = world
    AccountGuard.objects.filter(account=f).update(
        drawdown_model=AccountGuard.Model.EOD_TRAILING, drawdown=Decimal(2000),
        trail_stop=Decimal(0))
    fill(leader, "buy", 1, "20000")
    fill(leader, "sell", 1, "20500")  # F realises +$1,000: balance $51,000
    SimBroker.price_set(SYMBOL, "20500")
    check()
    assert guard_of(f).line == Decimal("48000.00")  # the day is not over
    clock.advance_to(RESET + dt.timedelta(minutes=1))
    check()
    row = guard_of(f)
    assert (row.high_water, row.line, row.day_start) == (
        Decimal("51000.00"), Decimal("49000.00"), Decimal("51000.00"))


def test_a_person_sets_the_line_where_the_history_is_unknown(world):
    _leader, f = world
    check()
    row = guard.line_set(guard_of(f), Decimal(49000), by="boss")
    assert (row.line, row.line_source, row.high_water) == (
        Decimal("49000.00"), "person", Decimal("51500.00"))
    check()
    assert guard_of(f).line == Decimal("49000.00")
    assert AuditEntry.objects.filter(action=AuditEntry.Action.GUARD_LINE).count() == 1


def test_a_profile_that_makes_no_sense_is_refused_by_the_form():
    f = account("F")
    row = AccountGuard(account=f, starting_balance=Decimal(50000), drawdown=Decimal(2000),
                       buffer=Decimal(2500))
    with pytest.raises(ValidationError, match="The buffer must be smaller than the drawdown"):
        row.full_clean()
    row.buffer, row.tz = Decimal(150), "Mars/Olympus"
    with pytest.raises(ValidationError, match="is not a time zone"):
        row.full_clean()


def test_the_check_is_a_periodic_task_on_the_housekeeping_queue():
    from copier.periodic import BY_TASK
    from copier.shell.celery import app

    periodic = BY_TASK["copier.check_guards"]
    assert periodic.seconds() == 5
    assert app.amqp.router.route({}, "copier.check_guards")["queue"].name == "housekeeping"


def test_an_entry_whose_worst_case_reaches_the_buffer_is_not_copied_exits_still_are(world):
    leader, f = world
    # $500 assumed per contract held: equity $50,000 less 2 x $500 stays above the
    # $47,650 the guard acts at, 6 x $500 would not
    AccountGuard.objects.filter(account=f).update(risk_per_contract=Decimal(500))
    SimBroker.price_set(SYMBOL, "20000")
    check()
    fill(leader, "buy", 2)
    assert broker_position(f, SYMBOL) == 2
    check()
    fill(leader, "buy", 4)
    held = decisions(f)[-1]
    assert held.reason == Reason.RISK_LIMIT
    assert ("account guard: entry buy 4 not copied: equity $50,000 less a worst case of "
            "$3,000 is within the buffer $150 of the line $47,500") in held.detail
    from copier.console.decisions import decision_text
    assert "risk limits cut or held back the entry (account guard: entry buy 4 not copied" in (
        decision_text(held))  # the console's words, from the note's numbers
    assert broker_position(f, SYMBOL) == 2
    fill(leader, "sell", 6)  # the leader exits: the follower's exit goes out
    assert broker_position(f, SYMBOL) == 0


def test_max_contracts_cuts_an_entry_to_the_room_left(world):
    leader, f = world
    AccountGuard.objects.filter(account=f).update(max_contracts=3)
    SimBroker.price_set(SYMBOL, "20000")
    check()
    fill(leader, "buy", 5)
    cut = decisions(f)[-1]
    assert cut.reason == Reason.RISK_LIMIT
    assert "account guard: max contracts 3: holds 0, room for 3 of buy 5" in cut.detail
    assert broker_position(f, SYMBOL) == 3


def test_an_event_read_while_the_guard_stops_entries_holds_them_whatever_the_switch(world):
    """The guard's stop is frozen with the event: an entry read after the stop and before
    the follower's switch was changed is held all the same."""
    leader, f = world
    SimBroker.price_set(SYMBOL, "20000")
    check()
    row = guard_of(f)
    row.state, row.findings = "locked", [{"trip": "venue", "why": "liquidate only"}]
    row.save()
    assert Follower.objects.get(account=f).mode == Mode.ACTIVE
    fill(leader, "buy", 1)
    held = decisions(f)[-1]
    assert held.reason == Reason.RISK_LIMIT
    assert ("account guard locked (the venue stopped the account: liquidate only): entry "
            "buy 1 not copied") in held.detail
    assert broker_position(f, SYMBOL) == 0


def test_a_fill_on_the_account_makes_its_guard_read_it_at_once(world):
    """No periodic check here: the follower's own fill (copied from the leader) changes its
    equity, and the stream router has its guard read it."""
    leader, f = world
    fill(leader, "buy", 2, "20000")
    SimBroker.price_set(SYMBOL, "18900")  # nobody is told: -$4,400 open
    assert guard_of(f).state == GuardState.OK
    fill(leader, "buy", 1)  # copied: F buys 1 at 18,900
    assert guard_of(f).state == GuardState.OK
    connect(f)  # F's stream delivers that fill: its guard reads equity $45,600
    row = guard_of(f)
    assert (row.state, row.equity) == (GuardState.LOCKED, Decimal("45600.00"))
    assert broker_position(f, SYMBOL) == 0


def test_the_sims_market_moving_makes_the_guards_of_its_holders_read_at_once(world):
    leader, f = world
    other = account("F9")  # guarded, holds nothing: not read
    AccountGuard.objects.create(account=other, starting_balance=Decimal(50000),
                                drawdown=Decimal(2000))
    fill(leader, "buy", 2, "20000")
    SimBroker.price_set(SYMBOL, "19000")
    assert guard.market_moved(SYMBOL) == 1
    assert guard_of(f).state == GuardState.LOCKED
    assert broker_position(f, SYMBOL) == 0
    assert AccountGuard.objects.get(account=other).read_at is None


def test_an_account_no_group_copies_to_is_alerted_never_traded():
    """A guard on the trader's own account (no follower): its line is watched and alerted,
    but the copier sends it no order."""
    own = account("OWN")
    connect(own)
    AccountGuard.objects.create(account=own, starting_balance=Decimal(50000),
                                drawdown=Decimal(2000))
    SimBroker(own).execute_fill(SYMBOL, Side.BUY, 1, price="20000")
    SimBroker.price_set(SYMBOL, "19000")
    check()
    assert guard_of(own).state == GuardState.LOCKED
    assert broker_position(own, SYMBOL) == 1
    from copier.models import OperatorAction

    assert not OperatorAction.objects.exists()  # no flatten recorded, none sent
    assert "entries locked until a person resumes" in Alert.objects.get(
        kind=AlertKind.GUARD).text


def test_the_venues_word_on_the_account_makes_its_guard_read_it_once_a_batch(
        world, monkeypatch):
    """A batch with the venue's account news (and a fill) publishes one guard read for a
    guarded account, saying every reason once; an unguarded account's news publishes none."""
    from brokers.base import AccountChanged, Fill
    from copier import publisher
    from copier.services.stream_events import broker_events_handle

    _leader, f = world
    unguarded = account("F8")
    published: list[tuple[list[int], str]] = []
    publish = publisher.guard_read_publish

    def spy(account_ids: list[int], *, about: str = "") -> None:
        published.append((list(account_ids), about))
        publish(account_ids, about=about)

    monkeypatch.setattr(publisher, "guard_read_publish", spy)
    assert guard_of(f).read_at is None
    broker_events_handle(account=f, events=[
        AccountChanged("account update"), Fill("by-hand", SYMBOL, Side.BUY, 1, clock.now()),
        AccountChanged("account update: canTrade false", can_trade=False),
        AccountChanged("account update")])
    assert published == [([f.pk], "account update, fill, account update: canTrade false")]
    row = guard_of(f)
    assert row.read_at == clock.now()  # read at once (eager), not at the periodic check
    assert row.equity == Decimal("50000.00")
    broker_events_handle(account=unguarded, events=[AccountChanged("cash balance")])
    assert len(published) == 1
    assert not AccountGuard.objects.filter(account=unguarded).exists()


def test_accounts_crossing_together_are_read_in_one_batch_and_flattened_in_one_round(world):
    """A market move that crosses several guards at once: one task reads them together and
    one flatten (one operator action) closes them all, each alert saying its own."""
    from copier.models import OperatorAction

    leader, f = world
    f2 = account("F4")
    group("g2", leader, {f2: "1"})
    connect(f2)
    AccountGuard.objects.create(account=f2, starting_balance=Decimal(50000),
                                drawdown=Decimal(2000))
    fill(leader, "buy", 2, "20000")
    SimBroker.price_set(SYMBOL, "19000")
    assert guard.market_moved(SYMBOL) == 2
    assert {g.state for g in AccountGuard.objects.all()} == {GuardState.LOCKED}
    assert (broker_position(f, SYMBOL), broker_position(f2, SYMBOL)) == (0, 0)
    flatten = OperatorAction.objects.get()  # one flatten for both accounts
    assert flatten.detail == "flatten followers: F3, F4"
    texts = sorted(a.text for a in Alert.objects.filter(kind=AlertKind.GUARD))
    assert [t.split(":")[0] for t in texts] == ["F3", "F4"]
    assert all("flattened MNQ +2" in t for t in texts)  # each says what was its own


def test_one_accounts_row_that_cannot_be_judged_leaves_the_rest_of_its_batch_guarded(world):
    leader, f = world
    bad = account("F5")
    group("g5", leader, {bad: "1"})
    connect(bad)
    # numbers the admin would refuse, written around it: the buffer is the whole drawdown
    AccountGuard.objects.create(account=bad, starting_balance=Decimal(50000),
                                drawdown=Decimal(2000), buffer=Decimal(2000))
    fill(leader, "buy", 2, "20000")
    SimBroker.price_set(SYMBOL, "19000")
    assert guard.market_moved(SYMBOL) == 2
    assert guard_of(f).state == GuardState.LOCKED
    assert broker_position(f, SYMBOL) == 0
    row = guard_of(bad)
    assert "the buffer must be smaller than the drawdown" in row.read_error
    assert "its reading could not be judged" in Alert.objects.get(kind=AlertKind.GUARD,
                                                                  account=bad).text


def test_a_reading_the_database_cannot_hold_leaves_the_rest_of_its_batch_guarded(world):
    """A batch's rows are written in one statement; a number that does not fit a row's
    columns (an equity past a trillion) fails that statement, and the batch is kept row
    by row: the others' readings kept, that one alerted and its row left as it was."""
    leader, f = world
    huge = account("F9")
    group("g9", leader, {huge: "1"})
    connect(huge)
    top = Decimal("999999999999.99")  # the columns' largest number
    AccountGuard.objects.create(account=huge, starting_balance=top, drawdown=Decimal(2000))
    fill(leader, "buy", 2, "20000")
    SimAccount.objects.using("broker").filter(account=huge).update(cash=top)
    SimBroker.price_set(SYMBOL, "20100")  # +$400 open: past what the columns hold
    AccountGuard.objects.update(read_at=None)
    assert guard.market_moved(SYMBOL) == 2
    assert (guard_of(f).read_at, guard_of(f).equity) == (clock.now(), Decimal("50400.00"))
    row = guard_of(huge)
    assert (row.state, row.read_at, row.equity) == (GuardState.OK, None, None)
    assert "NumericValueOutOfRange" in row.read_error or "DataError" in row.read_error
    assert "its reading could not be judged" in Alert.objects.get(kind=AlertKind.GUARD,
                                                                  account=huge).text


def test_the_sim_reads_many_books_as_it_reads_one(world):
    """`equity_read_many`, the guard's batch read: the same numbers as each book's own
    read, and each book's error in its place, not raised."""
    leader, f = world
    flat, odd, away = account("F6"), account("F7"), account("F8")
    fill(leader, "buy", 2, "20000")
    fill(leader, "sell", 1, "20050")
    SimBroker.price_set(SYMBOL, "20100")
    SimBroker(odd).execute_fill("ZB", Side.BUY, 1, price="110")  # no point value for ZB
    SimBroker(away).set_reachable(False)
    many = SimBroker.equity_read_many([f, flat, odd, away])
    assert many[0] == SimBroker(f).equity_read()
    assert many[1] == SimBroker(flat).equity_read()
    assert (many[1].balance, many[1].contracts) == (Decimal("50000.00"), 0)
    assert isinstance(many[2], PermanentBrokerError)
    assert "open P&L of ZB cannot be valued" in many[2].message
    assert "unreachable" in many[3].message
