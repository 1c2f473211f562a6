"""The daily loss limit in copier/domain/rules.py (docs/rules.md "Daily loss limit"): the session's
turn-over, the limit reached, and the lock holding entries back while exits always pass;
then properties for any input: no entry while locked, exits never held by the lock."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from copier.domain.rules import (
    FollowerFacts,
    LeaderMove,
    Leg,
    LegKind,
    LossLock,
    Reason,
    RiskLimits,
    SessionReset,
    decide,
    loss_limit_reached,
    money,
    risk_limits_apply,
)
from core.contracts import point_value
from core.trading import Side
from tests.rules.test_risk_limits import limited
from tests.rules.test_rules_properties import THOROUGH

BUY, SELL = Side.BUY, Side.SELL
EXIT, ENTRY = LegKind.EXIT, LegKind.ENTRY
CME = SessionReset(dt.time(17), "America/Chicago")
# Monday 5 January 2026, 14:30 UTC = 08:30 in Chicago (the replay's epoch)
MONDAY = dt.datetime(2026, 1, 5, 14, 30, tzinfo=dt.UTC)
LOCK = LossLock(limit=Decimal(500), realized=Decimal("-612.50"), since=MONDAY,
                until=dt.datetime(2026, 1, 5, 23, 0, tzinfo=dt.UTC), tz="America/Chicago")


def judge(p0: int, p1: int, c: int, **kw: object) -> object:
    return decide(LeaderMove(p0, p1), FollowerFacts(position=c, multiplier=Decimal(1),
                                                    **kw))  # type: ignore[arg-type]


# --- the session -----------------------------------------------------------------------------


@pytest.mark.parametrize(("now", "start", "end"), [
    # 08:30 CT Monday: the session opened Sunday 17:00 CT (23:00 UTC), ends Monday 17:00 CT
    (MONDAY, dt.datetime(2026, 1, 4, 23, tzinfo=dt.UTC),
     dt.datetime(2026, 1, 5, 23, tzinfo=dt.UTC)),
    # 17:00 CT exactly belongs to the new session
    (dt.datetime(2026, 1, 5, 23, tzinfo=dt.UTC), dt.datetime(2026, 1, 5, 23, tzinfo=dt.UTC),
     dt.datetime(2026, 1, 6, 23, tzinfo=dt.UTC)),
    # summer time: 17:00 CDT is 22:00 UTC
    (dt.datetime(2026, 7, 1, 21, 59, tzinfo=dt.UTC), dt.datetime(2026, 6, 30, 22, tzinfo=dt.UTC),
     dt.datetime(2026, 7, 1, 22, tzinfo=dt.UTC)),
    # the day the clocks change (8 March 2026): the session is 23 hours long
    (dt.datetime(2026, 3, 8, 12, tzinfo=dt.UTC), dt.datetime(2026, 3, 7, 23, tzinfo=dt.UTC),
     dt.datetime(2026, 3, 8, 22, tzinfo=dt.UTC)),
])
def test_the_session_turns_over_at_the_reset_in_its_own_time_zone(now, start, end):
    assert CME.start(now) == start
    assert CME.next(now) == end


def test_session_reset_parses_and_refuses_nonsense():
    assert SessionReset.parse("17:00 America/Chicago") == CME
    assert SessionReset.parse("00:00").tz == "UTC"
    for bad in ("5pm America/Chicago", "17:00 Mars/Olympus", "25:00 UTC", ""):
        with pytest.raises(ValueError, match=r"session reset|time zone"):
            SessionReset.parse(bad)


def test_the_limit_is_reached_at_a_loss_of_the_limit_or_more():
    assert not loss_limit_reached(Decimal("-499.99"), Decimal(500))
    assert loss_limit_reached(Decimal(-500), Decimal(500))
    assert loss_limit_reached(Decimal("-612.50"), Decimal(500))
    assert not loss_limit_reached(Decimal(900), Decimal(500))
    with pytest.raises(ValueError, match="must be > 0"):
        loss_limit_reached(Decimal(0), Decimal(0))


def test_money_is_written_as_a_trader_reads_it():
    assert money(Decimal("-612.5")) == "-$612.50"
    assert money(Decimal(1500)) == "$1,500.00"


def test_point_values_by_root_and_contract_and_unknown():
    assert point_value("MNQZ6") == Decimal(2)
    assert point_value("ES") == Decimal(50)
    assert point_value("MYMH7") == Decimal("0.5")
    assert point_value("ZB") is None


# --- the lock --------------------------------------------------------------------------------


def test_a_lock_holds_an_open_back_and_names_the_limit_and_the_numbers():
    d = judge(0, 2, 0, loss_lock=LOCK, when=MONDAY + dt.timedelta(hours=1))
    assert d.reason == Reason.RISK_LIMIT
    assert d.legs == ()
    assert ("daily loss limit $500.00: realised -$612.50 this session, entries held until "
            "Mon 17:00 America/Chicago: entry buy 2 not copied") in d.note


def test_a_lock_lets_every_exit_out_and_holds_the_reversals_entry():
    when = MONDAY + dt.timedelta(minutes=5)
    assert judge(2, 1, 2, loss_lock=LOCK, when=when).legs == (Leg(SELL, 1, EXIT),)
    assert judge(2, 0, 2, loss_lock=LOCK, when=when).legs == (Leg(SELL, 2, EXIT),)
    d = judge(2, -3, 2, loss_lock=LOCK, when=when)
    assert d.legs == (Leg(SELL, 2, EXIT),)
    assert d.reason == Reason.RISK_LIMIT
    assert "entry sell 3 not copied" in d.note


def test_a_lock_holds_nothing_outside_its_span():
    # a fill read before the lock was taken (a re-run after a crash), and one after the reset
    assert judge(0, 1, 0, loss_lock=LOCK, when=MONDAY - dt.timedelta(seconds=1)).legs == (
        Leg(BUY, 1, ENTRY),)
    assert judge(0, 1, 0, loss_lock=LOCK, when=LOCK.until).reason == Reason.COPIED
    # no time at all: held, as the window holds it
    assert judge(0, 1, 0, loss_lock=LOCK).legs == ()


def test_a_lock_and_other_limits_together():
    d = judge(0, 5, 0, loss_lock=LOCK, when=MONDAY, limits=RiskLimits(max_position=3))
    assert d.legs == ()
    assert "max position 3" in d.note
    assert "daily loss limit" in d.note


# --- properties ------------------------------------------------------------------------------

locks = st.builds(
    LossLock, limit=st.just(Decimal(500)), realized=st.just(Decimal(-700)),
    since=st.datetimes(min_value=dt.datetime(2026, 1, 1), max_value=dt.datetime(2026, 1, 20),
                       timezones=st.just(dt.UTC)),
    until=st.datetimes(min_value=dt.datetime(2026, 1, 20), max_value=dt.datetime(2026, 2, 1),
                       timezones=st.just(dt.UTC)))


@THOROUGH
@given(limited(), locks)
def test_no_entry_while_locked_and_the_exits_are_those_without_the_lock(mf, lock):
    move, facts = mf
    locked = replace(facts, loss_lock=lock)
    d = decide(move, locked)
    free = decide(move, facts)
    if lock.holds(facts.when):
        assert [leg for leg in d.legs if leg.kind == ENTRY] == []
        if any(leg.kind == ENTRY for leg in free.legs):
            assert d.reason == Reason.RISK_LIMIT
            assert "daily loss limit" in d.note
    else:
        assert d == free
    assert [leg for leg in d.legs if leg.kind == EXIT] == [
        leg for leg in free.legs if leg.kind == EXIT]


@THOROUGH
@given(limited(), locks)
def test_the_lock_never_holds_an_exit_of_any_verdict(mf, lock):
    move, facts = mf
    verdict = decide(move, replace(facts, limits=RiskLimits()))
    held = risk_limits_apply(verdict, move, replace(facts, limits=RiskLimits(),
                                                    loss_lock=lock))
    assert [leg for leg in held.legs if leg.kind == EXIT] == [
        leg for leg in verdict.legs if leg.kind == EXIT]
