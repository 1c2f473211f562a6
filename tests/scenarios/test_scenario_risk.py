"""A follower's fixed quantity and risk limits in scenario files: parsed into the settings
the replay gives the follower, and bad values refused with one line naming the follower."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from accounts.models import TradingAccount
from devkit.scenario import ScenarioError, load


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
        "daily_loss_limit": None, "daily_loss_action": "lock",
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


# --- daily loss limit and prices --------------------------------------------------------------


def test_daily_loss_limit_and_prices_parse():
    from decimal import Decimal

    s = _load(daily_loss_limit="612.50", daily_loss_action="alert")
    f = s.groups[0].followers[0]  # type: ignore[attr-defined]
    assert (f.daily_loss_limit, f.daily_loss_action) == (Decimal("612.50"), "alert")
    assert f.risk_fields()["daily_loss_limit"] == Decimal("612.50")
    plain = _load(daily_loss_limit=500).groups[0].followers[0]  # type: ignore[attr-defined]
    assert plain.daily_loss_action == "lock"
    s = load(json.dumps({"accounts": [{"name": "L1"}], "steps": [
        {"op": "fill", "account": "L1", "symbol": "MNQ", "side": "buy", "qty": 1,
         "price": 19750.25},
        {"op": "price", "symbol": "MNQ", "price": "19700"}]}))
    assert s.steps[0].args["price"] == Decimal("19750.25")
    assert s.steps[1].args == {"symbol": "MNQ", "price": Decimal(19700)}
    assert s.symbols == ["MNQ"]


@pytest.mark.parametrize(("follower", "message"), [
    ({"daily_loss_limit": 0}, "daily_loss_limit must be an amount from 0.01"),
    ({"daily_loss_limit": -500}, "daily_loss_limit must be an amount from 0.01"),
    ({"daily_loss_limit": "12.345"}, "cents at most"),
    ({"daily_loss_limit": "NaN"}, "daily_loss_limit must be a number, got 'NaN'"),
    ({"daily_loss_limit": True}, "daily_loss_limit must be a number"),
    ({"daily_loss_limit": 500, "daily_loss_action": "panic"},
     "daily_loss_action must be alert or lock"),
    ({"daily_loss_action": "alert"}, "daily_loss_action without a daily_loss_limit"),
])
def test_a_bad_daily_loss_limit_is_refused_naming_the_follower(follower, message):
    with pytest.raises(ScenarioError) as caught:
        _load(**follower)
    assert message in str(caught.value)
    assert str(caught.value).startswith("groups[1].followers[1]")


@pytest.mark.parametrize(("step", "message"), [
    ({"op": "fill", "account": "L1", "symbol": "MNQ", "side": "buy", "qty": 1, "price": -1},
     "step 1 (fill): price must be a number > 0, got -1"),
    ({"op": "fill", "account": "L1", "symbol": "MNQ", "side": "buy", "qty": 1, "price": 0},
     "step 1 (fill): price must be a number > 0"),
    ({"op": "fill", "account": "L1", "symbol": "MNQ", "side": "buy", "qty": 1,
      "price": float("nan")}, "step 1 (fill): price must be a number, got nan"),
    ({"op": "price", "symbol": "MNQ", "price": float("inf")},
     "step 1 (price): price must be a number, got inf"),
    ({"op": "price", "symbol": "MNQ", "price": "cheap"}, "step 1 (price): price must be a number"),
    ({"op": "price", "symbol": "MNQ"}, "step 1 (price): price must be a number, got None"),
    ({"op": "price", "price": 10}, "step 1 (price): symbol must be text"),
])
def test_a_bad_price_is_refused_naming_the_step(step, message):
    # json.dumps writes NaN and Infinity as the bare words json.loads reads back
    with pytest.raises(ScenarioError) as caught:
        load(json.dumps({"accounts": [{"name": "L1"}], "steps": [step]}))
    assert message in str(caught.value)


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_the_replay_command_refuses_a_nan_price_and_writes_nothing(tmp_path: Path):
    path = tmp_path / "bad.json"
    path.write_text('{"accounts": [{"name": "L1"}], "steps": [{"op": "fill", "account": "L1",'
                    ' "symbol": "MNQ", "side": "buy", "qty": 1, "price": NaN}]}')
    with pytest.raises(CommandError, match="price must be a number"):
        call_command("copier_replay", str(path), "--keep", stdout=io.StringIO())
    assert not TradingAccount.objects.exists()


GUARD = {"starting_balance": 50000, "drawdown": 2000}


def test_an_account_guard_parses_into_the_rules_the_admin_checks():
    f = _load(guard={**GUARD, "model": "intraday_trailing", "trail_stop": "100",
                     "daily_loss": 1000, "daily_loss_hard": False, "flat_by": "15:10",
                     "line": 48500}).groups[0].followers[0]  # type: ignore[attr-defined]
    assert (f.guard.model.value, f.guard.trail_stop, f.guard.buffer, f.guard.warn) == (
        "intraday_trailing", 100, 150, 400)
    assert (f.guard.daily_loss_hard, f.guard.flat_by, f.guard_line) == (
        False, dt.time(15, 10), 48500)
    assert _load().groups[0].followers[0].guard is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(("guard", "message"), [
    ({"drawdown": 2000}, "guard: starting_balance is required"),
    ({**GUARD, "buffer": 2500}, "guard: the buffer must be smaller than the drawdown"),
    ({**GUARD, "drawdown": -1}, "guard: the drawdown must be greater than 0"),
    ({**GUARD, "model": "daily"}, "guard: model must be one of static, eod_trailing"),
    ({**GUARD, "flat_by": "3pm"}, "guard: flat_by must be HH:MM"),
    ({**GUARD, "max_contracts": 0}, "guard: max_contracts must be a whole number > 0"),
    ({**GUARD, "drawdown": "lots"}, "guard: drawdown must be a number"),
    ({**GUARD, "line": 48000, "model": "static"}, "a static line is the starting balance"),
    ({**GUARD, "stop": 1}, "guard: unknown keys ['stop']"),
    ("50k", "guard: expected an object"),
])
def test_a_bad_account_guard_is_refused_naming_the_follower(guard, message):
    with pytest.raises(ScenarioError, match=re.escape(message)):
        _load(guard=guard)
