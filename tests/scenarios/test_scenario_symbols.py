"""Scenario files: a follower's `symbols` and `micro`, parsed, validated, and listed for venues."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from copier.domain.symbol_map import Micro
from devkit.scenario import ScenarioError, load


def _doc(follower: dict, steps: list | None = None) -> str:
    return json.dumps({
        "accounts": [{"name": "L1"}, {"name": "F1"}],
        "groups": [{"name": "g", "leader": "L1", "followers": [{"account": "F1", **follower}]}],
        "steps": steps or [{"op": "fill", "account": "L1", "symbol": "ESZ6", "side": "buy",
                            "qty": 1},
                           {"op": "fill", "account": "L1", "symbol": "nq", "side": "buy",
                            "qty": 1}],
    })


def test_symbols_and_micro_parse_and_the_venue_lists_the_follower_symbols():
    s = load(_doc({"symbols": {"nq": {"symbol": "mnq", "ratio": "5"}}, "micro": True}))
    smap = s.groups[0].followers[0].symbols
    assert smap.micro == Micro.TO_MICRO
    assert smap.route("NQ").ratio == Decimal(5)
    assert s.symbols == ["ESZ6", "MESZ6", "MNQ", "NQ"]


def test_no_mapping_is_the_leaders_own_symbols():
    s = load(_doc({}))
    assert s.groups[0].followers[0].symbols.identity
    assert s.symbols == ["ESZ6", "NQ"]


@pytest.mark.parametrize(("follower", "message"), [
    ({"symbols": {"NQ": "MNQZ6"}}, "groups[1].followers[1].symbols.NQ: follower symbol MNQZ6 is "
                                   "a contract: give its root (MNQ)"),
    ({"symbols": {"NQ": {"symbol": "MNQ", "ratio": 0}}}, "greater than 0"),
    ({"symbols": {"NQ": {"symbol": "MNQ", "ratio": "x"}}}, "ratio must be a number"),
    ({"symbols": {"NQ": {"symbol": "MNQ", "size": 1}}}, "unknown keys ['size']"),
    ({"symbols": {"N Q": "MNQ"}}, "invalid symbol"),
    ({"symbols": {"NQ": "MNQ", "ES": "MNQ"}}, "would both be traded as MNQ"),
    ({"symbols": ["NQ"]}, "expected an object"),
    ({"micro": "yes"}, "micro must be true, false, to_micro, to_mini or off"),
    ({"ratio": 10}, "unknown keys ['ratio']"),
])
def test_a_bad_mapping_is_refused_naming_the_follower(follower, message):
    with pytest.raises(ScenarioError) as err:
        load(_doc(follower))
    assert message in str(err.value)
    assert str(err.value).startswith("groups[1].followers[1]")
