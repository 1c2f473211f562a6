"""Every decision as a sentence with its numbers: what the follower held, what the rules
expected, what was sent and what became of it.

One renderer per reason of `copier.domain.rules.Reason`, in the order
docs/rules.md#decision-order lists them, so that a trader reads the rule that decided in
words rather than a code; a reason added later without a renderer still reads as a
sentence (`generic`). Pure: no Django, no database.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from copier.domain.rules import Note, NoteKind, Reason


def signed(qty: int | None) -> str:
    """+4, -8, 0: a position's sign is its side, so it is always written."""
    if qty is None:
        return "?"
    return f"{qty:+d}" if qty else "0"


@dataclass(frozen=True)
class DecisionFacts:
    """What a decision row says, as the sentence needs it (Decision and its event)."""

    follower: str
    symbol: str
    reason: str
    held: int  # C before
    expected_before: int  # E0
    expected_after: int  # E1
    leader_before: int  # P0
    leader_after: int  # P1
    planned: Sequence[Mapping[str, object]] = ()
    placed: Sequence[Mapping[str, object]] = ()  # planned legs with their "outcome"
    held_after: int | None = None
    notes: Sequence[Note] = ()  # the decision's (`Decision.note_list`)
    close_only_event: bool = False

    def has(self, kind: NoteKind) -> bool:
        return any(note.kind == kind for note in self.notes)


OUTCOME_WORDS = {
    "placed": "sent",
    "queued": "queued to retry",
    "dropped": "not sent",
    "failed": "failed",
    "rejected": "rejected by the broker",
    "waiting": "waiting for the exit before it to fill",
}


def legs_text(legs: Sequence[Mapping[str, object]], *, outcomes: bool = False) -> str:
    """'sell 2, then buy 1' (with outcomes: 'sell 2 (sent), then buy 1 (not sent)')."""
    parts = []
    for leg in legs:
        text = f"{leg.get('side', '?')} {leg.get('qty', '?')}"
        if outcomes and leg.get("outcome"):
            outcome = str(leg["outcome"])
            text += f" ({OUTCOME_WORDS.get(outcome, outcome)})"
        parts.append(text)
    return ", then ".join(parts) if parts else "nothing"


def _opening(f: DecisionFacts) -> str:
    """What it held against where the rules wanted it after the leader's move (E1)."""
    return f"{f.follower} held {signed(f.held)}, expected {signed(f.expected_after)}"


def _in_line(f: DecisionFacts) -> str:
    return f"{f.follower} held {signed(f.held)}, in line with the leader"


def _leader(f: DecisionFacts) -> str:
    return f"the leader went {signed(f.leader_before)} \u2192 {signed(f.leader_after)}"


def _legs(f: DecisionFacts) -> str:
    """What went out, with outcomes when placement recorded them."""
    if f.placed:
        return legs_text(f.placed, outcomes=True)
    return legs_text(f.planned)


def _after(f: DecisionFacts) -> str:
    return f"; now {signed(f.held_after)}" if f.held_after is not None else ""


# Notes whose content the sentence already says in its own words.
_SAID = frozenset({NoteKind.DIVERGED, NoteKind.WITH_LEADER, NoteKind.QUARANTINE_LIFTED})


def _unsaid(f: DecisionFacts) -> list[str]:
    return [note.text for note in f.notes if note.kind not in _SAID]


def _why(f: DecisionFacts) -> str:
    """The broker's or the engine's own words for a failure, when the row has them."""
    said = _unsaid(f)
    return f" ({'; '.join(said)})" if said else ""


def disabled(f: DecisionFacts) -> str:
    return (f"{_opening(f)}: copying is switched off for {f.follower} or its group; "
            f"nothing sent")


def paused(f: DecisionFacts) -> str:
    return (f"{_opening(f)}: {f.follower} is paused (its positions changed outside the "
            f"copier and do not match the leader yet); nothing sent")


def quarantined(f: DecisionFacts) -> str:
    return (f"{_opening(f)}: {f.symbol} is quarantined on {f.follower} until a person lifts "
            f"it or both are flat; nothing sent")


def quarantine_lifted(f: DecisionFacts) -> str:
    return (f"{f.follower} and the leader were both flat on {f.symbol}: the quarantine was "
            f"lifted; {_leader(f)}, {f.follower} moves to {signed(f.expected_after)}: "
            f"{_legs(f)}{_after(f)}")


def opposite_side(f: DecisionFacts) -> str:
    return (f"{_opening(f)}: on the opposite side of the leader, quarantined {f.symbol}; "
            f"nothing sent")


def copied(f: DecisionFacts) -> str:
    if f.has(NoteKind.WITH_LEADER):
        return (f"{_in_line(f)}; {_leader(f)} and this group closes fully with the "
                f"leader's first exit: {_legs(f)}{_after(f)}")
    return (f"{_in_line(f)}; {_leader(f)}, so {f.follower} moves to "
            f"{signed(f.expected_after)}: {_legs(f)}{_after(f)}")


def no_change(f: DecisionFacts) -> str:
    return (f"{_in_line(f)}; {_leader(f)} but the expected position stays "
            f"{signed(f.expected_after)} at this multiplier; nothing sent")


def close_only(f: DecisionFacts) -> str:
    if f.planned:
        return (f"{_opening(f)}: out of line (expected {signed(f.expected_before)} before "
                f"the move), so close-only; {_leader(f)} (a reduction): "
                f"{_legs(f)}{_after(f)}")
    return (f"{_opening(f)}: out of line, so close-only; {_leader(f)} (an entry or an add), "
            f"and the copier never opens or adds on an account out of line; nothing sent")


def nothing_to_close(f: DecisionFacts) -> str:
    what = ("it is flat" if f.held == 0 else
            f"it holds nothing on the side of {signed(f.expected_before)} (expected before "
            f"the move) to reduce")
    return f"{_opening(f)}: out of line, so close-only; {_leader(f)} but {what}; nothing sent"


def exit_queued(f: DecisionFacts) -> str:
    return (f"{_opening(f)}: {_leader(f)}; {_legs(f)}{_why(f)}: the exit is in the Failed "
            f"Exit Queue and is retried until it goes through{_after(f)}")


def disconnected(f: DecisionFacts) -> str:
    return (f"{_opening(f)}: {_leader(f)} but {f.follower}'s broker connection was down: "
            f"{_legs(f)} (an entry is never sent late){_after(f)}")


def entry_failed(f: DecisionFacts) -> str:
    return (f"{_opening(f)}: {_leader(f)}; {_legs(f)}{_why(f)}: a failed entry is never "
            f"retried (a late entry is a new risk){_after(f)}")


def rejected(f: DecisionFacts) -> str:
    return (f"{_opening(f)}: {_leader(f)}; the broker refused for good: {_legs(f)}{_why(f)}; "
            f"quarantined {f.symbol} on {f.follower}{_after(f)}")


def exits_only(f: DecisionFacts) -> str:
    sent = _legs(f) if f.planned else "nothing sent"
    return (f"{_opening(f)}: {f.follower} copies exits only (winding down); {_leader(f)}, "
            f"and no entry is copied to it: {sent}{_after(f)}")


def flattened(f: DecisionFacts) -> str:
    return (f"{f.follower} was flattened by a person on {f.symbol}: {_legs(f)}{_why(f)}"
            f"{_after(f)}; it copies exits only until a person switches it back")


def entries_resumed(f: DecisionFacts) -> str:
    return f"{f.follower}: a person resumed copying entries; nothing sent"


def risk_limit(f: DecisionFacts) -> str:
    sent = _legs(f) if f.planned else "nothing"
    limits = "; ".join(_unsaid(f)) or "a risk limit"
    return (f"{_opening(f)}: {_leader(f)}, and {f.follower}'s own risk limits cut or held "
            f"back the entry ({limits}); exits are never limited; sent: {sent}{_after(f)}")


def not_mapped(f: DecisionFacts) -> str:
    return f"{_leader(f)} on {f.symbol}; {f.follower} does not trade it here{_why(f)}: nothing sent"


def generic(f: DecisionFacts) -> str:
    """A reason without a renderer of its own (added after this module) still reads."""
    return (f"{_opening(f)}: {_leader(f)}; decided {f.reason.replace('_', ' ')}{_why(f)}; "
            f"orders: {_legs(f)}{_after(f)}")


RENDERERS: dict[str, Callable[[DecisionFacts], str]] = {
    Reason.DISABLED: disabled,
    Reason.PAUSED: paused,
    Reason.QUARANTINED: quarantined,
    Reason.QUARANTINE_LIFTED: quarantine_lifted,
    Reason.OPPOSITE_SIDE: opposite_side,
    Reason.COPIED: copied,
    Reason.NO_CHANGE: no_change,
    Reason.CLOSE_ONLY: close_only,
    Reason.NOTHING_TO_CLOSE: nothing_to_close,
    Reason.EXIT_QUEUED: exit_queued,
    Reason.DISCONNECTED: disconnected,
    Reason.ENTRY_FAILED: entry_failed,
    Reason.REJECTED: rejected,
    Reason.EXITS_ONLY: exits_only,
    Reason.FLATTENED: flattened,
    Reason.ENTRIES_RESUMED: entries_resumed,
    Reason.RISK_LIMIT: risk_limit,
    Reason.NOT_MAPPED: not_mapped,
}


def decision_sentence(facts: DecisionFacts) -> str:
    """The decision in words; a quarantine lifted on the way is said first."""
    text = RENDERERS.get(facts.reason, generic)(facts)
    if facts.reason != Reason.QUARANTINE_LIFTED and facts.has(NoteKind.QUARANTINE_LIFTED):
        text = f"quarantine on {facts.symbol} lifted (both flat); " + text
    if facts.close_only_event:
        text += " [a leader move missed while disconnected: copied close-only]"
    return text[0].upper() + text[1:] + "."
