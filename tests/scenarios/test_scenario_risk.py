"""A follower's fixed quantity and risk limits in scenario files: parsed into the settings
the replay gives the follower, and bad values refused with one line naming the follower."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from accounts.models import TradingAccount
from copier.scenario import ScenarioError, load


def _load(**follower: object) -> object:
    return load(json.dumps({
        "accounts": [{"name": "L1"}, {"name": "F1"}],
        "groups": [{"name": "g", "leader": "L1", "followers": [{"account": "F1", **follower}]}],
        "steps": []}))


def test_fixed_quantity_limits_and_window_parse():
    s = _load(fixed_qty=2, max_order_qty=5, max_position=8, max_symbols=3,
              window={"start": "18:00", "end": "17:00", "tz": "America/Chicago",
                      "days": ["sun", "mon", "tue", "wed", "thu"]})
    f = s.groups[0].followers[0]  # type: ignore[attr-defined]
    assert (f.fixed_qty, f.max_order_qty, f.max_position, f.max_symbols) == (2, 5, 8, 3)
    assert f.window.overnight
    assert f.risk_fields()["window_days"] == "mon,tue,wed,thu,sun"
    assert f.risk_fields()["window_start"] == dt.time(18)
    plain = _load().groups[0].followers[0]  # type: ignore[attr-defined]
    assert plain.risk_fields() == {
        "fixed_qty": None, "max_order_qty": None, "max_position": None, "max_symbols": None,
        "window_start": None, "window_end": None, "window_tz": "", "window_days": ""}


@pytest.mark.parametrize(("follower", "message"), [
    ({"fixed_qty": 0}, "fixed_qty must be a whole number from 1 to 10000"),
    ({"fixed_qty": "2"}, "fixed_qty must be a whole number"),
    ({"fixed_qty": 1.5}, "fixed_qty must be a whole number"),
    ({"fixed_qty": True}, "fixed_qty must be a whole number"),
    ({"fixed_qty": 2, "multiplier": "1"}, "either a multiplier or a fixed_qty, not both"),
    ({"max_order_qty": -1}, "max_order_qty must be a whole number from 1 to 10000"),
    ({"max_position": 0}, "max_position must be a whole number from 1 to 100000"),
    ({"max_symbols": 1001}, "max_symbols must be a whole number from 1 to 1000"),
    ({"window": "9-5"}, "groups[1].followers[1].window: expected an object"),
    ({"window": {"start": "09:30"}}, "window: end must be a time HH:MM, got None"),
    ({"window": {"start": "9:30", "end": "16:00"}}, "window: start must be a time HH:MM"),
    ({"window": {"start": "09:30", "end": "25:00"}}, "window: end must be a time HH:MM"),
    ({"window": {"start": "09:30", "end": "09:30"}}, "an end different from its start"),
    ({"window": {"start": "09:30", "end": "16:00", "tz": "Mars/Olympus"}},
     "unknown time zone 'Mars/Olympus'"),
    ({"window": {"start": "09:30", "end": "16:00", "days": "mon-funday"}}, "unknown day"),
    ({"window": {"start": "09:30", "end": "16:00", "days": 5}}, "days must be text"),
    ({"window": {"start": "09:30", "end": "16:00", "open": True}}, "unknown keys ['open']"),
])
def test_bad_sizing_and_limits_are_refused_naming_the_follower(follower, message):
    with pytest.raises(ScenarioError) as caught:
        _load(**follower)
    assert message in str(caught.value)
    assert str(caught.value).startswith("groups[1].followers[1]")


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_the_replay_command_refuses_a_bad_limit_and_writes_nothing(tmp_path: Path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({
        "accounts": [{"name": "L1"}, {"name": "F1"}],
        "groups": [{"name": "g", "leader": "L1",
                    "followers": [{"account": "F1", "max_position": 0}]}],
        "steps": [{"op": "fill", "account": "L1", "symbol": "MNQ", "side": "buy", "qty": 1}]}))
    with pytest.raises(CommandError, match="max_position must be a whole number"):
        call_command("copier_replay", str(path), "--keep", stdout=io.StringIO())
    assert not TradingAccount.objects.exists()
