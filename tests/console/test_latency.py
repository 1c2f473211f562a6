"""Copy latency: nearest-rank percentiles (the page's numbers equal PostgreSQL's), the
histogram drawn as SVG, slow copies marked."""

from __future__ import annotations

import datetime as dt
import math
import random
import xml.etree.ElementTree as ET
from collections.abc import Sequence

import pytest

from accounts.models import TradingAccount
from copier.console.latency import (
    BUCKETS_MS,
    SLOW_MS,
    LatencySummary,
    histogram_svg,
    latency_window,
)
from copier.models import Decision, LeaderEvent, Order
from tests.factories import T0

# The oracle: the same summary computed in memory, which the database's must equal.


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest rank: the smallest value with at least `fraction` of the values at or below.

    The same as PostgreSQL's percentile_disc, so the page and this oracle agree to the digit.
    """
    if not values:
        return None
    if not 0 < fraction <= 1:
        raise ValueError(f"a percentile is a fraction in (0, 1], got {fraction}")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def bucket_counts(values_ms: Sequence[float]) -> list[int]:
    """Counts per bucket of BUCKETS_MS (upper bound inclusive), plus one for above the last."""
    counts = [0] * (len(BUCKETS_MS) + 1)
    for v in values_ms:
        counts[next((i for i, b in enumerate(BUCKETS_MS) if v <= b), len(BUCKETS_MS))] += 1
    return counts


def summary_of(label: str, values_ms: Sequence[float]) -> LatencySummary:
    """The summary of values in memory (the database computes the same in `latency_window`)."""
    return LatencySummary(
        label, len(values_ms), percentile(values_ms, 0.5), percentile(values_ms, 0.9),
        percentile(values_ms, 0.99), sum(1 for v in values_ms if v > SLOW_MS),
        tuple(bucket_counts(values_ms)))


def test_percentiles_are_nearest_rank():
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.9) == 90
    assert percentile(values, 0.99) == 99
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) is None
    assert percentile([3, 1, 2], 1.0) == 3
    with pytest.raises(ValueError, match="fraction"):
        percentile([1], 0)


def test_buckets_include_their_upper_bound_and_the_last_takes_the_rest():
    counts = bucket_counts([0, 25, 25.001, 250, 251, 99999])
    assert len(counts) == len(BUCKETS_MS) + 1
    assert counts[0] == 2
    assert counts[1] == 1
    assert counts[BUCKETS_MS.index(250)] == 1
    assert counts[-1] == 1
    assert sum(counts) == 6


def test_the_histogram_is_an_svg_with_a_bar_per_bucket_slow_ones_in_red():
    summary = summary_of("hour", [10, 20, 30, 300, 400, 5000])
    svg = histogram_svg(summary)
    root = ET.fromstring(svg)  # noqa: S314 (our own SVG: well-formed XML)
    ns = "{http://www.w3.org/2000/svg}"
    bars = root.findall(f"{ns}rect")
    assert len(bars) == len(BUCKETS_MS) + 1
    slow = [b for b in bars if b.get("class") == "bar-slow"]
    assert len(slow) == len(BUCKETS_MS) - BUCKETS_MS.index(SLOW_MS)
    titles = [b.find(f"{ns}title").text for b in bars]
    assert "0-25 ms: 2" in titles
    assert "> 2000 ms: 1" in titles
    assert root.get("role") == "img"
    assert "6 orders" in root.get("aria-label")
    assert summary.slow == 3
    assert summary.slow_p99


def test_an_empty_window_draws_empty_bars():
    root = ET.fromstring(histogram_svg(summary_of("day", [])))  # noqa: S314
    assert all(float(r.get("height")) == 0 for r in
               root.findall("{http://www.w3.org/2000/svg}rect"))


@pytest.mark.django_db
def test_the_database_computes_the_same_percentiles_and_buckets_as_python():
    leader, f = (TradingAccount.objects.create(name=n) for n in ("L", "F"))
    rng = random.Random(7)
    values = [round(rng.uniform(5, 900), 3) for _ in range(157)] + [25.0, 250.0]
    for i, ms in enumerate(values):
        ev = LeaderEvent.objects.create(account=leader, fill_id=f"f{i}", symbol="ES",
                                        side="buy", qty=1, p0=i, p1=i + 1, received_at=T0)
        d = Decision.objects.create(event=ev, account=f, symbol="ES", reason="copied",
                                    position_before=i, expected_before=i, expected_after=i + 1,
                                    created_at=T0)
        Order.objects.create(client_order_id=f"c{i}", account=f, symbol="ES", side="buy", qty=1,
                             kind="entry", status="filled", decision=d, created_at=T0,
                             completed_at=T0 + dt.timedelta(milliseconds=ms))
    # an order without an answer, and one from before the window, count for nothing
    Order.objects.create(client_order_id="unknown", account=f, symbol="ES", side="buy", qty=1,
                         kind="entry", status="unknown", decision=d, created_at=T0)
    Order.objects.create(client_order_id="old", account=f, symbol="ES", side="buy", qty=1,
                         kind="entry", status="filled", decision=d,
                         created_at=T0 - dt.timedelta(hours=2),
                         completed_at=T0 + dt.timedelta(seconds=9))
    db = latency_window("hour", T0 - dt.timedelta(hours=1))
    mem = summary_of("hour", values)
    assert db.count == mem.count == len(values)
    for got, want in [(db.p50, mem.p50), (db.p90, mem.p90), (db.p99, mem.p99)]:
        assert got == pytest.approx(want, abs=0.001)
    assert db.buckets == mem.buckets
    assert db.slow == mem.slow
