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
from copier.rules import Reason

SELL2 = {"side": "sell", "qty": 2, "kind": "exit"}
BUY1 = {"side": "buy", "qty": 1, "kind": "entry"}


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
              detail="exit sell 2: HTTP 503"),
        ["sell 2 (queued to retry)", "HTTP 503", "Failed Exit Queue", "now +2"]),
    Reason.DISCONNECTED: (
        facts("disconnected", held=0, expected_before=0, expected_after=1, leader_before=0,
              leader_after=1, planned=[BUY1], placed=[{**BUY1, "outcome": "dropped"}]),
        ["connection was down", "buy 1 (not sent)", "never sent late"]),
    Reason.ENTRY_FAILED: (
        facts("entry_failed", held=0, expected_before=0, expected_after=1, leader_before=0,
              leader_after=1, planned=[BUY1], placed=[{**BUY1, "outcome": "failed"}],
              detail="entry buy 1: HTTP 503"),
        ["buy 1 (failed)", "HTTP 503", "never retried"]),
    Reason.REJECTED: (
        facts("rejected", planned=[SELL2], placed=[{**SELL2, "outcome": "rejected"}],
              detail="exit sell 2: account closed", held_after=2),
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
              detail="max position 3: the leader's position calls for +5, the follower "
                     "holds at most +3"),
        ["F2 held +2, expected +3", "the leader went +2 \u2192 +5", "risk limits",
         "max position 3", "calls for +5", "buy 1 (sent)", "now +3", "exits are never limited"]),
    Reason.NOT_MAPPED: (
        facts("not_mapped", leader_before=0, leader_after=1,
              detail="the mapping trades the leader's NQ as MNQ here: the leader's own MNQ "
                     "is not copied"),
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
    text = decision_sentence(facts("margin_guard", detail="margin below 10%"))
    assert text == generic(facts("margin_guard", detail="margin below 10%"))[0].upper() + \
        generic(facts("margin_guard", detail="margin below 10%"))[1:] + "."
    assert "F2 held +2, expected -1" in text
    assert "margin guard" in text
    assert "margin below 10%" in text


def test_legs_read_as_words_in_order():
    assert legs_text([SELL2, BUY1]) == "sell 2, then buy 1"
    assert legs_text([]) == "nothing"
    assert legs_text([{**SELL2, "outcome": "placed"}, {**BUY1, "outcome": "dropped"}],
                     outcomes=True) == "sell 2 (sent), then buy 1 (not sent)"


def test_a_lifted_quarantine_and_a_missed_move_are_said():
    text = decision_sentence(facts("copied", detail="quarantine_lifted", close_only_event=True))
    assert text.startswith("Quarantine on MNQ lifted (both flat); ")
    assert "missed while disconnected" in text
    assert "quarantine_lifted" not in text


def test_with_leader_exits_say_the_group_closes_fully():
    text = decision_sentence(facts(
        "copied", leader_after=1, expected_after=1, planned=[SELL2],
        detail="exit_mode with_leader: the leader reduced, the follower closes fully"))
    assert "closes fully with the leader's first exit" in text
