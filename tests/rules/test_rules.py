"""Unit tests of copier/domain/rules.py against docs/rules.md#the-exact-contract, one scenario
per test.

Each test is named for the story it tells; the rule it checks is stated (from
the contract) in its docstring or the section comment above it.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from copier.domain.rules import (
    BACKOFF_CAP_SECONDS,
    Divergence,
    ExitMode,
    FollowerFacts,
    LeaderMove,
    Leg,
    LegKind,
    LegOutcome,
    Reason,
    Verdict,
    backoff_seconds,
    cap_exit,
    close_by,
    decide,
    divergence,
    expected_position,
    leader_side,
    leg_outcome,
    missed_moves,
    ordered_for_placement,
    placement_reason,
    plan_move,
    sign,
)
from copier.domain.symbol_map import heals
from core.trading import Side, signed

BUY, SELL = Side.BUY, Side.SELL
EXIT, ENTRY = LegKind.EXIT, LegKind.ENTRY
WITH_LEADER = ExitMode.WITH_LEADER


def follower(c: int = 0, m: str = "1", **kw: object) -> FollowerFacts:
    return FollowerFacts(position=c, multiplier=Decimal(m), **kw)  # type: ignore[arg-type]


def judge(p0: int, p1: int, c: int = 0, m: str = "1", **kw: object) -> Verdict:
    """decide() for a leader going from p0 to p1 and a follower holding c."""
    return decide(LeaderMove(p0, p1), follower(c, m, **kw))


def after(c: int, legs: tuple[Leg, ...]) -> int:
    """The follower's position once every leg has filled."""
    return c + sum(leg.signed for leg in legs)


def exit_(side: Side, qty: int) -> Leg:
    return Leg(side, qty, EXIT)


def entry(side: Side, qty: int) -> Leg:
    return Leg(side, qty, ENTRY)


# --- helpers: sign, signed, Leg, leader side -----------------------------------------------------


@pytest.mark.parametrize(("n", "s"), [(5, 1), (1, 1), (0, 0), (-1, -1), (-7, -1)])
def test_sign_of_a_position(n, s):
    assert sign(n) == s


def test_a_buy_is_positive_and_a_sell_negative_whether_side_is_an_enum_or_a_string():
    assert signed(BUY, 3) == 3
    assert signed(SELL, 3) == -3
    assert signed("buy", 2) == 2
    assert signed("sell", 2) == -2
    assert Leg(SELL, 4, EXIT).signed == -4
    assert Leg(BUY, 1, ENTRY).signed == 1


@pytest.mark.parametrize(("p0", "p1", "side"), [
    (2, 3, 1), (2, -3, 1), (-2, 0, -1), (0, 4, 1), (0, -1, -1),
])
def test_leader_side_is_sign_p0_or_sign_p1_when_the_leader_was_flat(p0, p1, side):
    assert leader_side(LeaderMove(p0, p1)) == side


# --- bad inputs raise ----------------------------------------------------------------------------


@pytest.mark.parametrize("qty", [0, -1, -5])
def test_a_leg_of_zero_or_negative_quantity_is_refused(qty):
    with pytest.raises(ValueError, match="> 0"):
        Leg(BUY, qty, ENTRY)


@pytest.mark.parametrize("m", ["0", "-1", "-0.5"])
def test_a_multiplier_of_zero_or_less_is_refused(m):
    with pytest.raises(ValueError, match="multiplier"):
        expected_position(3, Decimal(m), False)


def test_decide_refuses_a_follower_whose_multiplier_is_zero_even_when_flat():
    with pytest.raises(ValueError, match="multiplier"):
        judge(0, 1, m="0")


@pytest.mark.parametrize("p", [0, 3, -2])
def test_a_leader_move_that_does_not_move_is_refused(p):
    with pytest.raises(ValueError, match="moves"):
        LeaderMove(p, p)


def test_value_objects_are_frozen():
    leg = Leg(BUY, 1, ENTRY)
    with pytest.raises(AttributeError):
        leg.qty = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        LeaderMove(0, 1).p1 = 2  # type: ignore[misc]


# --- E(P) = d * sign(P) * round(|P| * m), round half away from zero ------------------------------


@pytest.mark.parametrize(("p", "m", "e"), [
    # the halves: 0.5 -> 1, 1.5 -> 2, 2.5 -> 3, 3.5 -> 4, 4.5 -> 5
    (1, "0.5", 1), (3, "0.5", 2), (5, "0.5", 3), (7, "0.5", 4), (3, "1.5", 5),
    (1, "1.5", 2), (2, "0.25", 1), (5, "0.1", 1), (15, "0.1", 2), (25, "0.1", 3),
    # just under or over a half
    (1, "0.4999", 0), (1, "0.5001", 1), (4, "0.1", 0), (6, "0.1", 1), (3, "0.8333", 2),
    # whole results
    (2, "0.5", 1), (4, "0.5", 2), (2, "3", 6), (3, "1", 3), (3, "7", 21), (7, "0.3333", 2),
    # flat is flat whatever the multiplier
    (0, "0.5", 0), (0, "7", 0),
])
def test_expected_position_rounds_half_away_from_zero(p, m, e):
    mult = Decimal(m)
    assert expected_position(p, mult, False) == e
    assert expected_position(-p, mult, False) == -e  # negatives are symmetric
    assert expected_position(p, mult, True) == -e  # a reverse group takes the other side
    assert expected_position(-p, mult, True) == e


@pytest.mark.parametrize(("p", "e"), [(-1, -1), (-3, -2), (-5, -3)])
def test_negative_halves_round_away_from_zero_too(p, e):
    assert expected_position(p, Decimal("0.5"), False) == e


def test_expected_position_of_flat_in_a_reverse_group_is_zero_not_minus_zero():
    e = expected_position(0, Decimal("2"), True)
    assert e == 0
    assert isinstance(e, int)


def test_expected_position_is_an_int_never_a_decimal():
    assert type(expected_position(3, Decimal("0.5"), False)) is int
    assert type(expected_position(-3, Decimal("1.5"), True)) is int


# --- rule 1: disabled ----------------------------------------------------------------------------


def test_disabled_follower_gets_nothing_and_the_reason_says_disabled():
    d = judge(0, 2)
    assert d.legs
    d = judge(0, 2, enabled=False)
    assert d == Verdict(Reason.DISABLED, (), e0=0, e1=2)


def test_disabled_wins_over_every_later_rule():
    d = judge(1, 2, c=-1, enabled=False, paused=True, quarantined=True, close_only=True)
    assert (d.reason, d.legs) == (Reason.DISABLED, ())
    assert not d.quarantine
    assert not d.lift_quarantine


def test_disabled_follower_does_not_lift_its_quarantine_on_flat_flat():
    d = judge(0, 2, c=0, enabled=False, quarantined=True)
    assert (d.reason, d.lift_quarantine) == (Reason.DISABLED, False)


# --- rule 2: paused ------------------------------------------------------------------------------


def test_paused_follower_gets_nothing_and_the_reason_says_paused():
    d = judge(2, 0, c=2, paused=True)
    assert (d.reason, d.legs) == (Reason.PAUSED, ())


def test_paused_wins_over_quarantine_and_opposite_side():
    d = judge(0, 2, c=0, paused=True, quarantined=True)
    assert (d.reason, d.lift_quarantine) == (Reason.PAUSED, False)
    d = judge(2, 3, c=-1, paused=True)
    assert (d.reason, d.quarantine) == (Reason.PAUSED, False)


# --- rule 3: quarantined -------------------------------------------------------------------------


@pytest.mark.parametrize(("p0", "p1", "c"), [
    (1, 2, 0),  # the leader is not flat
    (0, 1, 1),  # the follower is not flat
    (2, 0, 2),  # neither
    (0, -1, -3),
    (-2, -1, 0),
])
def test_quarantined_symbol_gets_nothing_unless_follower_and_leader_are_both_flat(p0, p1, c):
    d = judge(p0, p1, c=c, quarantined=True)
    assert d.reason == Reason.QUARANTINED
    assert (d.legs, d.lift_quarantine, d.quarantine) == ((), False, False)


def test_quarantined_follower_on_the_opposite_side_stays_quarantined_not_requarantined():
    d = judge(2, 3, c=-1, quarantined=True)
    assert (d.reason, d.quarantine) == (Reason.QUARANTINED, False)


def test_quarantine_lifted_on_flat_flat_then_the_leader_open_is_copied():
    d = judge(0, 2, c=0, m="1.5", quarantined=True)
    assert d.lift_quarantine
    assert (d.reason, d.legs) == (Reason.COPIED, (entry(BUY, 3),))
    assert not d.quarantine


def test_quarantine_lifted_on_flat_flat_then_a_reverse_group_opens_the_other_side():
    d = judge(0, -2, c=0, quarantined=True, reverse=True)
    assert d.lift_quarantine
    assert (d.reason, d.legs) == (Reason.COPIED, (entry(BUY, 2),))


def test_quarantine_lifted_on_flat_flat_then_rounding_gives_no_change():
    d = judge(0, 2, c=0, m="0.1", quarantined=True)
    assert d.lift_quarantine
    assert (d.reason, d.legs) == (Reason.NO_CHANGE, ())


def test_quarantine_lifted_on_flat_flat_then_a_missed_move_is_still_close_only():
    d = judge(0, 2, c=0, quarantined=True, close_only=True)
    assert d.lift_quarantine
    assert (d.reason, d.legs) == (Reason.CLOSE_ONLY, ())


def test_the_lift_is_a_flag_on_the_decision_and_its_reason_exists_for_the_record():
    """decide reports the lift with lift_quarantine; the caller records quarantine_lifted."""
    assert Reason.QUARANTINE_LIFTED == "quarantine_lifted"
    assert judge(0, 1, c=0, quarantined=True).reason != Reason.QUARANTINE_LIFTED
    assert not judge(0, 1, c=0).lift_quarantine  # nothing to lift when not quarantined


# --- rule 4: opposite side (normal groups only) --------------------------------------------------


def test_follower_short_while_leader_adds_long_is_quarantined_and_gets_nothing():
    d = judge(1, 2, c=-1)
    assert (d.reason, d.legs, d.quarantine) == (Reason.OPPOSITE_SIDE, (), True)


def test_follower_long_while_leader_reduces_short_is_opposite_side():
    d = judge(-3, -1, c=2)
    assert (d.reason, d.legs, d.quarantine) == (Reason.OPPOSITE_SIDE, (), True)


def test_follower_long_while_a_flat_leader_opens_short_takes_the_leader_side_from_p1():
    d = judge(0, -1, c=2)
    assert (d.reason, d.legs, d.quarantine) == (Reason.OPPOSITE_SIDE, (), True)


def test_follower_long_while_a_flat_leader_opens_long_is_not_opposite_but_diverged():
    d = judge(0, 1, c=2)
    assert (d.reason, d.legs, d.quarantine) == (Reason.CLOSE_ONLY, (), False)


def test_leader_side_is_sign_p0_so_a_follower_already_on_the_reversal_side_is_opposite():
    # the leader is long 2 and reverses to short 3; a follower short 1 is on the
    # other side of the leader's side sign(P0) = +1
    d = judge(2, -3, c=-1)
    assert (d.reason, d.legs, d.quarantine) == (Reason.OPPOSITE_SIDE, (), True)


def test_flat_follower_is_never_on_the_opposite_side():
    assert judge(2, 3, c=0).reason != Reason.OPPOSITE_SIDE
    assert judge(-2, 1, c=0).reason != Reason.OPPOSITE_SIDE


def test_opposite_side_applies_to_a_missed_move_too():
    d = judge(2, 0, c=-2, close_only=True)
    assert (d.reason, d.quarantine) == (Reason.OPPOSITE_SIDE, True)


def test_reverse_group_follower_on_the_opposite_side_is_what_is_expected():
    d = judge(2, 3, c=-2, reverse=True)
    assert (d.reason, d.legs, d.quarantine) == (Reason.COPIED, (entry(SELL, 1),), False)


def test_reverse_group_never_quarantines_for_the_opposite_side_even_when_diverged():
    d = judge(2, 3, c=-5, reverse=True)  # E0 = -2: diverged, the leader adds
    assert (d.reason, d.legs, d.quarantine) == (Reason.CLOSE_ONLY, (), False)


# --- rule 5: in sync (C == E0) -------------------------------------------------------------------


def test_in_sync_follower_copies_an_open_scaled_by_its_multiplier():
    d = judge(0, 2, c=0, m="2")
    assert (d.reason, d.legs, d.e0, d.e1) == (Reason.COPIED, (entry(BUY, 4),), 0, 4)


def test_in_sync_follower_copies_a_short_open():
    d = judge(0, -3, c=0, m="0.5")
    assert (d.reason, d.legs) == (Reason.COPIED, (entry(SELL, 2),))


def test_in_sync_follower_copies_an_add():
    d = judge(2, 5, c=2)
    assert (d.reason, d.legs) == (Reason.COPIED, (entry(BUY, 3),))


def test_in_sync_follower_copies_a_reduction_as_an_exit():
    d = judge(2, 1, c=4, m="2")
    assert (d.reason, d.legs) == (Reason.COPIED, (exit_(SELL, 2),))


def test_in_sync_follower_goes_flat_with_the_leader():
    d = judge(-3, 0, c=-3)
    assert (d.reason, d.legs) == (Reason.COPIED, (exit_(BUY, 3),))


def test_leader_reversal_crossing_zero_is_an_exit_to_flat_plus_an_entry():
    d = judge(2, -1, c=2)
    assert (d.reason, d.legs) == (Reason.COPIED, (exit_(SELL, 2), entry(SELL, 1)))
    assert after(2, d.legs) == -1


def test_leader_reversal_from_short_scaled_is_an_exit_plus_an_entry():
    d = judge(-3, 2, c=-5, m="1.5")  # E0 = -5 (4.5 -> 5), E1 = 3
    assert d.legs == (exit_(BUY, 5), entry(BUY, 3))


def test_leader_reversal_whose_new_side_rounds_to_zero_is_only_an_exit():
    d = judge(4, -2, c=2, m="0.5")  # E0 = 2, E1 = -1
    assert d.legs == (exit_(SELL, 2), entry(SELL, 1))
    d = judge(5, -4, c=1, m="0.1")  # E0 = 1 (0.5 -> 1), E1 = 0 (0.4 -> 0)
    assert d.legs == (exit_(SELL, 1),)


def test_no_change_when_a_multiplier_of_one_half_rounds_e1_to_e0():
    d = judge(1, 2, c=1, m="0.5")  # 0.5 -> 1, 1 -> 1
    assert d == Verdict(Reason.NO_CHANGE, (), e0=1, e1=1)


def test_no_change_when_a_small_multiplier_keeps_the_follower_flat():
    d = judge(0, 4, c=0, m="0.1")
    assert (d.reason, d.legs, d.e1) == (Reason.NO_CHANGE, (), 0)


def test_no_change_on_a_reduction_that_rounding_swallows():
    d = judge(2, 1, c=1, m="0.5")  # 1 -> 1, 0.5 -> 1
    assert (d.reason, d.legs) == (Reason.NO_CHANGE, ())
    d = judge(-6, -5, c=-1, m="0.1")  # -0.6 -> -1, -0.5 -> -1
    assert (d.reason, d.legs) == (Reason.NO_CHANGE, ())


def test_reverse_group_in_sync_mirrors_the_leader():
    assert judge(0, 2, c=0, reverse=True).legs == (entry(SELL, 2),)
    assert judge(3, 1, c=-3, reverse=True).legs == (exit_(BUY, 2),)
    assert judge(-1, 0, c=1, reverse=True).legs == (exit_(SELL, 1),)


def test_reverse_group_reversal_is_an_exit_to_flat_plus_an_entry():
    d = judge(2, -1, c=-4, m="2", reverse=True)  # E0 = -4, E1 = +2
    assert (d.reason, d.legs) == (Reason.COPIED, (exit_(BUY, 4), entry(BUY, 2)))
    assert (d.e0, d.e1) == (-4, 2)


def test_decision_records_e0_and_e1():
    d = judge(3, -5, c=9, m="1.5", reverse=True)
    assert (d.e0, d.e1) == (-5, 8)


# --- rule 5: exit_mode with_leader ---------------------------------------------------------------


def test_with_leader_same_side_reduction_closes_the_in_sync_follower_fully():
    d = judge(3, 2, c=3, exit_mode=WITH_LEADER)
    assert (d.reason, d.legs) == (Reason.COPIED, (exit_(SELL, 3),))
    assert "with_leader" in d.note


def test_with_leader_same_side_reduction_of_a_short_closes_fully():
    d = judge(-4, -1, c=-8, m="2", exit_mode=WITH_LEADER)
    assert (d.reason, d.legs) == (Reason.COPIED, (exit_(BUY, 8),))


def test_with_leader_same_side_reduction_in_a_reverse_group_closes_fully():
    d = judge(3, 1, c=-3, reverse=True, exit_mode=WITH_LEADER)
    assert (d.reason, d.legs) == (Reason.COPIED, (exit_(BUY, 3),))


def test_with_leader_reversal_is_followed_like_proportional():
    d = judge(3, -1, c=3, exit_mode=WITH_LEADER)
    assert (d.reason, d.legs) == (Reason.COPIED, (exit_(SELL, 3), entry(SELL, 1)))
    assert d == judge(3, -1, c=3)


def test_with_leader_going_flat_closes_fully_like_proportional():
    assert judge(3, 0, c=3, exit_mode=WITH_LEADER).legs == (exit_(SELL, 3),)


def test_with_leader_open_and_add_are_copied_like_proportional():
    assert judge(0, 2, c=0, exit_mode=WITH_LEADER).legs == (entry(BUY, 2),)
    assert judge(1, 3, c=1, exit_mode=WITH_LEADER).legs == (entry(BUY, 2),)


def test_with_leader_follower_that_closed_early_is_then_diverged_and_has_nothing_to_close():
    d = judge(2, 1, c=0, exit_mode=WITH_LEADER)
    assert (d.reason, d.legs) == (Reason.NOTHING_TO_CLOSE, ())


def test_with_leader_diverged_follower_reduces_proportionally_under_rule_6():
    d = judge(4, 3, c=2, exit_mode=WITH_LEADER)  # C != E0: close-only, by min(2, 1)
    assert (d.reason, d.legs) == (Reason.CLOSE_ONLY, (exit_(SELL, 1),))


def test_with_leader_reduction_closes_fully_even_when_rounding_keeps_e1_equal_to_e0():
    d = judge(2, 1, c=1, m="0.5", exit_mode=WITH_LEADER)  # E0 = E1 = 1
    assert (d.reason, d.legs) == (Reason.COPIED, (exit_(SELL, 1),))


# --- rule 6: diverged (C != E0): close-only ------------------------------------------------------


def test_diverged_follower_closes_fully_when_the_leader_goes_flat():
    d = judge(5, 0, c=2)
    assert (d.reason, d.legs) == (Reason.CLOSE_ONLY, (exit_(SELL, 2),))


def test_diverged_follower_holding_more_than_expected_closes_fully_when_the_leader_goes_flat():
    d = judge(-2, 0, c=-7)
    assert (d.reason, d.legs) == (Reason.CLOSE_ONLY, (exit_(BUY, 7),))


def test_diverged_follower_closes_fully_on_a_leader_reversal_and_never_enters():
    d = judge(3, -2, c=1)
    assert (d.reason, d.legs) == (Reason.CLOSE_ONLY, (exit_(SELL, 1),))


def test_exit_when_follower_holds_less_is_capped():
    d = judge(4, 1, c=2)  # E0 4, E1 1: reduce by min(2, 3) = 2
    assert (d.reason, d.legs) == (Reason.CLOSE_ONLY, (exit_(SELL, 2),))
    assert after(2, d.legs) == 0


def test_diverged_reduction_is_the_leaders_expected_reduction_when_the_follower_holds_more():
    d = judge(4, 3, c=3)  # reduce by min(3, 4 - 3) = 1
    assert d.legs == (exit_(SELL, 1),)
    d = judge(2, 1, c=5)  # over-sized follower: reduce by min(5, 1) = 1
    assert d.legs == (exit_(SELL, 1),)


def test_diverged_reduction_uses_the_scaled_expected_positions():
    d = judge(-6, -2, c=-2, m="0.5")  # E0 -3, E1 -1: reduce by min(2, 2)
    assert (d.reason, d.legs) == (Reason.CLOSE_ONLY, (exit_(BUY, 2),))


def test_diverged_reduction_that_rounding_swallows_has_nothing_to_close():
    d = judge(2, 1, c=3, m="0.5")  # E0 = E1 = 1: nothing left to reduce
    assert (d.reason, d.legs) == (Reason.NOTHING_TO_CLOSE, ())


def test_diverged_follower_never_adds_when_the_leader_adds():
    d = judge(1, 3, c=2)
    assert (d.reason, d.legs) == (Reason.CLOSE_ONLY, ())


def test_diverged_follower_never_opens_when_the_leader_opens():
    d = judge(0, 2, c=1)
    assert (d.reason, d.legs) == (Reason.CLOSE_ONLY, ())
    d = judge(0, -2, c=-5)
    assert (d.reason, d.legs) == (Reason.CLOSE_ONLY, ())


def test_diverged_flat_follower_has_nothing_to_close_when_the_leader_goes_flat():
    d = judge(2, 0, c=0)
    assert (d.reason, d.legs) == (Reason.NOTHING_TO_CLOSE, ())


def test_diverged_flat_follower_has_nothing_to_close_when_the_leader_reduces_or_reverses():
    assert judge(3, 1, c=0).reason == Reason.NOTHING_TO_CLOSE
    assert judge(-3, 2, c=0).reason == Reason.NOTHING_TO_CLOSE


def test_reverse_group_follower_on_the_leaders_side_is_not_reduced_on_a_leader_reduction():
    d = judge(-3, -1, c=-2, reverse=True)  # E0 = +3, C = -2, leader reduced
    assert (d.reason, d.legs) == (Reason.NOTHING_TO_CLOSE, ())


def test_reverse_group_follower_on_the_leaders_side_is_closed_when_the_leader_unwinds():
    """Rule 6: flat or reversed closes the follower fully, whatever side it holds."""
    d = judge(2, 0, c=1, reverse=True)  # E0 = -2, C = +1
    assert (d.reason, d.legs) == (Reason.CLOSE_ONLY, (exit_(SELL, 1),))
    d = judge(2, -2, c=3, reverse=True)  # leader reversed
    assert (d.reason, d.legs) == (Reason.CLOSE_ONLY, (exit_(SELL, 3),))


def test_reverse_group_diverged_follower_on_e0s_side_is_closed():
    d = judge(3, 0, c=-1, reverse=True)
    assert (d.reason, d.legs) == (Reason.CLOSE_ONLY, (exit_(BUY, 1),))
    d = judge(3, 2, c=-5, reverse=True)  # reduce by min(5, 3 - 2)
    assert (d.reason, d.legs) == (Reason.CLOSE_ONLY, (exit_(BUY, 1),))


def test_diverged_follower_whose_e0_rounds_to_flat_is_closed_when_the_leader_goes_flat():
    d = judge(4, 0, c=1, m="0.1")  # E0 = 0: still an unwind
    assert (d.reason, d.legs) == (Reason.CLOSE_ONLY, (exit_(SELL, 1),))
    d = judge(4, -4, c=1, m="0.1")  # reversal
    assert (d.reason, d.legs) == (Reason.CLOSE_ONLY, (exit_(SELL, 1),))


# --- close_only facts: a leader move missed while disconnected -----------------------------------


def test_missed_leader_move_on_an_in_sync_follower_closes_on_flat_but_never_enters():
    d = judge(2, 0, c=2, close_only=True)
    assert (d.reason, d.legs) == (Reason.CLOSE_ONLY, (exit_(SELL, 2),))


def test_missed_leader_reversal_is_only_the_exit_never_the_entry():
    d = judge(2, -3, c=2, close_only=True)
    assert (d.reason, d.legs) == (Reason.CLOSE_ONLY, (exit_(SELL, 2),))
    assert all(leg.kind == EXIT for leg in d.legs)


def test_missed_leader_reduction_reduces_proportionally():
    d = judge(4, 2, c=4, close_only=True)
    assert (d.reason, d.legs) == (Reason.CLOSE_ONLY, (exit_(SELL, 2),))


def test_missed_leader_open_or_add_is_never_copied():
    assert judge(0, 3, c=0, close_only=True).legs == ()
    assert judge(0, 3, c=0, close_only=True).reason == Reason.CLOSE_ONLY
    assert judge(1, 3, c=1, close_only=True).legs == ()
    assert judge(-1, -4, c=1, close_only=True, reverse=True).legs == ()


def test_missed_move_with_leader_mode_is_still_proportional_close_only():
    d = judge(4, 3, c=4, close_only=True, exit_mode=WITH_LEADER)
    assert (d.reason, d.legs) == (Reason.CLOSE_ONLY, (exit_(SELL, 1),))


def test_decide_never_returns_a_placement_reason():
    placement_only = {Reason.EXIT_QUEUED, Reason.DISCONNECTED, Reason.ENTRY_FAILED,
                      Reason.REJECTED, Reason.QUARANTINE_LIFTED}
    seen = {
        judge(p0, p1, c=c, m=m, **kw).reason
        for p0 in (-2, 0, 2) for p1 in (-3, 0, 1, 3) if p0 != p1
        for c in (-3, -1, 0, 2, 3) for m in ("0.5", "1", "2")
        for kw in ({}, {"reverse": True}, {"close_only": True}, {"quarantined": True},
                   {"paused": True}, {"enabled": False}, {"exit_mode": WITH_LEADER})
    }
    assert not seen & placement_only
    assert seen == {Reason.DISABLED, Reason.PAUSED, Reason.QUARANTINED, Reason.OPPOSITE_SIDE,
                    Reason.COPIED, Reason.NO_CHANGE, Reason.CLOSE_ONLY,
                    Reason.NOTHING_TO_CLOSE}


# --- plan_move -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("current", "target", "legs"), [
    (0, 0, ()),
    (3, 3, ()),
    (0, 3, (entry(BUY, 3),)),
    (0, -2, (entry(SELL, 2),)),
    (3, 5, (entry(BUY, 2),)),
    (-3, -5, (entry(SELL, 2),)),
    (3, 1, (exit_(SELL, 2),)),
    (-3, -1, (exit_(BUY, 2),)),
    (3, 0, (exit_(SELL, 3),)),
    (-3, 0, (exit_(BUY, 3),)),
    (3, -2, (exit_(SELL, 3), entry(SELL, 2))),
    (-3, 2, (exit_(BUY, 3), entry(BUY, 2))),
    (1, -1, (exit_(SELL, 1), entry(SELL, 1))),
])
def test_plan_move_is_an_exit_toward_flat_then_an_entry(current, target, legs):
    assert plan_move(current, target) == legs
    assert after(current, legs) == target


# --- close_by ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("current", "qty", "legs"), [
    (3, 1, (exit_(SELL, 1),)),
    (3, 3, (exit_(SELL, 3),)),
    (3, 5, (exit_(SELL, 3),)),  # capped: never past flat
    (-2, 1, (exit_(BUY, 1),)),
    (-2, 9, (exit_(BUY, 2),)),
    (0, 5, ()),  # nothing held
    (4, 0, ()),  # nothing to close
    (4, -2, ()),
])
def test_close_by_reduces_toward_flat_and_never_passes_it(current, qty, legs):
    assert close_by(current, qty) == legs
    end = after(current, legs)
    assert abs(end) <= abs(current)
    assert sign(end) in (0, sign(current))


# --- cap_exit ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("side", "qty", "position", "capped"), [
    (SELL, 2, 5, 2),  # the follower holds more: all of it goes
    (SELL, 5, 2, 2),  # the follower holds less: capped
    (SELL, 2, 2, 2),
    (BUY, 3, -5, 3),
    (BUY, 7, -4, 4),
    (SELL, 2, 0, 0),  # flat: nothing left
    (BUY, 2, 0, 0),
    (SELL, 2, -3, 0),  # the position is now on the exit's side: selling would add
    (BUY, 2, 3, 0),
    ("sell", 4, 1, 1),  # the side as stored (a string)
    ("buy", 4, -1, 1),
])
def test_cap_exit_never_exceeds_what_the_follower_holds_on_that_side(side, qty, position, capped):
    assert cap_exit(side, qty, position) == capped


# --- placing the plan: leg_outcome, placement_reason, ordered_for_placement ----------------------


@pytest.mark.parametrize(("kind", "kw", "outcome"), [
    (EXIT, {"failed": False}, LegOutcome.PLACED),
    (ENTRY, {"failed": False}, LegOutcome.PLACED),
    (EXIT, {"failed": False, "disconnected": True}, LegOutcome.QUEUED),
    (ENTRY, {"failed": False, "disconnected": True}, LegOutcome.DROPPED),
    (EXIT, {"failed": True}, LegOutcome.QUEUED),
    (ENTRY, {"failed": True}, LegOutcome.FAILED),
    (EXIT, {"failed": True, "permanent": True}, LegOutcome.REJECTED),
    (ENTRY, {"failed": True, "permanent": True}, LegOutcome.REJECTED),
    (EXIT, {"failed": True, "disconnected": True}, LegOutcome.QUEUED),
    (ENTRY, {"failed": True, "permanent": True, "disconnected": True}, LegOutcome.DROPPED),
])
def test_leg_outcome_follows_placing_the_plan(kind, kw, outcome):
    assert leg_outcome(Leg(SELL, 1, kind), **kw) == outcome


def _outcomes(*outcomes: LegOutcome) -> list[tuple[Leg, LegOutcome]]:
    return [(Leg(SELL, 1, EXIT), o) for o in outcomes]


@pytest.mark.parametrize(("outcomes", "reason"), [
    ((), Reason.COPIED),
    ((LegOutcome.PLACED,), Reason.COPIED),
    ((LegOutcome.PLACED, LegOutcome.PLACED), Reason.COPIED),
    ((LegOutcome.DROPPED,), Reason.DISCONNECTED),
    ((LegOutcome.PLACED, LegOutcome.FAILED), Reason.ENTRY_FAILED),
    ((LegOutcome.FAILED, LegOutcome.DROPPED), Reason.ENTRY_FAILED),
    ((LegOutcome.QUEUED,), Reason.EXIT_QUEUED),
    ((LegOutcome.QUEUED, LegOutcome.DROPPED), Reason.EXIT_QUEUED),  # disconnected plan
    ((LegOutcome.QUEUED, LegOutcome.FAILED), Reason.EXIT_QUEUED),
    ((LegOutcome.PLACED, LegOutcome.REJECTED), Reason.REJECTED),
    ((LegOutcome.REJECTED, LegOutcome.QUEUED), Reason.REJECTED),
    ((LegOutcome.REJECTED, LegOutcome.DROPPED, LegOutcome.FAILED), Reason.REJECTED),
])
def test_placement_reason_most_serious_wins_rejected_queued_failed_dropped(outcomes, reason):
    assert placement_reason(Reason.COPIED, _outcomes(*outcomes)) == reason


@pytest.mark.parametrize("planned", [Reason.CLOSE_ONLY, Reason.NO_CHANGE, Reason.COPIED])
def test_placement_reason_keeps_the_planned_reason_when_everything_was_placed(planned):
    assert placement_reason(planned, _outcomes(LegOutcome.PLACED)) == planned
    assert placement_reason(planned, iter(_outcomes())) == planned


def test_placement_reason_takes_any_iterable_once():
    gen = ((Leg(BUY, 1, ENTRY), o) for o in (LegOutcome.PLACED, LegOutcome.FAILED))
    assert placement_reason(Reason.COPIED, gen) == Reason.ENTRY_FAILED


def test_exits_are_placed_before_entries_keeping_their_order():
    legs = (entry(BUY, 1), exit_(SELL, 2), entry(BUY, 3), exit_(SELL, 4))
    assert ordered_for_placement(legs) == (
        exit_(SELL, 2), exit_(SELL, 4), entry(BUY, 1), entry(BUY, 3))


def test_ordered_for_placement_leaves_an_ordered_plan_alone_and_takes_a_generator():
    legs = plan_move(3, -2)
    assert ordered_for_placement(legs) == legs
    assert ordered_for_placement(leg for leg in reversed(legs)) == legs
    assert ordered_for_placement([]) == ()


# --- Failed Exit Queue backoff: min(5 s * 2^(n-1), 1 h) ------------------------------------------


@pytest.mark.parametrize(("attempts", "seconds"), [
    (-3, 0), (0, 0), (1, 5), (2, 10), (3, 20), (4, 40), (5, 80), (10, 2560),
    (11, 3600), (12, 3600), (20, 3600), (21, 3600), (64, 3600), (10**9, 3600),
])
def test_backoff_doubles_from_five_seconds_and_caps_at_an_hour(attempts, seconds):
    assert backoff_seconds(attempts) == seconds


def test_backoff_matches_the_formula_for_every_attempt_count_up_to_a_hundred():
    for n in range(1, 101):
        assert backoff_seconds(n) == min(5 * 2 ** (n - 1), 3600), n
    assert BACKOFF_CAP_SECONDS == 3600


# --- Sync Divergence Guard: divergence, heals, missed_moves --------------------------------------


def test_divergence_lists_every_symbol_whose_position_differs():
    d = divergence({"ES": 2, "NQ": 1, "CL": 0}, {"ES": 2, "CL": -1, "GC": 3})
    assert dict(d.symbols) == {"NQ": (1, 0), "CL": (0, -1), "GC": (0, 3)}
    assert d
    assert d.describe() == (
        "CL: copier +0, broker -1, GC: copier +0, broker +3, NQ: copier +1, broker +0")


def test_no_divergence_when_the_views_agree_with_a_missing_symbol_meaning_flat():
    assert not divergence({}, {})
    assert not divergence({"ES": 1}, {"ES": 1})
    assert not divergence({"ES": 0}, {})
    assert not divergence({}, {"NQ": 0})
    assert divergence({}, {}) == Divergence({})
    assert divergence({}, {}).describe() == ""


def test_paused_follower_heals_when_every_symbol_sits_at_e_of_p():
    m = Decimal("2")
    assert heals({"ES": 2}, {"ES": 1}, m, False)
    assert heals({"ES": 2, "NQ": 0}, {"ES": 1}, m, False)
    assert heals({}, {}, m, False)
    assert heals({}, {"ES": 0}, m, False)


def test_paused_follower_does_not_heal_while_one_symbol_is_off():
    m = Decimal("2")
    assert not heals({"ES": 2, "NQ": 1}, {"ES": 1}, m, False)  # NQ held, leader flat
    assert not heals({}, {"ES": 1}, m, False)  # ES expected 2, follower flat
    assert not heals({"ES": 1}, {"ES": 1}, m, False)
    assert not heals({"ES": -2}, {"ES": 1}, m, False)


def test_heal_uses_rounding_and_the_reverse_sign():
    assert heals({"ES": 1}, {"ES": 1}, Decimal("0.5"), False)
    assert heals({"ES": -2}, {"ES": 3}, Decimal("0.5"), True)
    assert not heals({"ES": 2}, {"ES": 3}, Decimal("0.5"), True)
    assert heals({"ES": 3, "NQ": -2}, {"ES": -2, "NQ": 1}, Decimal("1.5"), True)  # 1.5 -> 2


def test_missed_leader_moves_are_the_position_differences():
    assert missed_moves({"ES": 2, "NQ": -1}, {"ES": 0, "CL": 1, "NQ": -1}) == {
        "ES": LeaderMove(2, 0), "CL": LeaderMove(0, 1)}
    assert missed_moves({"ES": 2}, {"ES": -3}) == {"ES": LeaderMove(2, -3)}


def test_no_missed_moves_when_the_leader_did_not_change():
    assert missed_moves({}, {}) == {}
    assert missed_moves({"ES": 1}, {"ES": 1}) == {}
    assert missed_moves({"ES": 0}, {}) == {}


def test_missed_leader_move_decided_close_only_never_opens():
    moves = missed_moves({"ES": 2, "NQ": 0}, {"ES": -1, "NQ": 3})
    es = decide(moves["ES"], follower(2, close_only=True))
    nq = decide(moves["NQ"], follower(0, close_only=True))
    assert es.legs == (exit_(SELL, 2),)
    assert (nq.reason, nq.legs) == (Reason.CLOSE_ONLY, ())


# --- exits only (docs/rules.md#off-exits-only-active): the follower winds down, never enters ---


def test_exits_only_follower_does_not_copy_the_leaders_open():
    d = judge(0, 2, c=0, exits_only=True)
    assert (d.reason, d.legs) == (Reason.EXITS_ONLY, ())
    assert "held back entry buy 2" in d.note


def test_exits_only_follower_in_sync_does_not_copy_an_add():
    d = judge(2, 3, c=2, exits_only=True)
    assert (d.reason, d.legs) == (Reason.EXITS_ONLY, ())
    assert "held back entry buy 1" in d.note


def test_exits_only_follower_copies_the_leaders_reduction_and_exit():
    assert judge(4, 3, c=4, exits_only=True).legs == (Leg(SELL, 1, EXIT),)
    d = judge(3, 0, c=3, exits_only=True)
    assert (d.reason, d.legs) == (Reason.COPIED, (Leg(SELL, 3, EXIT),))


def test_exits_only_follower_closes_on_a_leader_reversal_and_does_not_open_the_new_side():
    d = judge(3, -2, c=3, exits_only=True)
    assert (d.reason, d.legs) == (Reason.COPIED, (Leg(SELL, 3, EXIT),))
    assert "held back entry sell 2" in d.note


def test_exits_only_follower_left_behind_by_an_add_says_exits_only_not_close_only():
    # diverged because an entry was held back: the mode, not a divergence, is why
    d = judge(4, 5, c=2, exits_only=True)
    assert (d.reason, d.legs) == (Reason.EXITS_ONLY, ())
    assert "diverged" in d.note
    assert "exits only" in d.note


def test_exits_only_follower_diverged_still_reduces_as_close_only():
    d = judge(4, 3, c=2, exits_only=True)
    assert (d.reason, d.legs) == (Reason.CLOSE_ONLY, (Leg(SELL, 1, EXIT),))


def test_exits_only_changes_nothing_when_nothing_would_be_entered():
    assert judge(2, 3, c=0, m="0.1", exits_only=True).reason == Reason.NO_CHANGE
    assert judge(2, 0, c=0, exits_only=True) == judge(2, 0, c=0)
    assert judge(2, 1, c=2, exit_mode=WITH_LEADER, exits_only=True) == judge(
        2, 1, c=2, exit_mode=WITH_LEADER)


@pytest.mark.parametrize(("flags", "reason"), [({"enabled": False}, Reason.DISABLED),
                                          ({"paused": True}, Reason.PAUSED),
                                          ({"quarantined": True}, Reason.QUARANTINED)])
def test_rules_before_exits_only_still_decide_first(flags, reason):
    assert judge(2, 3, c=2, exits_only=True, **flags).reason == reason


def test_exits_only_keeps_the_opposite_side_quarantine():
    d = judge(2, 3, c=-1, exits_only=True)
    assert (d.reason, d.quarantine) == (Reason.OPPOSITE_SIDE, True)
