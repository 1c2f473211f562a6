"""The account guard's rules (copier/domain/guard.py, docs/rules.md#the-account-guard): a
worked example per drawdown model, then the properties for any price path."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copier.domain.guard import (
    DrawdownModel,
    GuardRules,
    GuardState,
    Marks,
    Reading,
    Trip,
    entry_check,
    evaluate,
    in_flat_window,
    line,
    line_chosen,
    marks_at_close,
    marks_rolled,
    marks_seen,
)

D = Decimal
NOON_CT = dt.datetime(2026, 3, 2, 18, 0, tzinfo=dt.UTC)  # 12:00 in Chicago

TOPSTEP_50K = GuardRules(starting_balance=D(50000), drawdown=D(2000),
                         model=DrawdownModel.EOD_TRAILING, trail_stop=D(0), buffer=D(150),
                         warn=D(400), daily_loss=D(1000), flat_by=dt.time(15, 10))
APEX_50K_INTRADAY = GuardRules(starting_balance=D(50000), drawdown=D(2500),
                               model=DrawdownModel.INTRADAY_TRAILING, trail_stop=D(100),
                               buffer=D(150))
STATIC_50K = GuardRules(starting_balance=D(50000), drawdown=D(2000), buffer=D(200))


def reading(equity: str | int, contracts: int = 0) -> Reading:
    return Reading(balance=D(equity), open_pnl=D(0), contracts=contracts)


# --- the line per model ----------------------------------------------------------------------

def test_a_static_line_never_moves():
    marks = Marks.fresh(STATIC_50K)
    marks = marks_seen(STATIC_50K, marks, D(56000))
    marks = marks_at_close(STATIC_50K, marks, D(56000))
    assert line(STATIC_50K, marks) == D(48000)


def test_topstep_trails_the_end_of_day_high_and_stops_at_the_starting_balance():
    marks = Marks.fresh(TOPSTEP_50K)
    assert line(TOPSTEP_50K, marks) == D(48000)
    # an intraday high of $51,500 moves nothing: the trail follows the close
    marks = marks_seen(TOPSTEP_50K, marks, D(51500))
    assert line(TOPSTEP_50K, marks) == D(48000)
    marks = marks_at_close(TOPSTEP_50K, marks, D(51000))
    assert line(TOPSTEP_50K, marks) == D(49000)
    marks = marks_at_close(TOPSTEP_50K, marks, D(50500))  # a losing day: the line stays
    assert line(TOPSTEP_50K, marks) == D(49000)
    marks = marks_at_close(TOPSTEP_50K, marks, D(53000))
    assert line(TOPSTEP_50K, marks) == D(50000)  # stopped at the starting balance
    marks = marks_at_close(TOPSTEP_50K, marks, D(56000))
    assert line(TOPSTEP_50K, marks) == D(50000)


def test_apex_intraday_trails_the_open_equity_peak_and_locks_at_start_plus_100():
    marks = Marks.fresh(APEX_50K_INTRADAY)
    assert line(APEX_50K_INTRADAY, marks) == D(47500)
    verdict = evaluate(APEX_50K_INTRADAY, marks,
                       Reading(balance=D(50000), open_pnl=D(1200), contracts=2), when=NOON_CT)
    assert verdict.line == D(48700)  # the unrealised peak counts at once
    assert verdict.state == GuardState.OK
    # the trade gives it all back and more: the line stays where the peak put it
    after = evaluate(APEX_50K_INTRADAY, verdict.marks,
                     Reading(balance=D(50000), open_pnl=D(-1300), contracts=2), when=NOON_CT)
    assert after.line == D(48700)
    assert after.state == GuardState.LOCKED
    assert after.flatten
    marks = marks_seen(APEX_50K_INTRADAY, after.marks, D(60000))
    assert line(APEX_50K_INTRADAY, marks) == D(50100)


def test_a_session_closes_at_the_reset_and_a_week_with_sundays_session():
    marks = Marks(high_water=D(50000), day_start=D(50000), week_start=D(49000))
    noon_fri = dt.datetime(2026, 3, 6, 18, 0, tzinfo=dt.UTC)
    # within Friday's session (it began Thursday 17:00 CT): nothing rolls
    same, closed = marks_rolled(TOPSTEP_50K, marks, D(51000), noon_fri,
                                noon_fri + dt.timedelta(hours=4))
    assert (same, closed) == (marks, False)
    # past Friday 17:00 CT (23:00 UTC): the day closed at $51,000, the week goes on
    after, closed = marks_rolled(TOPSTEP_50K, marks, D(51000), noon_fri,
                                 dt.datetime(2026, 3, 6, 23, 30, tzinfo=dt.UTC))
    assert closed
    assert (after.high_water, after.day_start, after.week_start) == (
        D(51000), D(51000), D(49000))
    # Sunday 17:00 CT opens a new week: its losses count from the close before it
    sunday, closed = marks_rolled(TOPSTEP_50K, after, D(51200), noon_fri,
                                  dt.datetime(2026, 3, 8, 22, 30, tzinfo=dt.UTC))
    assert closed
    assert sunday.week_start == D(51200)


def test_a_person_can_say_where_the_line_is_now():
    marks = Marks.from_line(TOPSTEP_50K, D(48100), balance=D(49000))
    assert line(TOPSTEP_50K, marks) == D(48100)
    with pytest.raises(ValueError, match="static"):
        Marks.from_line(STATIC_50K, D(48100), balance=D(49000))


def test_the_venues_line_is_taken_only_where_it_is_higher():
    assert line_chosen(D(48000), D(48500)) == (D(48500), "venue")
    assert line_chosen(D(48000), D(47500)) == (D(48000), "computed")
    assert line_chosen(D(48000), D(48000)) == (D(48000), "computed")
    assert line_chosen(D(48000), None) == (D(48000), "computed")


# --- what a reading calls for ----------------------------------------------------------------

def test_inside_the_buffer_the_follower_is_flattened_and_locked_with_the_numbers():
    verdict = evaluate(TOPSTEP_50K, Marks.fresh(TOPSTEP_50K), reading(48140, 4), when=NOON_CT)
    assert verdict.state == GuardState.LOCKED
    assert verdict.flatten
    [first, *_] = verdict.findings
    assert first.trip == Trip.DRAWDOWN
    assert first.text == "equity $48,140, line $48,000, buffer $150"


def test_a_higher_published_line_is_acted_at_and_the_marks_stay_as_they_are():
    marks = Marks(high_water=D(50000), day_start=D(48600), week_start=D(48600))
    # $48,600 is $600 above the computed $48,000: outside its warning, inside the venue's
    verdict = evaluate(TOPSTEP_50K, marks, reading(48600, 2), when=NOON_CT,
                       published_line=D(48500))
    assert (verdict.state, verdict.flatten, verdict.line, verdict.line_source) == (
        GuardState.LOCKED, True, D(48500), "venue")
    assert verdict.marks == marks
    assert verdict.findings[0].text == "equity $48,600, line $48,500, buffer $150"
    lower = evaluate(TOPSTEP_50K, marks, reading(48600, 2), when=NOON_CT,
                     published_line=D(47000))
    assert (lower.state, lower.line, lower.line_source) == (GuardState.OK, D(48000), "computed")


def test_the_warning_comes_before_the_buffer():
    marks = Marks(high_water=D(50000), day_start=D(48500), week_start=D(48500))
    verdict = evaluate(TOPSTEP_50K, marks, reading(48390, 1), when=NOON_CT)
    assert verdict.state == GuardState.WARNING
    assert not verdict.flatten
    assert verdict.findings[0].trip == Trip.DRAWDOWN_WARNING


def test_a_hard_daily_loss_counts_open_pnl_and_flattens_before_the_limit():
    marks = Marks(high_water=D(51000), day_start=D(51000), week_start=D(51000))
    verdict = evaluate(TOPSTEP_50K, marks,
                       Reading(balance=D(50600), open_pnl=D(-560), contracts=3), when=NOON_CT)
    assert verdict.state == GuardState.LOCKED
    assert verdict.flatten
    assert verdict.findings[0].trip == Trip.DAILY_LOSS


def test_a_soft_daily_loss_stops_entries_and_keeps_the_position():
    rules = GuardRules(starting_balance=D(50000), drawdown=D(2000), daily_loss=D(1000),
                       daily_loss_hard=False)
    verdict = evaluate(rules, Marks.fresh(rules), reading(48990, 2), when=NOON_CT)
    assert verdict.state == GuardState.ENTRIES_STOPPED
    assert not verdict.flatten
    assert "soft daily loss" in verdict.findings[0].text


def test_the_profit_target_stops_entries_and_flattens_only_if_asked():
    rules = GuardRules(starting_balance=D(50000), drawdown=D(2000), profit_target=D(3000))
    keep = evaluate(rules, Marks.fresh(rules), reading(53000, 1), when=NOON_CT)
    assert keep.state == GuardState.ENTRIES_STOPPED
    assert not keep.flatten
    flat_rules = GuardRules(starting_balance=D(50000), drawdown=D(2000),
                            profit_target=D(3000), target_flatten=True)
    flat = evaluate(flat_rules, Marks.fresh(flat_rules), reading(53000, 1), when=NOON_CT)
    assert flat.flatten


def test_past_the_flat_time_a_position_is_flattened_and_no_entry_goes():
    at = dt.datetime(2026, 3, 2, 21, 15, tzinfo=dt.UTC)  # 15:15 in Chicago
    assert in_flat_window(TOPSTEP_50K, at)
    assert not in_flat_window(TOPSTEP_50K, NOON_CT)
    assert not in_flat_window(TOPSTEP_50K, dt.datetime(2026, 3, 2, 23, 5, tzinfo=dt.UTC))
    verdict = evaluate(TOPSTEP_50K, Marks(D(51000), D(51000), D(51000)), reading(51000, 2),
                       when=at)
    assert verdict.flatten
    assert verdict.findings[0].trip == Trip.FLAT_TIME
    qty, why = entry_check(TOPSTEP_50K, Marks.fresh(TOPSTEP_50K), reading(51000), side="buy",
                           qty=1, holds_after=1, when=at)
    assert qty == 0
    assert why is not None
    assert why.trip == Trip.FLAT_TIME


def test_a_locked_guard_stays_locked_and_flattens_what_is_still_held():
    verdict = evaluate(STATIC_50K, Marks.fresh(STATIC_50K), reading(51000, 1), when=NOON_CT,
                       locked=True)
    assert verdict.state == GuardState.LOCKED
    assert verdict.flatten
    flat = evaluate(STATIC_50K, Marks.fresh(STATIC_50K), reading(51000, 0), when=NOON_CT,
                    locked=True)
    assert flat.state == GuardState.LOCKED
    assert not flat.flatten


# --- entries ---------------------------------------------------------------------------------

def test_an_entry_whose_worst_case_reaches_the_buffer_is_not_copied():
    rules = GuardRules(starting_balance=D(50000), drawdown=D(2000), buffer=D(150),
                       risk_per_contract=D(100))
    marks = Marks.fresh(rules)
    qty, why = entry_check(rules, marks, reading(48500, 2), side="buy", qty=2, holds_after=4,
                           when=NOON_CT)
    assert qty == 0
    assert why is not None
    assert why.trip == Trip.ENTRY_RISK
    assert "worst case of $400" in why.text
    qty, why = entry_check(rules, marks, reading(48500, 2), side="buy", qty=1, holds_after=3,
                           when=NOON_CT)
    assert qty == 1
    assert why is None


def test_max_contracts_cuts_an_entry_to_the_room_left():
    rules = GuardRules(starting_balance=D(50000), drawdown=D(2000), max_contracts=5)
    qty, why = entry_check(rules, Marks.fresh(rules), reading(50000, 4), side="sell", qty=3,
                           holds_after=7, when=NOON_CT)
    assert qty == 1
    assert why is not None
    assert why.trip == Trip.MAX_CONTRACTS


@pytest.mark.parametrize(("kw", "message"), [
    ({"starting_balance": D(0)}, "starting balance"),
    ({"drawdown": D(-1)}, "drawdown must be greater"),
    ({"buffer": D(2000)}, "buffer must be smaller"),
    ({"buffer": D(-1)}, "may not be negative"),
    ({"daily_loss": D(0)}, "daily loss must be greater"),
    ({"max_contracts": 0}, "max contracts"),
    ({"tz": "Mars/Olympus"}, "Mars"),
])
def test_a_profile_with_nonsense_numbers_is_refused(kw, message):
    base = {"starting_balance": D(50000), "drawdown": D(2000)}
    with pytest.raises(ValueError, match=message):
        GuardRules(**{**base, **kw})


# --- properties ------------------------------------------------------------------------------

models = st.sampled_from(list(DrawdownModel))
moves = st.lists(st.integers(-400, 400).map(D), min_size=1, max_size=60)
stops = st.one_of(st.none(), st.sampled_from([D(0), D(100), D(500)]))


def _rules(model: DrawdownModel, stop: Decimal | None, buffer: int) -> GuardRules:
    return GuardRules(starting_balance=D(50000), drawdown=D(2000), model=model,
                      trail_stop=stop, buffer=D(buffer), warn=D(buffer + 200))


@settings(max_examples=300, deadline=None)
@given(models, stops, st.integers(0, 500), moves, st.integers(0, 4))
def test_for_any_price_path_inside_the_buffer_no_entry_goes_and_the_flatten_is_sent(
        model, stop, buffer, path, close_every):
    rules = _rules(model, stop, buffer)
    marks = Marks.fresh(rules)
    equity = rules.starting_balance
    for n, move in enumerate(path):
        equity += move
        verdict = evaluate(rules, marks, reading(equity, 1), when=NOON_CT)
        inside = equity <= verdict.line + rules.buffer
        if inside:
            assert verdict.flatten
            assert verdict.state == GuardState.LOCKED
            qty, _ = entry_check(rules, marks, reading(equity, 1), side="buy", qty=1,
                                 holds_after=2, when=NOON_CT)
            assert qty == 0
        else:
            assert verdict.state in (GuardState.OK, GuardState.WARNING)
        marks = verdict.marks
        if close_every and n % close_every == 0:
            marks = marks_at_close(rules, marks, equity)


@settings(max_examples=300, deadline=None)
@given(models, stops, moves, st.integers(1, 5))
def test_a_line_never_comes_down_and_stops_where_the_profile_says(model, stop, path, every):
    rules = _rules(model, stop, 0)
    marks = Marks.fresh(rules)
    equity = rules.starting_balance
    before = line(rules, marks)
    for n, move in enumerate(path):
        equity += move
        marks = evaluate(rules, marks, reading(equity), when=NOON_CT).marks
        if n % every == 0:
            marks = marks_at_close(rules, marks, equity)
        now = line(rules, marks)
        assert now >= before
        assert now >= rules.starting_balance - rules.drawdown
        if stop is not None:
            assert now <= rules.starting_balance + stop
        if model == DrawdownModel.STATIC:
            assert now == rules.starting_balance - rules.drawdown
        before = now


@settings(max_examples=200, deadline=None)
@given(models, stops, moves)
def test_an_intraday_trail_is_never_above_the_peak_less_the_drawdown(model, stop, path):
    rules = _rules(model, stop, 0)
    marks = Marks.fresh(rules)
    equity = peak = rules.starting_balance
    for move in path:
        equity += move
        peak = max(peak, equity)
        marks = evaluate(rules, marks, reading(equity), when=NOON_CT).marks
        if model == DrawdownModel.INTRADAY_TRAILING:
            want = peak - rules.drawdown
            if stop is not None:
                want = min(want, rules.starting_balance + stop)
            assert line(rules, marks) == max(want, rules.starting_balance - rules.drawdown)
