"""Bad input fuzzing: scenario files, leader fills and task messages.

Every input is either refused with a clear one-line error or processed by the
rules; nothing already stored changes; the worker never dies.
"""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ValidationError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brokers.base import Fill
from copier import tasks
from copier.models import Decision, LeaderEvent, Order
from copier.services.ingest import FillInput
from core import clock
from devkit.scenario import OPS, ScenarioError, load
from tests.factories import copier_position
from tests.faults.common import build_world, check_outcome, drain

pytestmark = pytest.mark.slow  # thousands of generated inputs: the full run, not the fast loop

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
field_values = st.one_of(json_values, st.sampled_from(
    ["L1", "F1", "ES", "buy", "sell", "1", "-1", "0", 1, 2, -3, 0, 2.5, True, "", "$$"]))
steps = st.fixed_dictionaries(
    {"op": st.one_of(st.sampled_from(OPS), field_values)},
    optional={k: field_values for k in ("account", "symbol", "side", "qty", "count", "seconds",
                                        "enabled", "fill_id")},
)
documents = st.fixed_dictionaries(
    {"accounts": st.one_of(st.just([{"name": "L1"}, {"name": "F1"}]), json_values)},
    optional={"groups": st.one_of(st.just([{"name": "g", "leader": "L1", "followers": [
        {"account": "F1", "multiplier": "1"}]}]), json_values),
              "steps": st.lists(steps, max_size=6), "extra": json_values},
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=st.one_of(documents, json_values))
def test_random_scenario_files_are_parsed_or_refused_with_one_line(doc):
    try:
        scenario = load(json.dumps(doc))
    except ScenarioError as exc:
        message = str(exc)
    else:
        assert all(step.op in OPS for step in scenario.steps)
        return
    assert message
    assert "\n" not in message


@settings(max_examples=500, deadline=None)
@given(text=st.text(max_size=200))
def test_random_text_is_refused_cleanly(text):
    message = ""
    try:
        load(text)
    except ScenarioError as exc:
        message = str(exc)
    assert "\n" not in message


fills = st.builds(
    Fill, fill_id=field_values, symbol=field_values, side=field_values, qty=field_values,
    time=st.just(clock.now()), client_order_id=st.none(),
)


@settings(max_examples=2000, deadline=None)
@given(fill=fills)
def test_random_leader_fills_are_validated_before_anything_is_written(fill):
    try:
        parsed = FillInput.parse(fill_id=fill.fill_id, symbol=fill.symbol, side=fill.side,
                                 qty=fill.qty)
    except ValidationError as exc:
        messages = exc.messages
    else:
        assert parsed.qty > 0
        assert parsed.side in ("buy", "sell")
        return
    assert messages


@pytest.mark.slow
@pytest.mark.django_db(transaction=True, databases="__all__")
def test_malformed_input_changes_nothing_and_the_worker_survives(worker_process, capsys):
    """Garbage fills on the leader's stream and garbage task messages, then a good event."""
    from copier.services.stream_events import broker_events_handle

    leader, followers = build_world()
    worker_process.start()
    before = (LeaderEvent.objects.count(), Decision.objects.count(), Order.objects.count())
    bad = [Fill("b1", "ES", "buy", -2, clock.now()), Fill("b2", "ES", "hold", 1, clock.now()),
           Fill("b3", "$$", "buy", 1, clock.now()), Fill("b4", "ES", "sell", 0, clock.now()),
           Fill("", "ES", "buy", 1, clock.now()), Fill("b6", "ES", "buy", 10**9, clock.now()),
           Fill("b7", None, "buy", 1, clock.now()), Fill("b8", "ES", "buy", "2", clock.now())]
    assert broker_events_handle(account=leader, events=bad) == 0  # type: ignore[arg-type]
    garbage = 0
    for args in [("x",), (None,), (-1,), (10**12,), ([],), ({},)]:
        tasks.process_event.delay(*args)
        tasks.retry_failed_exit.delay(*args)
        tasks.copy_followers.delay(*args, ["x"])
        garbage += 3
    assert (LeaderEvent.objects.count(), Decision.objects.count(),
            Order.objects.count()) == before
    assert copier_position(leader, "ES") == 0
    from tests.factories import leader_fill

    leader_fill(leader, "ES", "buy", 1)  # and a good one still goes through
    drain()
    assert worker_process.alive
    figures = check_outcome(followers, {"ES": 1, "NQ": 0})
    with capsys.disabled():
        print(f"\n[fuzz] malformed_fills={len(bad)} garbage_tasks={garbage} "
              f"worker_alive={worker_process.alive} "
              + " ".join(f"{k}={v}" for k, v in figures.items()))
