"""The scenario ops of modes and the kill switch: bad input is refused with one line."""

from __future__ import annotations

import json

import pytest

from devkit.scenario import ScenarioError, load

WORLD = {"accounts": [{"name": "L1"}, {"name": "F1"}, {"name": "X"}],
         "groups": [{"name": "g", "leader": "L1", "followers": [{"account": "F1"}]}]}


def _load(*steps: dict) -> object:
    return load(json.dumps({**WORLD, "steps": list(steps)}))


def test_mode_ops_parse():
    s = _load({"op": "mode", "account": "F1", "mode": "exits_only"},
              {"op": "group_mode", "group": "g", "mode": "off"},
              {"op": "flatten", "group": "g"}, {"op": "flatten", "account": "F1"})
    assert [step.args for step in s.steps] == [
        {"account": "F1", "mode": "exits_only"}, {"group": "g", "mode": "off"},
        {"group": "g"}, {"account": "F1"}]


@pytest.mark.parametrize(("step", "message"), [
    ({"op": "mode", "account": "F1", "mode": "sleepy"}, "step 1 (mode): mode must be one of"),
    ({"op": "mode", "account": "X", "mode": "off"}, "step 1 (mode): X follows no group"),
    ({"op": "group_mode", "group": "h", "mode": "off"}, "step 1 (group_mode): unknown group"),
    ({"op": "flatten"}, "step 1 (flatten): give either a group or an account"),
    ({"op": "flatten", "group": "g", "account": "F1"}, "give either a group or an account"),
    ({"op": "flatten", "account": "L1"}, "step 1 (flatten): L1 follows no group"),
])
def test_bad_mode_ops_are_refused_naming_the_step(step, message):
    with pytest.raises(ScenarioError) as caught:
        _load(step)
    assert message in str(caught.value)
