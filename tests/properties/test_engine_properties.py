"""Hypothesis drives random event sequences through the real services and the sim broker.

Leader fills (with duplicates), manual follower fills, outages and restores
of followers and of the leader, transient and permanent broker failures and
clock advances, replayed by the same driver as `copier_replay`. After each
sequence the invariants of docs/rules.md#invariants are checked against the sim
broker's own books, which the copier cannot rewrite.
"""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from brokers.models import SimOrder
from copier.domain import rules
from copier.models import Decision, FailedExit, LeaderEvent, Order
from copier.services import engine
from core.trading import signed
from devkit.replay import Replay, eager_tasks
from devkit.scenario import load
from tests.factories import broker_position, copier_position

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"), pytest.mark.slow]

_names = itertools.count(1)
SYMBOLS = ["ES", "NQ"]


def steps_strategy(followers: list[str]) -> st.SearchStrategy[list[dict]]:
    everyone = ["L", *followers]
    fill = st.fixed_dictionaries({
        "op": st.just("fill"), "account": st.sampled_from(everyone),
        "symbol": st.sampled_from(SYMBOLS), "side": st.sampled_from(["buy", "sell"]),
        "qty": st.integers(1, 4),
    })
    leader_move = st.fixed_dictionaries({
        "op": st.just("fill"), "account": st.just("L"), "symbol": st.sampled_from(SYMBOLS),
        "side": st.sampled_from(["buy", "sell"]), "qty": st.integers(1, 6),
    })
    leader_fill = st.fixed_dictionaries({
        "op": st.just("fill"), "account": st.just("L"), "symbol": st.sampled_from(SYMBOLS),
        "side": st.sampled_from(["buy", "sell"]), "qty": st.integers(1, 4),
        "fill_id": st.sampled_from(["d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8"]),
    })
    connection = st.fixed_dictionaries({
        "op": st.sampled_from(["outage", "restore"]), "account": st.sampled_from(everyone),
    })
    fault = st.fixed_dictionaries({
        "op": st.sampled_from(["fail_orders", "reject_orders"]),
        "account": st.sampled_from(followers), "count": st.integers(0, 2),
    })
    advance = st.fixed_dictionaries({"op": st.just("advance"),
                                     "seconds": st.sampled_from([1, 5, 30, 600])})
    step = st.one_of(leader_move, leader_move, leader_move, fill, leader_fill, connection,
                     fault, advance)
    return st.lists(step, min_size=1, max_size=14)


def _scenario(prefix: str, steps: list[dict], reverse: bool, multipliers: list[str]) -> dict:
    followers = [f"F{i}" for i in range(1, len(multipliers) + 1)]

    def name(n: str) -> str:
        return f"{prefix}{n}"

    renamed = [{**s, "account": name(s["account"])} if "account" in s else s for s in steps]
    for s in renamed:
        if "fill_id" in s:
            s["fill_id"] = f"{prefix}-{s['fill_id']}"
    # end with everyone reachable and time for the retries, so the books can be compared
    tail = [{"op": "restore", "account": name(a)} for a in ["L", *followers]]
    tail.append({"op": "advance", "seconds": 4000})
    return {
        "accounts": [{"name": name(a), "broker": "sim"} for a in ["L", *followers]],
        "groups": [{
            "name": f"{prefix}g", "leader": name("L"), "reverse": reverse,
            "followers": [{"account": name(f), "multiplier": m}
                          for f, m in zip(followers, multipliers, strict=True)],
        }],
        "steps": renamed + tail,
    }


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dict, bool]:
    multipliers = draw(st.lists(st.sampled_from(["1", "2", "0.5", "1.5", "3"]),
                                min_size=1, max_size=2))
    reverse = draw(st.booleans())
    followers = [f"F{i}" for i in range(1, len(multipliers) + 1)]
    steps = draw(steps_strategy(followers))
    prefix = f"H{next(_names)}x"
    return _scenario(prefix, steps, reverse, multipliers), reverse


def _sim_history(account_name: str) -> list[SimOrder]:
    return list(SimOrder.objects.using("broker").filter(book__account__name=account_name,
                                                        status="filled").order_by("id"))


def check_exits_never_exceed_holdings(name: str) -> None:
    """Replaying the broker's own fills: no copier exit ever crosses or passes flat."""
    pos: dict[str, int] = {}
    kinds = dict(Order.objects.filter(account__name=name).values_list("client_order_id", "kind"))
    for fill in _sim_history(name):
        before = pos.get(fill.symbol, 0)
        after = before + signed(fill.side, fill.qty)
        if kinds.get(fill.client_order_id) == "exit":
            where = f"{name}: exit {fill.client_order_id} took {fill.symbol} {before} -> {after}"
            assert before != 0, where
            assert rules.sign(after) in (0, rules.sign(before)), where
        pos[fill.symbol] = after


def _reverse_for(d: Decision) -> bool | None:
    """The group side the decision was taken with (frozen on its event), None if unknown."""
    for seat in engine.event_seats(d.event):
        if seat.account_id == d.account_id:
            return seat.reverse
    return None


def check_normal_follower_never_opposite_leader(name: str) -> None:
    for d in Decision.objects.filter(account__name=name).select_related("event"):
        if d.position_after is None or d.event.p1 == 0 or _reverse_for(d) is not False:
            continue
        moved = d.position_after != d.position_before
        if moved:
            assert rules.sign(d.position_after) != -rules.sign(d.event.p1), (
                f"{name}: copier moved to {d.position_after} against leader {d.event.p1}")


def check_diverged_exposure_never_grows(name: str) -> None:
    for d in Decision.objects.filter(account__name=name).select_related("event"):
        if d.position_after is None:
            continue
        if d.position_before != d.expected_before or d.event.close_only:
            assert abs(d.position_after) <= abs(d.position_before), (
                f"{name}: diverged {d.position_before} grew to {d.position_after} ({d.reason})")
            assert rules.sign(d.position_after) in (0, rules.sign(d.position_before))


def check_copied_follower_lands_on_e1(name: str) -> None:
    """A copied decision whose legs all went out leaves the follower exactly at E1."""
    for d in Decision.objects.filter(account__name=name, reason="copied"):
        assert d.position_after == d.expected_after, (
            f"{name}: copied to {d.position_after}, expected E1 = {d.expected_after}")


def check_nothing_sent_twice(name: str) -> None:
    cids = list(SimOrder.objects.using("broker").filter(book__account__name=name)
                .exclude(client_order_id=None).values_list("client_order_id", flat=True))
    assert len(cids) == len(set(cids))
    for fe in FailedExit.objects.filter(account__name=name):
        assert fe.orders.filter(status="filled").count() <= 1


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=scenarios())
def test_invariants_hold_for_random_event_sequences(case):
    doc, reverse = case
    with eager_tasks():
        Replay(load(json.dumps(doc))).run()
    names = [a["name"] for a in doc["accounts"]]
    leader, followers = names[0], names[1:]
    fill_ids = {s["fill_id"] for s in doc["steps"] if "fill_id" in s}
    events = LeaderEvent.objects.filter(account__name=leader)
    assert events.filter(fill_id__in=fill_ids).count() <= len(fill_ids)  # duplicates: nothing
    for name in followers:
        check_exits_never_exceed_holdings(name)
        if not reverse:
            check_normal_follower_never_opposite_leader(name)
        check_diverged_exposure_never_grows(name)
        check_copied_follower_lands_on_e1(name)
        check_nothing_sent_twice(name)
    from accounts.models import TradingAccount

    for name in names:  # everyone reconnected: the copier's view is the broker's
        account = TradingAccount.objects.get(name=name)
        for symbol in SYMBOLS:
            assert copier_position(account, symbol) == broker_position(account, symbol), name
    for d in Decision.objects.filter(account__name__in=followers):
        assert d.settled_at is not None
    assert not FailedExit.objects.filter(account__name__in=followers, status="in_flight").exists()


# --- crashes and settings changed between a crash and its re-run ---------------------------------


def changes_strategy(followers: list[str]) -> st.SearchStrategy[list[dict]]:
    """The steps above plus crashes, re-runs, joining and leaving, and settings changes."""
    crash = st.fixed_dictionaries({"op": st.just("crash")})
    recover = st.fixed_dictionaries({"op": st.just("recover")})
    enable = st.fixed_dictionaries({"op": st.just("enable"), "account": st.sampled_from(followers),
                                    "enabled": st.booleans()})
    reverse = st.fixed_dictionaries({"op": st.just("reverse"), "group": st.just("g"),
                                     "reverse": st.booleans()})
    join = st.fixed_dictionaries({"op": st.just("join"), "account": st.sampled_from(followers),
                                  "group": st.sampled_from(["g", "r"]),
                                  "multiplier": st.sampled_from(["1", "2", "0.5"])})
    leave = st.fixed_dictionaries({"op": st.just("leave"), "account": st.sampled_from(followers)})
    step = st.one_of(steps_strategy(followers).map(lambda steps: steps[0]), crash, crash, recover,
                     enable, reverse, join, leave)
    return st.lists(step, min_size=1, max_size=16)


@st.composite
def changing_scenarios(draw: st.DrawFn) -> dict:
    followers = ["F1", "F2"]
    prefix = f"C{next(_names)}x"
    doc = _scenario(prefix, draw(changes_strategy(followers)), False, ["1", "2"])
    doc["groups"].append({"name": f"{prefix}r", "leader": f"{prefix}L", "reverse": True,
                          "followers": []})
    for s in doc["steps"]:
        if "group" in s:
            s["group"] = f"{prefix}{s['group']}"
    doc["steps"][-1:-1] = [{"op": "recover"}]  # the re-dispatch before the final retries
    return doc


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(doc=changing_scenarios())
def test_invariants_hold_across_crashes_joins_and_settings_changes(doc):
    """Crashes after the broker executed, re-runs with the follower disabled, removed, moved
    or its group reversed in between: nothing is sent twice, no exit passes flat, no
    normal-group follower is taken against the leader, and once everything is back the
    copier's view is the broker's."""
    with eager_tasks():
        Replay(load(json.dumps(doc))).run()
    names = [a["name"] for a in doc["accounts"]]
    event(f"re-runs after a crash: {LeaderEvent.objects.filter(runs__gt=1).count() > 0}")
    for name in names[1:]:
        check_exits_never_exceed_holdings(name)
        check_normal_follower_never_opposite_leader(name)
        check_diverged_exposure_never_grows(name)
        check_copied_follower_lands_on_e1(name)
        check_nothing_sent_twice(name)
    from accounts.models import TradingAccount

    assert not LeaderEvent.objects.filter(account__name=names[0]).exclude(status="done").exists()
    assert not Order.objects.filter(account__name__in=names, status="unknown").exists()
    for name in names:
        account = TradingAccount.objects.get(name=name)
        for symbol in SYMBOLS:
            assert copier_position(account, symbol) == broker_position(account, symbol), name
