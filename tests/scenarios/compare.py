"""The pass rule of shared/scenarios/README.md, as one function that lists every mismatch."""

from __future__ import annotations

from collections import Counter
from typing import Any


def _volume(orders: list[dict[str, Any]]) -> Counter[tuple[str, str, str]]:
    volume: Counter[tuple[str, str, str]] = Counter()
    for o in orders:
        if o["status"] == "filled":
            volume[(o["account"], o["symbol"], o["side"])] += o["qty"]
    return volume


def _exit_key(fe: dict[str, Any]) -> tuple[Any, ...]:
    qty = fe["qty"] if fe["status"] == "pending" else None
    return (fe["account"], fe["symbol"], fe["side"], fe["status"], qty)


def mismatches(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    problems = []
    for key in ("positions", "quarantines", "paused"):
        if expected[key] != actual[key]:
            problems.append(f"{key}: expected {expected[key]}, got {actual[key]}")
    exp_fe = sorted(expected["failed_exits"], key=_exit_key)
    act_fe = sorted(actual["failed_exits"], key=_exit_key)
    if [_exit_key(f) for f in exp_fe] != [_exit_key(f) for f in act_fe]:
        problems.append(f"failed_exits: expected {exp_fe}, got {act_fe}")
    else:
        for e, a in zip(exp_fe, act_fe, strict=True):
            if abs(e["attempts"] - a["attempts"]) > 1:
                problems.append(f"failed_exits attempts: expected {e}, got {a}")
    if _volume(expected["orders"]) != _volume(actual["orders"]):
        problems.append(
            f"orders (filled volume): expected {dict(_volume(expected['orders']))}, "
            f"got {dict(_volume(actual['orders']))}"
        )
    return problems
