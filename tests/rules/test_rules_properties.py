"""Property tests of copier/domain/rules.py: the invariants of docs/rules.md#invariants, for any
input.

Positions are small signed ints (reversals included), multipliers come from a
fixed set of Decimals and from random Decimals in (0, 10] with 4 places.
`contract()` below is an independent reading of rules 1-6, written from the
page and not from the code, and `decide` is compared with it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from decimal import Decimal
from fractions import Fraction
from itertools import pairwise

from hypothesis import example, given, settings
from hypothesis import strategies as st

from copier.domain.rules import (
    BACKOFF_CAP_SECONDS,
    ExitMode,
    FollowerFacts,
    LeaderMove,
    Leg,
    LegKind,
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
    plan_move,
    sign,
)
from copier.domain.symbol_map import heals
from core.trading import Side, signed


def examples(n: int) -> int:
    """The full run tries `n` cases; `make test-fast` (COPIER_TEST_FAST=1) a quarter."""
    return max(25, n // 4) if os.environ.get("COPIER_TEST_FAST") else n


FAST = settings(max_examples=examples(200), deadline=None)
THOROUGH = settings(max_examples=examples(400), deadline=None)

SET_MULTIPLIERS = [Decimal(m) for m in ("0.1", "0.5", "1", "1.5", "2", "3", "7")]
multipliers = st.one_of(
    st.sampled_from(SET_MULTIPLIERS),
    st.decimals(min_value=Decimal("0.0001"), max_value=Decimal(10), places=4,
                allow_nan=False, allow_infinity=False),
)
positions = st.one_of(st.integers(-20, 20), st.integers(-500, 500))
fills = st.integers(-40, 40).filter(bool)  # a signed leader fill: never 0
exit_modes = st.sampled_from(list(ExitMode))


def rarely(draw: st.DrawFn) -> bool:
    return draw(st.integers(0, 7)) == 0


@dataclass(frozen=True)
class Case:
    move: LeaderMove
    facts: FollowerFacts

    @property
    def c(self) -> int:
        return self.facts.position

    @property
    def e0(self) -> int:
        return expected_position(self.move.p0, self.facts.multiplier, self.facts.reverse)

    @property
    def e1(self) -> int:
        return expected_position(self.move.p1, self.facts.multiplier, self.facts.reverse)


@st.composite
def cases(draw: st.DrawFn, *, reverse: bool | None = None, in_sync: bool = False,
          flags: bool = True, close_only: bool | None = None) -> Case:
    m = draw(multipliers)
    rev = draw(st.booleans()) if reverse is None else reverse
    p0 = draw(st.one_of(st.just(0), positions))  # the leader flat before: rule 4 uses sign(P1)
    targets = [st.just(0), st.just(-p0)] if p0 else []  # going flat, a mirror reversal
    p1 = draw(st.one_of(*targets, fills.map(lambda d: p0 + d)))
    e0 = expected_position(p0, m, rev)
    if in_sync:
        c = e0
    else:
        c = draw(st.one_of(
            st.just(e0),  # in sync
            st.integers(-3, 3).map(lambda d: e0 + d),  # a little off
            st.just(-e0),  # on the other side
            st.just(0),
            positions,
        ))
    facts = FollowerFacts(
        position=c,
        multiplier=m,
        reverse=rev,
        exit_mode=draw(exit_modes),
        enabled=not (flags and rarely(draw)),
        paused=flags and rarely(draw),
        quarantined=flags and rarely(draw),
        close_only=draw(st.booleans()) if close_only is None else close_only,
    )
    return Case(LeaderMove(p0, p1), facts)


def after(c: int, legs: tuple[Leg, ...]) -> int:
    return c + sum(leg.signed for leg in legs)


def path(c: int, legs: tuple[Leg, ...]) -> list[int]:
    """The follower's position after each leg fills, in placement order."""
    out = [c]
    for leg in legs:
        out.append(out[-1] + leg.signed)
    return out


def is_same_side_reduction(move: LeaderMove) -> bool:
    return move.p1 != 0 and sign(move.p1) == sign(move.p0) and abs(move.p1) < abs(move.p0)


# --- an independent reading of the contract ------------------------------------------------------


def e_of(p: int, m: Decimal, reverse: bool) -> int:
    """E(P) with exact rationals: half away from zero is floor(|x| + 1/2)."""
    magnitude = math.floor(abs(p) * Fraction(m) + Fraction(1, 2))
    return (-1 if reverse else 1) * sign(p) * magnitude


def contract(case: Case) -> tuple[Reason, int, bool, bool]:
    """(reason, follower position once every leg fills, quarantine, lift) per
    docs/rules.md#decision-order."""
    f, mv, c = case.facts, case.move, case.c
    e0, e1 = e_of(mv.p0, f.multiplier, f.reverse), e_of(mv.p1, f.multiplier, f.reverse)
    lift = False
    if not f.enabled:
        return Reason.DISABLED, c, False, False
    if f.paused:
        return Reason.PAUSED, c, False, False
    if f.quarantined:
        if not (c == 0 and mv.p0 == 0):
            return Reason.QUARANTINED, c, False, False
        lift = True
    leader = sign(mv.p0) if mv.p0 != 0 else sign(mv.p1)
    if not f.reverse and c != 0 and sign(c) == -leader:
        return Reason.OPPOSITE_SIDE, c, True, lift
    if c == e0 and not f.close_only:
        if f.exit_mode == ExitMode.WITH_LEADER and is_same_side_reduction(mv) and c != 0:
            return Reason.COPIED, 0, False, lift
        if e1 == e0:
            return Reason.NO_CHANGE, c, False, lift
        return Reason.COPIED, e1, False, lift
    if mv.p0 != 0 and (mv.p1 == 0 or sign(mv.p1) != sign(mv.p0)):
        # an unwind: the follower is closed fully, whatever side it holds
        if c == 0:
            return Reason.NOTHING_TO_CLOSE, c, False, lift
        return Reason.CLOSE_ONLY, 0, False, lift
    if mv.p0 != 0 and abs(mv.p1) < abs(mv.p0):
        qty = min(abs(c), abs(e0) - abs(e1))
    else:  # the leader opened or added
        return Reason.CLOSE_ONLY, c, False, lift
    if c == 0 or sign(c) != sign(e0) or qty == 0:
        return Reason.NOTHING_TO_CLOSE, c, False, lift
    return Reason.CLOSE_ONLY, c - sign(c) * qty, False, lift


@THOROUGH
@given(cases())
def test_decide_agrees_with_an_independent_reading_of_the_contract(case):
    d = decide(case.move, case.facts)
    assert (d.reason, after(case.c, d.legs), d.quarantine, d.lift_quarantine) == contract(case)
    assert (d.e0, d.e1) == (case.e0, case.e1)


@THOROUGH
@given(cases(in_sync=True, flags=False, close_only=False))
def test_decide_agrees_with_the_contract_for_in_sync_followers(case):
    d = decide(case.move, case.facts)
    assert (d.reason, after(case.c, d.legs)) == contract(case)[:2]


# --- E(P) ----------------------------------------------------------------------------------------


@FAST
@given(st.integers(-10_000, 10_000), multipliers, st.booleans())
def test_expected_position_rounds_half_away_from_zero_exactly(p, m, reverse):
    e = expected_position(p, m, reverse)
    assert e == e_of(p, m, reverse)
    assert type(e) is int
    assert abs(Fraction(abs(e)) - abs(p) * Fraction(m)) <= Fraction(1, 2)


@FAST
@given(st.integers(-10_000, 10_000), multipliers)
def test_expected_position_is_odd_and_reverse_is_its_negation(p, m):
    e = expected_position(p, m, False)
    assert expected_position(-p, m, False) == -e
    assert expected_position(p, m, True) == -e
    assert sign(e) in (0, sign(p))


@FAST
@given(st.integers(0, 10_000), st.integers(0, 100), multipliers, st.booleans())
def test_expected_position_never_shrinks_as_the_leader_grows(p, more, m, reverse):
    assert abs(expected_position(p + more, m, reverse)) >= abs(expected_position(p, m, reverse))


# --- (a) exits are capped ------------------------------------------------------------------------


@THOROUGH
@given(cases())
def test_exits_never_exceed_what_the_follower_holds_nor_cross_flat(case):
    d = decide(case.move, case.facts)
    c = case.c
    exits = [leg for leg in d.legs if leg.kind == LegKind.EXIT]
    assert sum(leg.qty for leg in exits) <= abs(c)
    if c == 0:
        assert not exits
    for leg in exits:
        assert leg.signed * c < 0  # toward flat
    # every exit leg, filled in order, moves toward flat and never past it
    for before, leg, end in zip(path(c, d.legs), d.legs, path(c, d.legs)[1:], strict=False):
        if leg.kind == LegKind.EXIT:
            assert abs(end) < abs(before)
            assert sign(end) in (0, sign(before))
        else:  # an entry opens or adds
            assert abs(end) > abs(before)
            assert sign(before) in (0, sign(end))


# --- (b) a normal group's follower is never moved to the side opposite the leader ----------------


@THOROUGH
@given(cases(reverse=False))
def test_normal_follower_never_moved_to_the_side_opposite_the_leaders_p1(case):
    """If the follower ends opposite the leader, it was already there and nothing was placed.

    A follower already on the other side is left alone by rule 4 (and by rule 6 when
    E0 rounds to flat, or when the leader reversed onto the follower's side), so the
    invariant is about what the copier *does*: it never takes a follower there.
    """
    d = decide(case.move, case.facts)
    p1, end = case.move.p1, after(case.c, d.legs)
    if p1 != 0 and sign(end) == -sign(p1):
        assert d.legs == ()
        assert sign(case.c) == -sign(p1)
    # and no leg ever passes through the side opposite the leader's new side
    if p1 != 0:
        for pos in path(case.c, d.legs)[1:]:
            assert sign(pos) != -sign(p1) or pos == case.c


# --- (c) a diverged follower (or a missed move) never grows --------------------------------------


@THOROUGH
@given(cases())
def test_diverged_or_close_only_follower_only_shrinks_and_never_flips(case):
    if case.c == case.e0 and not case.facts.close_only:
        return
    d = decide(case.move, case.facts)
    end = after(case.c, d.legs)
    assert abs(end) <= abs(case.c)
    assert sign(end) in (0, sign(case.c))
    assert all(leg.kind == LegKind.EXIT for leg in d.legs)
    assert len(d.legs) <= 1


@THOROUGH
@given(cases(close_only=True))
def test_a_missed_leader_move_never_produces_an_entry(case):
    d = decide(case.move, case.facts)
    assert not [leg for leg in d.legs if leg.kind == LegKind.ENTRY]
    assert d.reason != Reason.COPIED


# --- (d) an in-sync follower lands on E1 ---------------------------------------------------------


@THOROUGH
@given(cases(in_sync=True, flags=False, close_only=False))
def test_in_sync_follower_ends_exactly_at_e1_or_flat_in_with_leader_reduction(case):
    d = decide(case.move, case.facts)
    end = after(case.c, d.legs)
    if case.facts.exit_mode == ExitMode.WITH_LEADER and is_same_side_reduction(case.move):
        assert end == 0
    else:
        assert end == case.e1
    assert d.reason == (Reason.NO_CHANGE if case.c == end else Reason.COPIED)
    assert d.legs == plan_move(case.c, end)


@settings(max_examples=examples(200), deadline=None)
@given(cases(in_sync=True, flags=False, close_only=False))
@example(Case(LeaderMove(2, 1), FollowerFacts(1, Decimal("0.5"), exit_mode=ExitMode.WITH_LEADER)))
def test_with_leader_in_sync_reduction_always_ends_flat(case):
    if case.facts.exit_mode != ExitMode.WITH_LEADER or not is_same_side_reduction(case.move):
        return
    d = decide(case.move, case.facts)
    assert after(case.c, d.legs) == 0


# --- (e) the shape of a plan ---------------------------------------------------------------------


@THOROUGH
@given(cases())
def test_a_plan_is_at_most_one_exit_then_at_most_one_entry(case):
    d = decide(case.move, case.facts)
    kinds = [leg.kind for leg in d.legs]
    assert kinds in ([], [LegKind.EXIT], [LegKind.ENTRY], [LegKind.EXIT, LegKind.ENTRY])
    assert ordered_for_placement(d.legs) == d.legs
    assert len({leg.side for leg in d.legs}) <= 1  # one direction: toward the target
    if d.legs:
        assert d.reason in (Reason.COPIED, Reason.CLOSE_ONLY)
    if d.reason not in (Reason.COPIED, Reason.CLOSE_ONLY):
        assert d.legs == ()
    assert d.quarantine == (d.reason == Reason.OPPOSITE_SIDE)


@FAST
@given(cases())
def test_decide_is_deterministic(case):
    assert decide(case.move, case.facts) == decide(case.move, case.facts)


# --- (f) sequences: a follower whose legs always fill stays in sync ------------------------------


def run_fills(p: int, c: int, deltas: list[int], m: Decimal, reverse: bool,
              mode: ExitMode = ExitMode.PROPORTIONAL) -> list[tuple[int, int, Verdict]]:
    trail = []
    for delta in deltas:
        move = LeaderMove(p, p + delta)
        d = decide(move, FollowerFacts(c, m, reverse=reverse, exit_mode=mode))
        p, c = move.p1, after(c, d.legs)
        trail.append((p, c, d))
    return trail


@settings(max_examples=examples(250), deadline=None)
@given(multipliers, st.booleans(), st.integers(-20, 20), st.lists(fills, max_size=30))
def test_a_follower_starting_in_sync_whose_legs_fill_stays_in_sync(m, reverse, p, deltas):
    c = expected_position(p, m, reverse)
    for leader, follower, d in run_fills(p, c, deltas, m, reverse):
        assert follower == expected_position(leader, m, reverse)
        assert d.reason in (Reason.COPIED, Reason.NO_CHANGE)


@settings(max_examples=examples(150), deadline=None)
@given(st.sampled_from(SET_MULTIPLIERS), st.booleans(), st.lists(fills, max_size=30))
def test_set_multipliers_stay_in_sync_from_flat(m, reverse, deltas):
    for leader, follower, _d in run_fills(0, 0, deltas, m, reverse):
        assert follower == expected_position(leader, m, reverse)


@settings(max_examples=examples(250), deadline=None)
@given(multipliers, st.booleans(), st.lists(fills, max_size=30))
def test_a_with_leader_follower_is_always_at_e_of_p_or_flat(m, reverse, deltas):
    """Once it closed early it stays flat (diverged, close-only) until the leader is flat."""
    for leader, follower, _d in run_fills(0, 0, deltas, m, reverse, ExitMode.WITH_LEADER):
        assert follower in (expected_position(leader, m, reverse), 0)
        if leader == 0:
            assert follower == 0


events = st.one_of(
    st.tuples(st.just("fill"), fills),  # a leader fill, copied
    st.tuples(st.just("missed"), fills),  # a leader fill missed while down: close-only
    st.tuples(st.just("manual"), st.integers(-5, 5).filter(bool)),  # a hand trade
)


@settings(max_examples=examples(250), deadline=None)
@given(multipliers, st.booleans(), exit_modes, st.lists(events, max_size=30))
def test_invariants_hold_for_any_sequence_of_fills_missed_moves_and_hand_trades(
        m, reverse, mode, steps):
    p = c = 0
    quarantined = False
    for op, delta in steps:
        if op == "manual":
            c += delta
            continue
        move = LeaderMove(p, p + delta)
        e0 = expected_position(p, m, reverse)
        d = decide(move, FollowerFacts(c, m, reverse=reverse, exit_mode=mode,
                                       quarantined=quarantined, close_only=op == "missed"))
        end = after(c, d.legs)
        # exits are capped
        assert sum(leg.qty for leg in d.legs if leg.kind == LegKind.EXIT) <= abs(c)
        # a normal follower is never moved to the side opposite the leader
        if not reverse and move.p1 != 0 and sign(end) == -sign(move.p1):
            assert end == c
        # a diverged follower's exposure never grows; a missed move never enters
        if c != e0 or op == "missed":
            assert abs(end) <= abs(c)
            assert sign(end) in (0, sign(c))
        # a quarantined symbol is untouched until follower and leader are flat
        if quarantined and not (c == 0 and p == 0):
            assert (d.reason, d.legs) == (Reason.QUARANTINED, ())
        quarantined = (quarantined and not d.lift_quarantine) or d.quarantine
        p, c = move.p1, end


# --- plan_move, close_by, cap_exit ---------------------------------------------------------------


@FAST
@given(positions, positions)
def test_plan_move_reaches_the_target_with_an_exit_first_that_never_crosses(current, target):
    legs = plan_move(current, target)
    assert after(current, legs) == target
    assert (legs == ()) == (current == target)
    assert ordered_for_placement(legs) == legs
    exits = [leg for leg in legs if leg.kind == LegKind.EXIT]
    assert sum(leg.qty for leg in exits) <= abs(current)
    assert len(legs) <= 2
    if len(legs) == 2:  # a crossing: exactly to flat, then the new side
        assert legs[0].kind == LegKind.EXIT
        assert legs[1].kind == LegKind.ENTRY
        assert after(current, legs[:1]) == 0
    assert sum(leg.qty for leg in legs) == abs(target - current)


@FAST
@given(positions, st.integers(-10, 1000))
def test_close_by_reduces_by_the_quantity_capped_at_flat(current, qty):
    legs = close_by(current, qty)
    end = after(current, legs)
    assert abs(current) - abs(end) == max(0, min(abs(current), qty))
    assert sign(end) in (0, sign(current))
    assert all(leg.kind == LegKind.EXIT for leg in legs)
    assert len(legs) <= 1


@FAST
@given(st.sampled_from(list(Side)), st.integers(0, 1000), positions)
def test_cap_exit_leaves_a_quantity_that_never_passes_flat(side, qty, position):
    capped = cap_exit(side, qty, position)
    assert 0 <= capped <= qty
    assert capped <= abs(position)
    end = position + signed(side, capped)
    assert abs(end) <= abs(position)
    assert sign(end) in (0, sign(position))
    if signed(side, 1) * position < 0:  # a real exit for that position
        assert capped == min(qty, abs(position))
    else:
        assert capped == 0


# --- backoff -------------------------------------------------------------------------------------


@FAST
@given(st.one_of(st.integers(-5, 40), st.integers(-5, 10**6)))
def test_backoff_is_the_formula_capped_and_never_decreasing(n):
    b = backoff_seconds(n)
    assert b == (0 if n <= 0 else min(5 * 2 ** min(n - 1, 64), BACKOFF_CAP_SECONDS))
    assert backoff_seconds(n + 1) >= b
    assert 0 <= b <= 3600


# --- the Sync Divergence Guard -------------------------------------------------------------------

symbols = st.sampled_from(["ES", "NQ", "MNQ", "CL", "GC"])
books = st.dictionaries(symbols, st.integers(-10, 10), max_size=5)


@FAST
@given(books, books)
def test_divergence_is_exactly_the_symbols_that_differ_and_rebuilds_the_broker_view(known, actual):
    d = divergence(known, actual)
    for s in set(known) | set(actual):
        differs = known.get(s, 0) != actual.get(s, 0)
        assert (s in d.symbols) == differs
        if differs:
            assert d.symbols[s] == (known.get(s, 0), actual.get(s, 0))
    rebuilt = {s: v for s, v in known.items() if v}
    rebuilt.update({s: a for s, (_k, a) in d.symbols.items()})
    assert {s: v for s, v in rebuilt.items() if v} == {s: v for s, v in actual.items() if v}
    assert bool(d) == bool(d.symbols)


@FAST
@given(books, books)
def test_missed_moves_are_one_leader_move_per_changed_symbol(known, actual):
    moves = missed_moves(known, actual)
    assert set(moves) == set(divergence(known, actual).symbols)
    for s, mv in moves.items():
        assert (mv.p0, mv.p1) == (known.get(s, 0), actual.get(s, 0))


@FAST
@given(books, books, multipliers, st.booleans())
def test_heals_iff_every_symbol_sits_at_e_of_the_leaders_position(follower, leader, m, reverse):
    expected = {s: e_of(p, m, reverse) for s, p in leader.items()}
    assert heals(follower, leader, m, reverse) == (not divergence(follower, expected))
    assert heals(expected, leader, m, reverse)


# --- exits only: the follower's |position| never grows, and its exits are never blocked --------


def exits_only(case: Case) -> Case:
    return Case(case.move, replace(case.facts, exits_only=True))


@THOROUGH
@given(cases())
def test_an_exits_only_follower_never_grows_nor_crosses_flat(case):
    d = decide(case.move, exits_only(case).facts)
    assert all(leg.kind == LegKind.EXIT for leg in d.legs)
    for before, now in pairwise(path(case.c, d.legs)):
        assert abs(now) <= abs(before)
        assert now == 0 or sign(now) == sign(before)


@THOROUGH
@given(cases())
def test_exits_only_never_blocks_an_exit_the_rules_would_send(case):
    active = decide(case.move, case.facts)
    held = decide(case.move, exits_only(case).facts)
    assert held.legs == tuple(leg for leg in active.legs if leg.kind == LegKind.EXIT)
    assert (held.e0, held.e1, held.quarantine, held.lift_quarantine) == (
        active.e0, active.e1, active.quarantine, active.lift_quarantine)
    entries = [leg for leg in active.legs if leg.kind == LegKind.ENTRY]
    if entries and not held.legs:
        assert held.reason == Reason.EXITS_ONLY
    if entries:
        assert "held back" in held.note
    if not entries and active.reason != Reason.CLOSE_ONLY:
        assert held == active


@THOROUGH
@given(multipliers, st.booleans(), exit_modes, positions, st.lists(fills, max_size=25))
def test_an_exits_only_follower_winds_down_over_any_sequence_of_leader_fills(
    m, reverse, exit_mode, p, deltas
):
    c = expected_position(p, m, reverse)  # in line when it goes exits only
    for delta in deltas:
        facts = FollowerFacts(position=c, multiplier=m, reverse=reverse, exit_mode=exit_mode,
                              exits_only=True)
        d = decide(LeaderMove(p, p + delta), facts)
        now = after(c, d.legs)
        assert abs(now) <= abs(c)
        assert (now == 0 or sign(now) == sign(c))
        if d.reason == Reason.OPPOSITE_SIDE:
            break  # quarantined: nothing more is copied (a reverse group never gets here)
        c, p = now, p + delta
