"""The firm presets (copier/domain/presets.py): each builds a valid profile and says where its
numbers came from, and the worked examples the firms publish hold against the guard's line."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from copier.domain.guard import DrawdownModel, GuardRules, Marks, line, marks_at_close, marks_seen
from copier.domain.presets import BY_KEY, MISSING, PRESETS, GuardPreset, preset_rules

D = Decimal
BUFFER, WARN = D(150), D(400)


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.key)
def test_every_preset_builds_a_valid_profile_with_its_own_numbers(preset: GuardPreset):
    rules = preset_rules(preset.key, BUFFER, WARN)
    assert isinstance(rules, GuardRules)
    assert (rules.starting_balance, rules.drawdown, rules.model) == (
        preset.starting_balance, preset.drawdown, preset.model)
    assert (rules.buffer, rules.warn) == (BUFFER, WARN)
    assert rules.daily_loss == preset.daily_loss
    assert rules.max_contracts == preset.max_contracts
    assert rules.flat_by == preset.flat_by
    assert rules.tz == preset.tz


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.key)
def test_every_preset_says_where_it_came_from_and_when(preset: GuardPreset):
    assert preset.source_url.startswith("https://")
    assert preset.read_from
    assert all(u.startswith("https://") for u in preset.read_from)
    assert len(set(preset.read_from)) == len(preset.read_from)
    assert preset.checked_on == dt.date(2026, 12, 2)
    assert preset.note.strip()
    assert preset.firm
    assert preset.plan
    assert len(preset.key) <= 40  # AccountGuard.preset's max_length


def test_keys_are_unique_and_indexed():
    keys = [p.key for p in PRESETS]
    assert len(keys) == len(set(keys))
    assert set(BY_KEY) == set(keys)
    assert all(BY_KEY[p.key] is p for p in PRESETS)


def test_each_firm_the_issue_named_has_presets_or_says_why_not():
    firms = {p.firm for p in PRESETS} | set(MISSING)
    assert firms >= {"Topstep", "Apex Trader Funding", "Take Profit Trader", "Tradeify",
                     "Bulenox", "MyFundedFutures"}
    apex = {p.model for p in PRESETS if p.firm == "Apex Trader Funding"}
    assert apex == {DrawdownModel.EOD_TRAILING, DrawdownModel.INTRADAY_TRAILING}


def test_an_unknown_key_is_a_clear_error():
    with pytest.raises(ValueError, match=r"'topstep-75k' is not a preset.*topstep-50k"):
        preset_rules("topstep-75k", BUFFER, WARN)


def test_a_buffer_as_large_as_the_drawdown_is_refused():
    with pytest.raises(ValueError, match="buffer must be smaller than the drawdown"):
        preset_rules("topstep-50k", D(2000), WARN)


def test_topstep_50k_the_help_center_example():
    """help.topstep.com 'What is the Maximum Loss Limit?': $500 on the first day puts the
    line at $48,500; losing it back leaves it there; at $52,500 it is $50,000 and stays."""
    rules = preset_rules("topstep-50k", BUFFER, WARN)
    marks = Marks.fresh(rules)
    assert line(rules, marks) == D(48000)
    marks = marks_at_close(rules, marks, D(50500))
    assert line(rules, marks) == D(48500)
    marks = marks_at_close(rules, marks, D(50000))
    assert line(rules, marks) == D(48500)
    marks = marks_at_close(rules, marks, D(52500))
    assert line(rules, marks) == D(50000)
    marks = marks_at_close(rules, marks, D(56000))
    assert line(rules, marks) == D(50000)


def test_topstep_50k_reaches_its_stop_at_52000_and_ignores_intraday_highs():
    rules = preset_rules("topstep-50k", BUFFER, WARN)
    marks = marks_seen(rules, Marks.fresh(rules), D(53000))  # an intraday high moves nothing
    assert line(rules, marks) == D(48000)
    marks = marks_at_close(rules, marks, D(52000))
    assert line(rules, marks) == D(50000)
    marks = marks_at_close(rules, marks, D(51000))
    assert line(rules, marks) == D(50000)


def test_tradeify_50k_stops_at_starting_balance_plus_100():
    """tradeify.co: the trail locks once the balance clears $52,100 on a 50K with $2,000."""
    rules = preset_rules("tradeify-growth-50k", BUFFER, WARN)
    marks = marks_at_close(rules, Marks.fresh(rules), D(51500))
    assert line(rules, marks) == D(49500)
    marks = marks_at_close(rules, marks, D(52100))
    assert line(rules, marks) == D(50100)
    marks = marks_at_close(rules, marks, D(55000))
    assert line(rules, marks) == D(50100)


def test_apex_intraday_trails_the_open_peak_and_eod_does_not():
    intraday = preset_rules("apex-intraday-50k", BUFFER, WARN)
    eod = preset_rules("apex-eod-50k", BUFFER, WARN)
    assert line(intraday, marks_seen(intraday, Marks.fresh(intraday), D(50900))) == D(48900)
    assert line(eod, marks_seen(eod, Marks.fresh(eod), D(50900))) == D(48000)
    assert eod.daily_loss == D(1000)
    assert not eod.daily_loss_hard
    assert intraday.daily_loss is None
