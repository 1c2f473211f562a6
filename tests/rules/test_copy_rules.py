"""The pure copy rules, rule by rule, as docs/rules.md#decision-order states them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from copier.domain.rules import (
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
    missed_moves,
    ordered_for_placement,
    placement_reason,
    plan_move,
)
from copier.domain.symbol_map import heals
from core.trading import Side

BUY, SELL, EXIT, ENTRY = Side.BUY, Side.SELL, LegKind.EXIT, LegKind.ENTRY


def facts(c: int = 0, m: str = "1", **kw: object) -> FollowerFacts:
    return FollowerFacts(position=c, multiplier=Decimal(m), **kw)  # type: ignore[arg-type]


def run(p0: int, p1: int, **kw: object) -> Verdict:
    return decide(LeaderMove(p0, p1), facts(**kw))


# --- E(P) --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("p", "m", "reverse", "e"), [
    (1, "0.5", False, 1), (3, "0.5", False, 2), (5, "0.5", False, 3), (-1, "0.5", False, -1),
    (-3, "0.5", False, -2), (2, "1", True, -2), (-2, "1.5", True, 3), (0, "3", False, 0),
    (4, "0.1", False, 0), (5, "0.1", False, 1), (7, "0.3333", False, 2),
])
def test_expected_position_rounds_half_away_from_zero(p, m, reverse, e):
    assert expected_position(p, Decimal(m), reverse) == e


def test_multiplier_must_be_positive():
    with pytest.raises(ValueError, match="> 0"):
        expected_position(1, Decimal(0), False)


def test_a_leader_move_must_move():
    with pytest.raises(ValueError, match="moves"):
        LeaderMove(2, 2)


def test_a_leg_needs_a_positive_quantity():
    with pytest.raises(ValueError, match="> 0"):
        Leg(BUY, 0, ENTRY)


# --- rules 1-3 ---------------------------------------------------------------------------------

def test_disabled_follower_gets_nothing():
    assert run(0, 1, enabled=False) == Verdict(Reason.DISABLED, (), 0, 1)


def test_paused_follower_gets_nothing():
    assert run(0, 1, paused=True).reason == Reason.PAUSED


def test_quarantined_symbol_gets_nothing_unless_both_flat():
    assert run(1, 2, c=0, quarantined=True).reason == Reason.QUARANTINED
    assert run(0, 1, c=1, quarantined=True).reason == Reason.QUARANTINED


def test_quarantine_lifts_when_follower_and_leader_are_flat_and_evaluation_goes_on():
    d = run(0, 2, c=0, quarantined=True)
    assert d.lift_quarantine
    assert (d.reason, d.legs) == (Reason.COPIED, (Leg(BUY, 2, ENTRY),))


def test_disabled_wins_over_paused_and_quarantine():
    assert run(0, 1, enabled=False, paused=True, quarantined=True).reason == Reason.DISABLED


# --- rule 4 ------------------------------------------------------------------------------------

def test_follower_on_the_other_side_is_quarantined_and_gets_nothing():
    d = run(1, 2, c=-1)
    assert (d.reason, d.legs, d.quarantine) == (Reason.OPPOSITE_SIDE, (), True)


def test_leader_side_is_taken_from_p1_when_the_leader_was_flat():
    assert run(0, -1, c=2).reason == Reason.OPPOSITE_SIDE
    assert run(0, 1, c=2).reason == Reason.CLOSE_ONLY


def test_reverse_groups_expect_the_opposite_side():
    d = run(2, 3, c=-2, reverse=True)
    assert (d.reason, d.legs) == (Reason.COPIED, (Leg(SELL, 1, ENTRY),))


# --- rule 5 ------------------------------------------------------------------------------------

def test_in_sync_follower_moves_to_e1():
    assert run(0, 2, m="2").legs == (Leg(BUY, 4, ENTRY),)
    assert run(2, 1, c=4, m="2").legs == (Leg(SELL, 2, EXIT),)


def test_reversal_is_an_exit_to_flat_plus_an_entry():
    d = run(2, -1, c=2)
    assert d.legs == (Leg(SELL, 2, EXIT), Leg(SELL, 1, ENTRY))


def test_no_change_when_rounding_keeps_e1_equal_to_e0():
    d = run(1, 2, c=1, m="0.5")
    assert (d.reason, d.legs) == (Reason.NO_CHANGE, ())


def test_with_leader_mode_closes_fully_on_the_first_reduction():
    d = run(3, 2, c=3, exit_mode=ExitMode.WITH_LEADER)
    assert (d.reason, d.legs) == (Reason.COPIED, (Leg(SELL, 3, EXIT),))


def test_with_leader_mode_follows_a_reversal_normally():
    d = run(3, -1, c=3, exit_mode=ExitMode.WITH_LEADER)
    assert d.legs == (Leg(SELL, 3, EXIT), Leg(SELL, 1, ENTRY))


def test_with_leader_mode_adds_normally():
    assert run(1, 3, c=1, exit_mode=ExitMode.WITH_LEADER).legs == (Leg(BUY, 2, ENTRY),)


# --- rule 6 ------------------------------------------------------------------------------------

def test_diverged_follower_closes_fully_when_the_leader_goes_flat():
    d = run(5, 0, c=2)
    assert (d.reason, d.legs) == (Reason.CLOSE_ONLY, (Leg(SELL, 2, EXIT),))


def test_diverged_follower_closes_fully_on_a_leader_reversal_never_entering():
    d = run(3, -2, c=1)
    assert d.legs == (Leg(SELL, 1, EXIT),)


def test_exit_when_follower_holds_less_is_capped():
    d = run(4, 1, c=2)  # E0 4, E1 1: reduce by min(2, 3)
    assert d.legs == (Leg(SELL, 2, EXIT),)


def test_diverged_reduction_is_proportional_to_the_leader():
    d = run(4, 3, c=3)  # reduce by min(3, 1)
    assert d.legs == (Leg(SELL, 1, EXIT),)


def test_diverged_follower_never_opens_or_adds():
    assert run(1, 3, c=2) == Verdict(Reason.CLOSE_ONLY, (), 1, 3, notes=run(1, 3, c=2).notes)
    assert run(0, 2, c=1).legs == ()


def test_diverged_flat_follower_has_nothing_to_close():
    assert run(2, 0, c=0).reason == Reason.NOTHING_TO_CLOSE


def test_reverse_follower_on_the_leaders_side_is_closed_when_the_leader_goes_flat():
    assert run(2, 0, c=1, reverse=True).legs == (Leg(SELL, 1, EXIT),)


def test_a_missed_leader_move_is_judged_close_only_even_in_sync():
    assert run(2, 0, c=2, close_only=True).legs == (Leg(SELL, 2, EXIT),)
    assert run(0, 2, c=0, close_only=True).legs == ()


# --- placement ---------------------------------------------------------------------------------

def test_exits_go_before_entries():
    legs = (Leg(BUY, 1, ENTRY), Leg(SELL, 2, EXIT))
    assert ordered_for_placement(legs) == (Leg(SELL, 2, EXIT), Leg(BUY, 1, ENTRY))


@pytest.mark.parametrize(("outcomes", "reason"), [
    ([LegOutcome.PLACED], Reason.COPIED),
    ([LegOutcome.PLACED, LegOutcome.FAILED], Reason.ENTRY_FAILED),
    ([LegOutcome.QUEUED, LegOutcome.DROPPED], Reason.EXIT_QUEUED),
    ([LegOutcome.DROPPED], Reason.DISCONNECTED),
    ([LegOutcome.QUEUED, LegOutcome.REJECTED], Reason.REJECTED),
])
def test_placement_reason_reports_the_most_serious_outcome(outcomes, reason):
    leg = Leg(BUY, 1, ENTRY)
    assert placement_reason(Reason.COPIED, [(leg, o) for o in outcomes]) == reason


def test_plan_and_close_helpers():
    assert plan_move(0, 0) == ()
    assert plan_move(-2, 1) == (Leg(BUY, 2, EXIT), Leg(BUY, 1, ENTRY))
    assert plan_move(-2, -1) == (Leg(BUY, 1, EXIT),)
    assert close_by(3, 5) == (Leg(SELL, 3, EXIT),)
    assert close_by(0, 5) == ()


@pytest.mark.parametrize(("side", "qty", "position", "capped"), [
    (SELL, 3, 2, 2), (SELL, 1, 2, 1), (SELL, 2, 0, 0), (SELL, 2, -2, 0), (BUY, 5, -3, 3),
])
def test_cap_exit_never_exceeds_the_position_on_that_side(side, qty, position, capped):
    assert cap_exit(side, qty, position) == capped


# --- Failed Exit Queue -------------------------------------------------------------------------

@pytest.mark.parametrize(("attempts", "seconds"), [
    (0, 0), (1, 5), (2, 10), (3, 20), (10, 2560), (11, 3600), (50, 3600),
])
def test_backoff_is_five_seconds_doubling_capped_at_an_hour(attempts, seconds):
    assert backoff_seconds(attempts) == seconds


# --- Sync Divergence Guard ---------------------------------------------------------------------

def test_divergence_lists_every_symbol_that_differs():
    d = divergence({"ES": 2, "NQ": 1}, {"ES": 2, "CL": -1})
    assert d.symbols == {"NQ": (1, 0), "CL": (0, -1)}
    assert not divergence({"ES": 1}, {"ES": 1})


def test_heals_only_when_every_symbol_sits_at_e_of_p():
    assert heals({"ES": 2}, {"ES": 1}, Decimal(2), False)
    assert not heals({"ES": 2, "NQ": 1}, {"ES": 1}, Decimal(2), False)
    assert heals({"ES": -1}, {"ES": 1}, Decimal(1), True)


def test_missed_leader_moves_are_the_position_differences():
    assert missed_moves({"ES": 2}, {"ES": 0, "NQ": 1}) == {
        "ES": LeaderMove(2, 0), "NQ": LeaderMove(0, 1)}


@pytest.mark.parametrize(("kind", "kw", "outcome"), [
    (EXIT, {"failed": False, "disconnected": True}, LegOutcome.QUEUED),
    (ENTRY, {"failed": False, "disconnected": True}, LegOutcome.DROPPED),
    (ENTRY, {"failed": False}, LegOutcome.PLACED),
    (EXIT, {"failed": True}, LegOutcome.QUEUED),
    (ENTRY, {"failed": True}, LegOutcome.FAILED),
    (EXIT, {"failed": True, "permanent": True}, LegOutcome.REJECTED),
    (ENTRY, {"failed": True, "permanent": True}, LegOutcome.REJECTED),
])
def test_leg_outcome_follows_placing_the_plan(kind, kw, outcome):
    from copier.domain.rules import leg_outcome

    assert leg_outcome(Leg(SELL, 1, kind), **kw) == outcome
