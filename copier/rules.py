"""The copy rules of COPY_RULES.md as pure functions: the one place a rule lives.

No Django, no Celery, no I/O: given the leader's move and the facts about one
follower, `decide` returns what to do and why. It reads like the contract,
rule by rule, so that a trader can check one against the other. Quantities
are ints (positions) and Decimals (multipliers), never floats.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

# Quantity limits, checked before anything is sent (COPY_RULES.md "Joining, settings and
# crashes": one follower's impossible order must never fail the others' copy).
MAX_MULTIPLIER = Decimal(100)
MAX_ORDER_QTY = 10_000  # contracts in one copied entry; exits are never limited


class Reason(StrEnum):
    DISABLED = "disabled"
    PAUSED = "paused"
    QUARANTINED = "quarantined"
    QUARANTINE_LIFTED = "quarantine_lifted"
    OPPOSITE_SIDE = "opposite_side"
    COPIED = "copied"
    NO_CHANGE = "no_change"
    CLOSE_ONLY = "close_only"
    NOTHING_TO_CLOSE = "nothing_to_close"
    EXIT_QUEUED = "exit_queued"
    DISCONNECTED = "disconnected"
    ENTRY_FAILED = "entry_failed"
    REJECTED = "rejected"
    # An exits-only follower (wind-down, or the kill switch): what the rules would have
    # opened or added was held back and nothing else was left to send.
    EXITS_ONLY = "exits_only"
    # Operator actions (copier.services.killswitch): not rules of a leader event, but
    # recorded as decisions too, so a follower's history says who did what.
    ENTRIES_RESUMED = "entries_resumed"
    FLATTENED = "flattened"
    # Symbol mapping (copier.symbol_map): the follower does not trade this leader symbol.
    NOT_MAPPED = "not_mapped"


class Mode(StrEnum):
    """A follower's (and a group's) copying mode beside its `enabled` flag (off)."""

    ACTIVE = "active"
    EXITS_ONLY = "exits_only"


class ExitMode(StrEnum):
    PROPORTIONAL = "proportional"
    WITH_LEADER = "with_leader"


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class LegKind(StrEnum):
    EXIT = "exit"
    ENTRY = "entry"


@dataclass(frozen=True, slots=True)
class Leg:
    side: Side
    qty: int
    kind: LegKind

    def __post_init__(self) -> None:
        if self.qty <= 0:
            raise ValueError(f"a leg needs a quantity > 0, got {self.qty}")

    @property
    def signed(self) -> int:
        return signed(self.side, self.qty)


@dataclass(frozen=True, slots=True)
class LeaderMove:
    """The leader's position on the symbol before (P0) and after (P1) the fill."""

    p0: int
    p1: int

    def __post_init__(self) -> None:
        if self.p0 == self.p1:
            raise ValueError("a leader fill always moves the position (qty > 0)")


@dataclass(frozen=True, slots=True)
class FollowerFacts:
    """What the copier knows about one follower for this symbol when it evaluates."""

    position: int  # C, as last confirmed from the broker
    multiplier: Decimal
    reverse: bool = False
    exit_mode: ExitMode = ExitMode.PROPORTIONAL
    enabled: bool = True  # group and follower both enabled
    paused: bool = False  # after the heal check: the pause stays
    quarantined: bool = False  # an active quarantine on (follower, symbol)
    close_only: bool = False  # a leader move missed while disconnected (reconnect)
    exits_only: bool = False  # the follower's or its group's mode: wind-down, never enters


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the rules say to do for one follower and why; the engine records it as a
    `copier.models.Decision` once its legs met the broker."""

    reason: Reason
    legs: tuple[Leg, ...] = ()
    e0: int = 0
    e1: int = 0
    lift_quarantine: bool = False
    quarantine: bool = False
    note: str = ""


def sign(n: int) -> int:
    return (n > 0) - (n < 0)


def signed(side: Side | str, qty: int) -> int:
    """A quantity as a position move: + buys, - sells. The one helper for it, the sim's too."""
    return qty if side == Side.BUY else -qty


def side_for(delta: int) -> Side:
    return Side.BUY if delta > 0 else Side.SELL


def expected_position(p: int, multiplier: Decimal, reverse: bool) -> int:
    """E(P) = d * sign(P) * round(|P| * m), round half away from zero."""
    if multiplier <= 0:
        raise ValueError("multiplier must be > 0")
    magnitude = int((Decimal(abs(p)) * multiplier).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return (-1 if reverse else 1) * sign(p) * magnitude


def plan_move(current: int, target: int) -> tuple[Leg, ...]:
    """Legs taking `current` to `target`: an exit toward flat first, then an entry.

    A move that crosses zero is an exit to flat plus an entry on the new side.
    """
    if current == target:
        return ()
    delta = target - current
    side = side_for(delta)
    if current == 0 or sign(delta) == sign(current):
        return (Leg(side, abs(delta), LegKind.ENTRY),)
    exit_qty = min(abs(delta), abs(current))
    legs = [Leg(side, exit_qty, LegKind.EXIT)]
    if abs(delta) > exit_qty:
        legs.append(Leg(side, abs(delta) - exit_qty, LegKind.ENTRY))
    return tuple(legs)


def close_by(current: int, qty: int) -> tuple[Leg, ...]:
    """An exit reducing `current` by `qty`, capped so it never passes flat."""
    qty = min(abs(current), qty)
    if qty <= 0:
        return ()
    return (Leg(side_for(-current), qty, LegKind.EXIT),)


def cap_exit(side: Side | str, qty: int, position: int) -> int:
    """How much of an exit can still go out: never more than the position on that side."""
    if position == 0 or sign(signed(side, 1)) == sign(position):
        return 0
    return min(qty, abs(position))


def exit_retry_qty(side: Side | str, qty: int, position: int, expected: int | None) -> int:
    """How much of a queued exit goes out at a retry (Failed Exit Queue).

    Nothing when the follower already holds `expected`, what the leader's position
    calls for (None in a `with_leader` group, where the target after a reduction is
    flat); otherwise capped to what the follower still holds on that side.
    """
    if expected is not None and position == expected:
        return 0
    return cap_exit(side, qty, position)


def entry_denied(leg: Leg) -> str:
    """Why the copier itself refuses to send a leg ('' when it may go): an entry beyond
    the order size limit is a mistake (a multiplier, a fat-fingered fill), never a trade.
    Exits are never denied: they only ever reduce what the follower holds."""
    if leg.kind == LegKind.ENTRY and leg.qty > MAX_ORDER_QTY:
        return (f"denied by the copier: an entry of {leg.qty} contracts is beyond the limit "
                f"of {MAX_ORDER_QTY} per order")
    return ""


def leader_side(move: LeaderMove) -> int:
    return sign(move.p0) if move.p0 != 0 else sign(move.p1)


def decide(move: LeaderMove, facts: FollowerFacts) -> Verdict:
    """Rules 1-6 of COPY_RULES.md, in order (the first that decides, decides), then the
    exits-only filter (docs/rules.md).

    Rule 2's heal check needs the follower's other symbols and is done by the
    caller before: `facts.paused` means the pause stays. Lifting a quarantine
    on flat/flat is reported with `lift_quarantine` and evaluation goes on.
    """
    e0 = expected_position(move.p0, facts.multiplier, facts.reverse)
    e1 = expected_position(move.p1, facts.multiplier, facts.reverse)
    c = facts.position

    def done(reason: Reason, legs: tuple[Leg, ...] = (), **kw: object) -> Verdict:
        return Verdict(reason, legs, e0, e1, lift_quarantine=lifted, **kw)  # type: ignore[arg-type]

    lifted = False
    # 1. Disabled
    if not facts.enabled:
        return done(Reason.DISABLED)
    # 2. Paused
    if facts.paused:
        return done(Reason.PAUSED)
    # 3. Quarantined
    if facts.quarantined:
        if not (c == 0 and move.p0 == 0):
            return done(Reason.QUARANTINED)
        lifted = True
    # 4. Opposite side (normal groups only)
    if not facts.reverse and sign(c) == -leader_side(move) and c != 0:
        return done(Reason.OPPOSITE_SIDE, quarantine=True)
    # 5. In sync
    if c == e0 and not facts.close_only:
        verdict = _in_sync(move, facts, e0, e1, lifted)
    # 6. Diverged: close-only
    else:
        verdict = _close_only(move, c, e0, e1, lifted)
    # 7. Exits only: what 5 or 6 would open or add is held back; exits still go
    return _exits_only(verdict) if facts.exits_only else verdict


def _exits_only(verdict: Verdict) -> Verdict:
    """An exits-only follower keeps the exit legs of the verdict and never its entries.

    A leader reversal closes the follower and does not open it on the new side; a
    leader's open or add leaves it as it is (`exits_only`, not `close_only`: the mode,
    not a divergence, is why nothing was entered). Exits are never held back.
    """
    held = [leg for leg in verdict.legs if leg.kind == LegKind.ENTRY]
    kept = tuple(leg for leg in verdict.legs if leg.kind == LegKind.EXIT)
    notes = [verdict.note] if verdict.note else []
    if held:
        notes.append("exits only: held back " + ", ".join(
            f"entry {leg.side.value} {leg.qty}" for leg in held))
        reason = verdict.reason if kept else Reason.EXITS_ONLY
    elif verdict.reason == Reason.CLOSE_ONLY and not kept:
        notes.append("exits only: the leader opened or added, nothing is entered")
        reason = Reason.EXITS_ONLY
    else:
        return verdict
    return replace(verdict, reason=reason, legs=kept, note="; ".join(notes))


def _in_sync(move: LeaderMove, facts: FollowerFacts, e0: int, e1: int, lifted: bool) -> Verdict:
    same_side_reduction = (
        move.p1 != 0 and sign(move.p1) == sign(move.p0) and abs(move.p1) < abs(move.p0)
    )
    # with_leader closes on any same-side reduction, even one that rounding hides (E1 == E0)
    if facts.exit_mode == ExitMode.WITH_LEADER and same_side_reduction and facts.position:
        return Verdict(
            Reason.COPIED, plan_move(facts.position, 0), e0, e1, lift_quarantine=lifted,
            note="exit_mode with_leader: the leader reduced, the follower closes fully",
        )
    if e1 == e0:
        return Verdict(Reason.NO_CHANGE, (), e0, e1, lift_quarantine=lifted)
    return Verdict(Reason.COPIED, plan_move(facts.position, e1), e0, e1, lift_quarantine=lifted)


def _close_only(move: LeaderMove, c: int, e0: int, e1: int, lifted: bool) -> Verdict:
    def d(reason: Reason, legs: tuple[Leg, ...] = (), note: str = "") -> Verdict:
        return Verdict(reason, legs, e0, e1, lift_quarantine=lifted, note=note)

    flat_or_reversed = move.p1 == 0 or sign(move.p1) == -sign(move.p0)  # from flat: an open
    reduced = not flat_or_reversed and move.p0 != 0 and abs(move.p1) < abs(move.p0)
    if not (flat_or_reversed or reduced):
        return d(Reason.CLOSE_ONLY,
                 note=f"diverged (C={c}, E0={e0}): the copier never opens or adds")
    if c == 0:
        return d(Reason.NOTHING_TO_CLOSE, note=f"diverged (C={c}, E0={e0}): the follower is flat")
    if flat_or_reversed:
        # An unwind closes whatever the follower holds, on either side: E0 may have rounded
        # to 0, or a reverse-group follower may sit on the leader's side.
        legs = close_by(c, abs(c))
    elif sign(c) == sign(e0):
        legs = close_by(c, min(abs(c), abs(e0) - abs(e1)))
    else:
        return d(Reason.NOTHING_TO_CLOSE, note=f"diverged (C={c}, E0={e0}): nothing on E0's side")
    if not legs:
        return d(Reason.NOTHING_TO_CLOSE, note=f"diverged (C={c}, E0={e0}): nothing left to reduce")
    return d(Reason.CLOSE_ONLY, legs, note=f"diverged (C={c}, E0={e0}): reduce by {legs[0].qty}")


# --- placing the plan --------------------------------------------------------------------------


class LegOutcome(StrEnum):
    PLACED = "placed"
    QUEUED = "queued"  # exit saved to the Failed Exit Queue
    DROPPED = "dropped"  # entry not sent: disconnected, or an earlier exit failed
    FAILED = "failed"  # entry failed at the broker: recorded, never retried
    REJECTED = "rejected"  # refused for good by the broker: quarantine


def leg_outcome(leg: Leg, *, failed: bool, permanent: bool = False,
                disconnected: bool = False) -> LegOutcome:
    """What became of one leg ("Placing the plan" in COPY_RULES.md).

    Not sent: an exit to a disconnected follower is queued, anything else is
    dropped. Sent and failed: refused for good is `rejected`; a transient
    failure queues an exit and fails an entry (never retried: a stale entry
    is a new risk).
    """
    is_exit = leg.kind == LegKind.EXIT
    if disconnected:
        return LegOutcome.QUEUED if is_exit else LegOutcome.DROPPED
    if not failed:
        return LegOutcome.PLACED
    if permanent:
        return LegOutcome.REJECTED
    return LegOutcome.QUEUED if is_exit else LegOutcome.FAILED


def placement_reason(planned: Reason, outcomes: Iterable[tuple[Leg, LegOutcome]]) -> Reason:
    """The decision's final reason once its legs met the broker (most serious wins)."""
    seen = {outcome for _leg, outcome in outcomes}
    if LegOutcome.REJECTED in seen:
        return Reason.REJECTED
    if LegOutcome.QUEUED in seen:
        return Reason.EXIT_QUEUED
    if LegOutcome.FAILED in seen:
        return Reason.ENTRY_FAILED
    if LegOutcome.DROPPED in seen:
        return Reason.DISCONNECTED
    return planned


def ordered_for_placement(legs: Iterable[Leg]) -> tuple[Leg, ...]:
    """Exits before entries: an exit never waits behind a risk-adding order."""
    legs = tuple(legs)
    return tuple(leg for leg in legs if leg.kind == LegKind.EXIT) + tuple(
        leg for leg in legs if leg.kind == LegKind.ENTRY
    )


# --- Failed Exit Queue -------------------------------------------------------------------------

BACKOFF_BASE_SECONDS = 5
BACKOFF_CAP_SECONDS = 3600


def backoff_seconds(attempts: int) -> int:
    """Delay after the n-th failed attempt: min(5 s * 2^(n-1), 1 h); 0 before any attempt."""
    if attempts <= 0:
        return 0
    if attempts > 20:  # 2^19 * 5 s is far past the cap already
        return BACKOFF_CAP_SECONDS
    delay: int = BACKOFF_BASE_SECONDS * 2 ** (attempts - 1)
    return min(delay, BACKOFF_CAP_SECONDS)


# --- Sync Divergence Guard ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Divergence:
    """Per symbol: (what the copier knew, what the broker says)."""

    symbols: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.symbols)

    def describe(self) -> str:
        return ", ".join(
            f"{s}: copier {known:+d}, broker {actual:+d}"
            for s, (known, actual) in sorted(self.symbols.items())
        )


def divergence(known: Mapping[str, int], actual: Mapping[str, int]) -> Divergence:
    symbols = set(known) | set(actual)
    return Divergence(
        {
            s: (known.get(s, 0), actual.get(s, 0))
            for s in symbols
            if known.get(s, 0) != actual.get(s, 0)
        }
    )


def heals(
    follower: Mapping[str, int],
    leader: Mapping[str, int],
    multiplier: Decimal,
    reverse: bool,
) -> bool:
    """A paused follower heals when every symbol sits at E(P) for the leader's position."""
    return all(
        follower.get(s, 0) == expected_position(leader.get(s, 0), multiplier, reverse)
        for s in set(follower) | set(leader)
    )


def missed_moves(known: Mapping[str, int], actual: Mapping[str, int]) -> dict[str, LeaderMove]:
    """A leader's positions that changed while it was disconnected: copied close-only."""
    return {
        s: LeaderMove(before, after)
        for s, (before, after) in divergence(known, actual).symbols.items()
    }
