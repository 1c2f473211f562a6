"""A follower's fixed quantity and risk limits in copier/domain/rules.py (docs/rules.md "Sizing" and
"Risk limits"): examples, then properties for any input: exits are never blocked nor cut by
a limit, an entry never takes |position| beyond max position, no entry leg is larger than
max per order, and nothing is entered outside the window or beyond max open symbols."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from copier.domain.rules import (
    ExitMode,
    FollowerFacts,
    LeaderMove,
    Leg,
    LegKind,
    Reason,
    RiskLimits,
    TradingWindow,
    days_parse,
    decide,
    expected_position,
    risk_limits_apply,
    sign,
)
from copier.domain.symbol_map import heals
from core.trading import Side
from tests.rules.test_rules_properties import FAST, THOROUGH, after, cases, path

BUY, SELL = Side.BUY, Side.SELL
EXIT, ENTRY = LegKind.EXIT, LegKind.ENTRY
ONE = Decimal(1)
# Monday 5 January 2026, 14:30 UTC = 09:30 in New York (the replay's epoch)
MONDAY_0930_NY = dt.datetime(2026, 1, 5, 14, 30, tzinfo=dt.UTC)
NY_SESSION = TradingWindow(dt.time(9, 30), dt.time(16), "America/New_York",
                           frozenset(range(5)))


def judge(p0: int, p1: int, c: int, **kw: object) -> object:
    return decide(LeaderMove(p0, p1), FollowerFacts(position=c, multiplier=kw.pop(  # type: ignore[arg-type]
        "m", ONE), **kw))


# --- fixed quantity ------------------------------------------------------------------------------


@pytest.mark.parametrize(("p", "reverse", "expected"), [
    (0, False, 0), (1, False, 2), (7, False, 2), (-3, False, -2), (5, True, -2), (-1, True, 2),
])
def test_fixed_quantity_is_the_expected_position_whatever_the_leader_holds(p, reverse, expected):
    assert expected_position(p, Decimal("3.5"), reverse, fixed_qty=2) == expected


def test_fixed_quantity_copies_the_open_and_ignores_adds_and_partial_reductions():
    assert judge(0, 1, 0, fixed_qty=3).legs == (Leg(BUY, 3, ENTRY),)
    assert judge(1, 4, 3, fixed_qty=3).reason == Reason.NO_CHANGE
    assert judge(4, 2, 3, fixed_qty=3).reason == Reason.NO_CHANGE
    assert judge(2, 0, 3, fixed_qty=3).legs == (Leg(SELL, 3, EXIT),)
    assert judge(2, -1, 3, fixed_qty=3).legs == (Leg(SELL, 3, EXIT), Leg(SELL, 3, ENTRY))


def test_fixed_quantity_with_leader_exit_mode_closes_on_the_first_reduction():
    d = judge(4, 2, 3, fixed_qty=3, exit_mode=ExitMode.WITH_LEADER)
    assert d.legs == (Leg(SELL, 3, EXIT),)


def test_fixed_quantity_is_refused_when_not_positive():
    with pytest.raises(ValueError, match="fixed quantity"):
        expected_position(1, ONE, False, fixed_qty=0)


def test_heal_check_uses_the_fixed_quantity_and_the_max_position():
    assert heals({"MNQ": 2}, {"MNQ": 9}, ONE, False, fixed_qty=2)
    assert not heals({"MNQ": 9}, {"MNQ": 9}, ONE, False, fixed_qty=2)
    assert heals({"MNQ": 3}, {"MNQ": 9}, ONE, False, max_position=3)


# --- max position --------------------------------------------------------------------------------


def test_max_position_caps_an_open_and_says_so():
    d = judge(0, 5, 0, limits=RiskLimits(max_position=3))
    assert d.reason == Reason.RISK_LIMIT
    assert d.legs == (Leg(BUY, 3, ENTRY),)
    assert (d.e0, d.e1) == (0, 3)
    assert "max position 3" in d.note
    assert "+5" in d.note


def test_max_position_caps_an_add_at_what_is_left():
    d = judge(2, 5, 2, limits=RiskLimits(max_position=3))
    assert d.reason == Reason.RISK_LIMIT
    assert d.legs == (Leg(BUY, 1, ENTRY),)


def test_a_follower_at_its_max_position_is_in_line_and_an_add_is_a_risk_limit_decision():
    d = judge(5, 7, 3, limits=RiskLimits(max_position=3))
    assert d.reason == Reason.RISK_LIMIT
    assert d.legs == ()


def test_a_follower_at_its_max_position_copies_reductions_below_it():
    lim = RiskLimits(max_position=3)
    assert judge(5, 4, 3, limits=lim).reason == Reason.NO_CHANGE
    assert judge(5, 2, 3, limits=lim).legs == (Leg(SELL, 1, EXIT),)
    assert judge(5, 0, 3, limits=lim).legs == (Leg(SELL, 3, EXIT),)


def test_a_follower_above_its_max_position_still_exits_by_the_leaders_reduction():
    # the limit was lowered while it held 5: out of line, and the cap never shrinks an exit
    d = judge(5, 4, 5, limits=RiskLimits(max_position=3))
    assert d.reason == Reason.CLOSE_ONLY
    assert d.legs == (Leg(SELL, 1, EXIT),)
    assert judge(5, 0, 5, limits=RiskLimits(max_position=3)).legs == (Leg(SELL, 5, EXIT),)


def test_max_position_on_a_reversal_exits_fully_and_enters_up_to_it():
    d = judge(3, -6, 2, limits=RiskLimits(max_position=2))
    assert d.legs == (Leg(SELL, 2, EXIT), Leg(SELL, 2, ENTRY))
    # above its cap (the limit lowered while it held 3) it is out of line: closed fully
    d = judge(3, -6, 3, limits=RiskLimits(max_position=2))
    assert d.reason == Reason.CLOSE_ONLY
    assert d.legs == (Leg(SELL, 3, EXIT),)


# --- max per order, max open symbols, window -----------------------------------------------------


def test_max_per_order_cuts_an_entry_and_never_an_exit():
    lim = RiskLimits(max_order_qty=2)
    d = judge(0, 5, 0, limits=lim)
    assert d.reason == Reason.RISK_LIMIT
    assert d.legs == (Leg(BUY, 2, ENTRY),)
    assert "max 2 contracts per order" in d.note
    assert judge(5, 0, 5, limits=lim).legs == (Leg(SELL, 5, EXIT),)
    d = judge(5, -5, 5, limits=lim)
    assert d.legs == (Leg(SELL, 5, EXIT), Leg(SELL, 2, ENTRY))
    assert d.reason == Reason.RISK_LIMIT


def test_max_open_symbols_denies_an_entry_opening_one_more_symbol():
    lim = RiskLimits(max_symbols=2)
    d = judge(0, 2, 0, limits=lim, open_symbols=2)
    assert d.reason == Reason.RISK_LIMIT
    assert d.legs == ()
    assert "max open symbols 2" in d.note
    assert judge(0, 2, 0, limits=lim, open_symbols=1).legs == (Leg(BUY, 2, ENTRY),)
    # a symbol already open is no new one: adds and reversals go on
    assert judge(2, 3, 2, limits=lim, open_symbols=5).legs == (Leg(BUY, 1, ENTRY),)
    assert judge(2, -1, 2, limits=lim, open_symbols=5).legs == (
        Leg(SELL, 2, EXIT), Leg(SELL, 1, ENTRY))


def test_trading_window_blocks_entries_outside_and_lets_exits_out():
    outside = MONDAY_0930_NY - dt.timedelta(minutes=1)
    lim = RiskLimits(window=NY_SESSION)
    assert judge(0, 2, 0, limits=lim, when=MONDAY_0930_NY).legs == (Leg(BUY, 2, ENTRY),)
    d = judge(0, 2, 0, limits=lim, when=outside)
    assert d.reason == Reason.RISK_LIMIT
    assert d.legs == ()
    assert "trading window 09:30-16:00 America/New_York" in d.note
    assert "Mon 09:29" in d.note
    assert judge(2, 0, 2, limits=lim, when=outside).legs == (Leg(SELL, 2, EXIT),)
    d = judge(2, -2, 2, limits=lim, when=outside)
    assert d.legs == (Leg(SELL, 2, EXIT),)
    assert d.reason == Reason.RISK_LIMIT


def test_a_window_without_a_time_holds_entries_back():
    d = judge(0, 2, 0, limits=RiskLimits(window=NY_SESSION))
    assert d.legs == ()
    assert "unknown time" in d.note


@pytest.mark.parametrize(("local", "inside"), [
    ("2026-01-04 18:00", True),  # Sunday evening: the week's first session opens
    ("2026-01-05 03:00", True),  # Monday night, the Sunday session
    ("2026-01-05 16:59", True),
    ("2026-01-05 17:00", False),  # the daily break
    ("2026-01-05 17:59", False),
    ("2026-01-09 16:30", True),  # Friday afternoon: Thursday's session
    ("2026-01-09 18:00", False),  # Friday evening: no session opens on Friday
    ("2026-01-10 03:00", False),  # Saturday night
    ("2026-01-04 17:00", False),  # Sunday before the open (Saturday opens none)
])
def test_overnight_window_belongs_to_the_day_it_opens(local, inside):
    session = TradingWindow(dt.time(18), dt.time(17), "America/Chicago", days_parse("sun-thu"))
    when = dt.datetime.fromisoformat(local).replace(tzinfo=dt.timezone(dt.timedelta(hours=-6)))
    assert session.contains(when) is inside


def test_days_parse_reads_names_ranges_and_wraps():
    assert days_parse("") == frozenset(range(7))
    assert days_parse("mon-fri") == frozenset(range(5))
    assert days_parse("sun-thu") == frozenset({6, 0, 1, 2, 3})
    assert days_parse("Monday, wed ,fri") == frozenset({0, 2, 4})
    with pytest.raises(ValueError, match="unknown day 'funday'"):
        days_parse("funday")


def test_windows_and_limits_refuse_nonsense():
    with pytest.raises(ValueError, match="end different"):
        TradingWindow(dt.time(9), dt.time(9))
    with pytest.raises(ValueError, match="time zone"):
        TradingWindow(dt.time(9), dt.time(10), "Mars/Olympus")
    with pytest.raises(ValueError, match="max_position must be > 0"):
        RiskLimits(max_position=0)


# --- properties ----------------------------------------------------------------------------------

limits_st = st.builds(
    RiskLimits,
    max_order_qty=st.one_of(st.none(), st.integers(1, 30)),
    max_position=st.one_of(st.none(), st.integers(1, 30)),
    max_symbols=st.one_of(st.none(), st.integers(1, 4)),
    window=st.one_of(st.none(), st.just(NY_SESSION)),
)
times = st.datetimes(min_value=dt.datetime(2026, 1, 1), max_value=dt.datetime(2026, 2, 1),
                     timezones=st.just(dt.UTC))


@st.composite
def limited(draw: st.DrawFn) -> tuple[LeaderMove, FollowerFacts]:
    case = draw(cases())
    facts = replace(case.facts, limits=draw(limits_st), open_symbols=draw(st.integers(0, 5)),
                    when=draw(times), exits_only=draw(st.booleans()),
                    fixed_qty=draw(st.one_of(st.none(), st.integers(1, 20))))
    return case.move, facts


def exits(legs: tuple[Leg, ...]) -> tuple[Leg, ...]:
    return tuple(leg for leg in legs if leg.kind == EXIT)


@THOROUGH
@given(limited())
def test_an_entry_never_takes_the_position_beyond_max_position(mf):
    move, facts = mf
    d = decide(move, facts)
    cap = facts.limits.max_position
    positions = path(facts.position, d.legs)
    for leg, before, now in zip(d.legs, positions[:-1], positions[1:], strict=True):
        if leg.kind == ENTRY and cap is not None:
            assert abs(now) <= cap, (d, facts)
            assert abs(now) > abs(before)


@THOROUGH
@given(limited())
def test_no_entry_leg_is_larger_than_max_per_order(mf):
    move, facts = mf
    cap = facts.limits.max_order_qty
    for leg in decide(move, facts).legs:
        if leg.kind == ENTRY and cap is not None:
            assert leg.qty <= cap


@THOROUGH
@given(limited())
def test_nothing_is_entered_outside_the_window_nor_beyond_max_open_symbols(mf):
    move, facts = mf
    entries = [leg for leg in decide(move, facts).legs if leg.kind == ENTRY]
    window = facts.limits.window
    if window is not None and facts.when is not None and not window.contains(facts.when):
        assert not entries
    cap = facts.limits.max_symbols
    if cap is not None and facts.position == 0 and facts.open_symbols >= cap:
        assert not entries


@THOROUGH
@given(limited())
def test_the_limits_never_block_or_cut_an_exit(mf):
    """The limits' own stage keeps every exit of the verdict it is given, whatever it is."""
    move, facts = mf
    unlimited = decide(move, replace(facts, limits=RiskLimits()))
    limited_ = risk_limits_apply(unlimited, move, facts)
    assert exits(limited_.legs) == exits(unlimited.legs)
    # and limits other than the max position (which moves the expected position itself)
    # leave decide's exits exactly as they are without any limit
    no_cap = replace(facts, limits=replace(facts.limits, max_position=None))
    assert exits(decide(move, no_cap).legs) == exits(unlimited.legs)


@FAST
@given(limited())
def test_any_limits_close_the_follower_when_the_leader_goes_flat(mf):
    move, facts = mf
    if move.p1 != 0 or not facts.enabled or facts.paused or facts.quarantined:
        return
    if not facts.reverse and sign(facts.position) == -sign(move.p0) and facts.position:
        return  # rule 4: opposite side, quarantined, nothing sent (limits or none)
    assert after(facts.position, decide(move, facts).legs) == 0


@FAST
@given(limited())
def test_a_cut_or_a_block_is_always_a_risk_limit_decision_with_its_numbers(mf):
    move, facts = mf
    plain = decide(move, replace(facts, limits=RiskLimits()))
    d = decide(move, facts)
    if facts.limits.max_position is None and d.legs != plain.legs:
        assert d.reason == Reason.RISK_LIMIT
        assert d.note
