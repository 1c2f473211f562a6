"""Every decision reads as a sentence with its numbers: one renderer per reason, and a
reason added later still reads (generic)."""

from __future__ import annotations

import pytest

from copier.console.sentences import (
    RENDERERS,
    DecisionFacts,
    decision_sentence,
    generic,
    legs_text,
)
from copier.domain.rules import Note, NoteKind, Reason

SELL2 = {"side": "sell", "qty": 2, "kind": "exit"}
BUY1 = {"side": "buy", "qty": 1, "kind": "entry"}


def failed(leg: dict[str, object], error: str) -> tuple[Note, ...]:
    return (Note.of(NoteKind.LEG_FAILED, leg=leg["kind"], side=leg["side"], qty=leg["qty"],
                    error=error),)


def facts(reason: str, **kw: object) -> DecisionFacts:
    base: dict[str, object] = dict(follower="F2", symbol="MNQ", reason=reason, held=2,
                                   expected_before=2, expected_after=-1, leader_before=2,
                                   leader_after=-1)
    return DecisionFacts(**{**base, **kw})  # type: ignore[arg-type]


# reason -> (facts, words the sentence must carry)
CASES: dict[str, tuple[DecisionFacts, list[str]]] = {
    Reason.DISABLED: (facts("disabled"), ["F2 held +2, expected -1", "switched off",
                                          "nothing sent"]),
    Reason.PAUSED: (facts("paused"), ["F2 held +2, expected -1", "paused", "nothing sent"]),
    Reason.QUARANTINED: (facts("quarantined", held=-8, expected_after=4),
                         ["F2 held -8, expected +4", "MNQ is quarantined on F2",
                          "nothing sent"]),
    Reason.QUARANTINE_LIFTED: (
        facts("quarantine_lifted", held=0, leader_before=0, leader_after=2, expected_after=2,
              planned=[BUY1], placed=[{**BUY1, "outcome": "placed"}], held_after=1),
        ["both flat", "lifted", "buy 1 (sent)", "now +1"]),
    Reason.OPPOSITE_SIDE: (
        facts("opposite_side", held=-8, expected_before=0, expected_after=4, leader_before=0,
              leader_after=2),
        ["F2 held -8, expected +4: on the opposite side of the leader, quarantined MNQ; "
         "nothing sent"]),
    Reason.COPIED: (
        facts("copied", planned=[SELL2, {**SELL2, "qty": 1, "kind": "entry"}],
              placed=[{**SELL2, "outcome": "placed"},
                      {**SELL2, "qty": 1, "kind": "entry", "outcome": "placed"}],
              held_after=-1),
        ["in line", "+2 \u2192 -1", "moves to -1", "sell 2 (sent), then sell 1 (sent)",
         "now -1"]),
    Reason.NO_CHANGE: (facts("no_change", held=1, expected_before=1, expected_after=1,
                             leader_before=3, leader_after=2),
                       ["F2 held +1", "stays +1", "nothing sent"]),
    Reason.CLOSE_ONLY: (facts("close_only", held=1, expected_before=4, expected_after=6,
                              leader_before=4, leader_after=6),
                        ["F2 held +1, expected +6", "close-only", "never opens or adds",
                         "nothing sent"]),
    Reason.NOTHING_TO_CLOSE: (facts("nothing_to_close", held=0, expected_before=4,
                                    expected_after=0, leader_before=4, leader_after=0),
                              ["F2 held 0, expected 0", "it is flat", "nothing sent"]),
    Reason.EXIT_QUEUED: (
        facts("exit_queued", expected_after=0, leader_after=0, planned=[SELL2],
              placed=[{**SELL2, "outcome": "queued"}], held_after=2,
              notes=failed(SELL2, "HTTP 503")),
        ["sell 2 (queued to retry)", "HTTP 503", "Failed Exit Queue", "now +2"]),
    Reason.DISCONNECTED: (
        facts("disconnected", held=0, expected_before=0, expected_after=1, leader_before=0,
              leader_after=1, planned=[BUY1], placed=[{**BUY1, "outcome": "dropped"}]),
        ["connection was down", "buy 1 (not sent)", "never sent late"]),
    Reason.ENTRY_FAILED: (
        facts("entry_failed", held=0, expected_before=0, expected_after=1, leader_before=0,
              leader_after=1, planned=[BUY1], placed=[{**BUY1, "outcome": "failed"}],
              notes=failed(BUY1, "HTTP 503")),
        ["buy 1 (failed)", "HTTP 503", "never retried"]),
    Reason.REJECTED: (
        facts("rejected", planned=[SELL2], placed=[{**SELL2, "outcome": "rejected"}],
              notes=failed(SELL2, "account closed"), held_after=2),
        ["refused for good", "sell 2 (rejected by the broker)", "account closed",
         "quarantined MNQ on F2"]),
    Reason.EXITS_ONLY: (
        facts("exits_only", held=0, expected_before=0, expected_after=2, leader_before=0,
              leader_after=2),
        ["F2 held 0, expected +2", "exits only", "no entry is copied", "nothing sent"]),
    Reason.FLATTENED: (
        facts("flattened", planned=[SELL2], placed=[{**SELL2, "outcome": "placed"}],
              held_after=0),
        ["F2 was flattened by a person on MNQ", "sell 2 (sent)", "now 0", "exits only"]),
    Reason.ENTRIES_RESUMED: (facts("entries_resumed"), ["F2", "resumed copying entries",
                                                        "nothing sent"]),
    Reason.RISK_LIMIT: (
        facts("risk_limit", held=2, expected_before=2, expected_after=3, leader_before=2,
              leader_after=5, planned=[BUY1], placed=[{**BUY1, "outcome": "placed"}],
              held_after=3,
              notes=(Note.of(NoteKind.POSITION_CAPPED, cap=3, uncapped=5, e1=3),)),
        ["F2 held +2, expected +3", "the leader went +2 \u2192 +5", "risk limits",
         "max position 3", "calls for +5", "buy 1 (sent)", "now +3", "exits are never limited"]),
    Reason.NOT_MAPPED: (
        facts("not_mapped", leader_before=0, leader_after=1,
              notes=(Note.of(NoteKind.NOT_MAPPED,
                             why="the mapping trades the leader's NQ as MNQ here: the "
                                 "leader's own MNQ is not copied"),)),
        ["leader went 0 \u2192 +1 on MNQ", "F2 does not trade it here",
         "trades the leader's NQ as MNQ", "nothing sent"]),
}


def test_every_reason_of_the_rules_has_a_renderer_and_a_case_here():
    assert set(RENDERERS) == set(Reason)
    assert set(CASES) == set(Reason)


@pytest.mark.parametrize("reason", list(Reason))
def test_each_reason_reads_as_a_sentence_with_its_numbers(reason):
    f, words = CASES[reason]
    text = decision_sentence(f)
    assert text[0].isupper()
    assert text.endswith(".")
    for w in words:
        assert w in text, (w, text)
    assert "_" not in text.replace("with_leader", ""), text  # no code words left
    assert text != decision_sentence(facts("some_future_reason"))


def test_an_unknown_future_reason_falls_back_to_a_generic_sentence():
    margin = (Note.of(NoteKind.LEGACY_TEXT, text="margin below 10%"),)
    text = decision_sentence(facts("margin_guard", notes=margin))
    assert text == generic(facts("margin_guard", notes=margin))[0].upper() + \
        generic(facts("margin_guard", notes=margin))[1:] + "."
    assert "F2 held +2, expected -1" in text
    assert "margin guard" in text
    assert "margin below 10%" in text


def test_legs_read_as_words_in_order():
    assert legs_text([SELL2, BUY1]) == "sell 2, then buy 1"
    assert legs_text([]) == "nothing"
    assert legs_text([{**SELL2, "outcome": "placed"}, {**BUY1, "outcome": "dropped"}],
                     outcomes=True) == "sell 2 (sent), then buy 1 (not sent)"


def test_a_lifted_quarantine_and_a_missed_move_are_said():
    text = decision_sentence(facts("copied", notes=(Note.of(NoteKind.QUARANTINE_LIFTED),),
                                   close_only_event=True))
    assert text.startswith("Quarantine on MNQ lifted (both flat); ")
    assert "missed while disconnected" in text
    assert "quarantine_lifted" not in text


def test_with_leader_exits_say_the_group_closes_fully():
    text = decision_sentence(facts(
        "copied", leader_after=1, expected_after=1, planned=[SELL2],
        notes=(Note.of(NoteKind.WITH_LEADER),)))
    assert "closes fully with the leader's first exit" in text


def test_every_note_kind_is_put_in_words_and_comes_back_from_json_as_it_went():
    """The console reads a note's kind and numbers: a kind without words of its own, or a
    note that does not survive its storage, would fail here, not on a trader's page."""
    samples = {
        NoteKind.DIVERGED: dict(c=1, e0=4, then="reduce", qty=2),
        NoteKind.WITH_LEADER: {}, NoteKind.EXITS_ONLY_NO_ENTRY: {},
        NoteKind.EXITS_ONLY_HELD: dict(legs=[["buy", 2]]),
        NoteKind.POSITION_CAPPED: dict(cap=3, uncapped=5, e1=3),
        NoteKind.OUTSIDE_WINDOW: dict(window="09:30-16:00 UTC every day", side="buy", qty=1,
                                      at=None),
        NoteKind.MAX_SYMBOLS: dict(limit=2, open=2, side="buy", qty=1),
        NoteKind.MAX_POSITION: dict(limit=3, holds=2, side="buy", qty=4, room=1),
        NoteKind.MAX_ORDER: dict(limit=2, side="buy", qty=4),
        NoteKind.LOSS_LOCKED: dict(lock="daily loss limit $500.00", side="buy", qty=1),
        NoteKind.GUARD: dict(trip="max_contracts", limit=3, holds=2, room=1, side="buy",
                             qty=4),
        NoteKind.GUARD_STOPPED: dict(state="locked", side="buy", qty=1, findings=[
            {"trip": "drawdown", "equity": "48240", "line": "48100", "buffer": "150"}]),
        NoteKind.QUARANTINE_LIFTED: {},
        NoteKind.ROUTED: dict(leader="NQ", symbol="MNQ", ratio="10"),
        NoteKind.NOT_MAPPED: dict(why="not traded here"),
        NoteKind.LEG_ENDED: dict(leg="exit", side="sell", qty=2, filled=1),
        NoteKind.LEG_FAILED: dict(leg="exit", side="sell", qty=2, error="HTTP 503"),
        NoteKind.LEG_QUEUED: dict(leg="exit", side="sell", qty=2, why="disconnected"),
        NoteKind.ENTRY_HELD: dict(why="the follower is disconnected"),
        NoteKind.ACTION: dict(text="ops flattened"),
        NoteKind.LEGACY_TEXT: dict(text="as it was"),
    }
    assert set(samples) == set(NoteKind)
    for kind, values in samples.items():
        note = Note(kind, values)
        assert note.text, kind
        assert Note.from_json(note.to_json()) == note
    assert Note(NoteKind.DIVERGED, samples[NoteKind.DIVERGED]).text == (
        "diverged (C=1, E0=4): reduce by 2")
    assert Note(NoteKind.MAX_POSITION, samples[NoteKind.MAX_POSITION]).text == (
        "max position 3: holds +2, entry buy 4 cut to 1")
