"""The replay ops of working orders (`hold_orders`, `fill_held`, `cancel_held`): validated
in full before anything runs, and acting at the broker on the sim and on both local venues.

The engine's decisions on working orders are not asserted here (they are the engine's):
what is, is what the broker did and what the copier's stream made of it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from accounts.models import Position, TradingAccount
from copier.models import Order
from devkit.localvenue import LocalVenue, venue_start
from devkit.replay import eager_tasks, replay_run
from devkit.scenario import ScenarioError, load

WORLD: dict[str, Any] = {
    "accounts": [{"name": "L1"}, {"name": "F1"}, {"name": "X"}],
    "groups": [{"name": "g", "leader": "L1", "followers": [{"account": "F1"}]}]}


def _scenario(*steps: dict[str, Any]) -> str:
    return json.dumps({**WORLD, "steps": list(steps)})


def _leader_buys(qty: int) -> dict[str, Any]:
    return {"op": "fill", "account": "L1", "symbol": "MESZ6", "side": "buy", "qty": qty}


HOLD = {"op": "hold_orders", "account": "F1", "count": 1}


def test_the_hold_ops_parse():
    s = load(_scenario(HOLD, {"op": "hold_orders", "account": "F1", "count": 2},
                       {"op": "fill_held", "account": "F1", "qty": 1},
                       {"op": "fill_held", "account": "F1"},
                       {"op": "cancel_held", "account": "F1"}))
    assert [(step.op, step.args) for step in s.steps] == [
        ("hold_orders", {"account": "F1", "count": 1}),
        ("hold_orders", {"account": "F1", "count": 2}),
        ("fill_held", {"account": "F1", "qty": 1}), ("fill_held", {"account": "F1"}),
        ("cancel_held", {"account": "F1"})]


@pytest.mark.parametrize(("steps", "message"), [
    ([{"op": "hold_orders", "account": "Z", "count": 1}],
     "step 1 (hold_orders): unknown account 'Z'"),
    ([{"op": "hold_orders", "account": "X", "count": 1}], "step 1 (hold_orders): X follows no"),
    ([{"op": "hold_orders", "account": "F1", "count": 0}],
     "step 1 (hold_orders): count must be a whole number > 0"),
    ([{"op": "hold_orders", "account": "F1", "count": 1.5}], "count must be a whole number > 0"),
    ([{"op": "hold_orders", "account": "F1", "count": "2"}], "count must be a whole number > 0"),
    ([{"op": "hold_orders", "account": "F1"}], "count must be a whole number > 0, got None"),
    ([HOLD, {"op": "fill_held", "account": "F1", "qty": 0}],
     "step 2 (fill_held): qty must be a whole number > 0"),
    ([HOLD, {"op": "fill_held", "account": "F1", "qty": True}], "qty must be a whole number"),
    ([{"op": "fill_held", "account": "F1"}], "step 1 (fill_held): F1 has no held order"),
    ([{"op": "cancel_held", "account": "F1"}], "step 1 (cancel_held): F1 has no held order"),
    ([HOLD, {"op": "fill_held", "account": "F1"}, {"op": "cancel_held", "account": "F1"}],
     "step 3 (cancel_held): F1 has no held order"),
    ([HOLD, {"op": "cancel_held", "account": "L1"}], "step 2 (cancel_held): L1 follows no"),
])
def test_bad_hold_ops_are_refused_naming_the_step(steps, message):
    with pytest.raises(ScenarioError) as caught:
        load(_scenario(*steps))
    assert message in str(caught.value)


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_a_bad_hold_op_through_the_command_exits_with_one_line_and_writes_nothing(
        tmp_path: Path):
    path = tmp_path / "bad.json"
    path.write_text(_scenario(_leader_buys(1), {"op": "fill_held", "account": "F1"}))
    with pytest.raises(CommandError) as caught:
        call_command("copier_replay", str(path), "--keep", stdout=io.StringIO())
    assert "step 2 (fill_held): F1 has no held order" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert not TradingAccount.objects.exists()


@pytest.fixture(scope="module")
def venues() -> Iterator[dict[str, LocalVenue]]:
    started: dict[str, LocalVenue] = {}
    yield started
    for venue in started.values():
        venue.stop()


def _replay(broker: str, venues: dict[str, LocalVenue], *steps: dict[str, Any]
            ) -> dict[str, Any]:
    scenario = load(_scenario(*steps))
    with eager_tasks():
        if broker == "sim":
            return replay_run(scenario)
        venue = venues.get(broker) or venues.setdefault(broker, venue_start(broker))
        return replay_run(scenario, broker=broker, venue=venue)


def _follower() -> tuple[Order, int]:
    order = Order.objects.get(account__name="F1")
    position = Position.objects.filter(account__name="F1", symbol="MESZ6").first()
    return order, position.qty if position is not None else 0


BROKERS = ["sim", pytest.param("projectx", marks=pytest.mark.slow),
           pytest.param("tradovate", marks=pytest.mark.slow)]


@pytest.mark.django_db(transaction=True, databases="__all__")
@pytest.mark.parametrize("broker", BROKERS)
def test_a_held_order_filled_in_part_then_cancelled_reaches_the_copier(broker, venues):
    out = _replay(broker, venues, HOLD, _leader_buys(3),
                  {"op": "fill_held", "account": "F1", "qty": 1},
                  {"op": "cancel_held", "account": "F1"})
    assert out["positions"]["F1"] == {"MESZ6": 1}
    order, held = _follower()
    assert (order.status, order.filled_qty, order.qty) == ("filled", 1, 3)
    assert held == 1  # the part's fill, through the stream


@pytest.mark.django_db(transaction=True, databases="__all__")
@pytest.mark.parametrize("broker", BROKERS)
def test_held_orders_filled_whole_or_cancelled_unfilled_reach_the_copier(broker, venues):
    out = _replay(broker, venues, {"op": "hold_orders", "account": "F1", "count": 1},
                  {"op": "hold_orders", "account": "F1", "count": 1},  # counts add up
                  _leader_buys(2), {"op": "fill_held", "account": "F1"},
                  _leader_buys(1), {"op": "cancel_held", "account": "F1"})
    assert out["positions"]["F1"] == {"MESZ6": 2}
    first, second = Order.objects.filter(account__name="F1").order_by("id")
    assert (first.status, first.filled_qty, first.qty) == ("filled", 2, 2)
    assert (second.status, second.filled_qty, second.qty) == ("cancelled", 0, 1)
    assert _follower_qty() == 2


def _follower_qty() -> int:
    position = Position.objects.filter(account__name="F1", symbol="MESZ6").first()
    return position.qty if position is not None else 0


@pytest.mark.django_db(transaction=True, databases="__all__")
@pytest.mark.parametrize("broker", BROKERS)
def test_fill_held_when_the_copier_sent_nothing_to_hold_stops_naming_the_step(broker, venues):
    with pytest.raises(ScenarioError, match=r"step 2 \(fill_held\): .*no held order"):
        _replay(broker, venues, HOLD, {"op": "fill_held", "account": "F1"})


@pytest.mark.django_db(transaction=True, databases="__all__")
@pytest.mark.parametrize("broker", BROKERS)
def test_fill_held_of_more_than_is_left_stops_naming_the_step(broker, venues):
    with pytest.raises(ScenarioError, match=r"step 3 \(fill_held\): .*from 1 to 2"):
        _replay(broker, venues, HOLD, _leader_buys(2),
                {"op": "fill_held", "account": "F1", "qty": 3})


@pytest.mark.slow
@pytest.mark.django_db(transaction=True, databases="__all__")
@pytest.mark.parametrize("broker", ["projectx", "tradovate"])
def test_a_part_filled_at_the_placements_answer_is_counted_once(broker, venues):
    """The venue fills 1 of 3 before the placement's answer is read back and holds the
    rest: that part comes on the stream as a fill too, and counts once."""
    venue = venues.get(broker) or venues.setdefault(broker, venue_start(broker))
    venue.inject("part_hold")  # the first order placed at the venue: the follower's copy
    # A trade by hand on the follower afterwards: its stream is read (the part's fill first).
    out = _replay(broker, venues, _leader_buys(3),
                  {"op": "fill", "account": "F1", "symbol": "MESZ6", "side": "buy", "qty": 1})
    assert out["positions"]["F1"] == {"MESZ6": 2}
    order, held = _follower()
    assert (order.status, order.filled_qty, order.qty) == ("accepted", 1, 3)
    assert held == 2
