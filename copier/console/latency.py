"""Copy latency as a trader reads it: fill read -> order acknowledged, per order.

The same measure as /metrics (copier.metrics): `LeaderEvent.received_at` (the listener
took the leader's fill off the stream) to `Order.completed_at` (the follower's broker
answered), for the orders a decision sent and the broker answered. The percentiles are
nearest-rank (PostgreSQL's `percentile_disc`; tests/console/test_latency.py holds the same
in Python as the oracle); the histogram is drawn here as SVG, so the page needs no chart
library.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from html import escape

from core.trading import ANSWERED

# A copy slower than this stands out (red on the dashboard and the decision pages).
SLOW_MS = 250
# Histogram bucket upper bounds, ms; the last bucket is everything above.
BUCKETS_MS: tuple[int, ...] = (25, 50, 75, 100, 150, 200, 250, 350, 500, 1000, 2000)


@dataclass(frozen=True)
class LatencySummary:
    """One window's copies: how many, the percentiles (ms), how many were slow, the buckets."""

    label: str
    count: int
    p50: float | None
    p90: float | None
    p99: float | None
    slow: int
    buckets: tuple[int, ...]

    @property
    def slow_p99(self) -> bool:
        return self.p99 is not None and self.p99 > SLOW_MS


def histogram_svg(summary: LatencySummary, *, width: int = 360, height: int = 120) -> str:
    """Bars per bucket, slow buckets in red, the slow threshold marked; a <title> per bar
    says its range and count (a tooltip), and the picture has an accessible name."""
    n = len(summary.buckets)
    top = max(summary.buckets, default=0) or 1
    pad_bottom, pad_top = 18, 6
    bar_w = width / n
    plot_h = height - pad_bottom - pad_top
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" class="latency-histogram" '
        f'data-testid="latency-histogram-{escape(summary.label)}" '
        f'aria-label="copy latency histogram, {escape(summary.label)}, '
        f'{summary.count} orders">'
    ]
    lower = 0
    for i, count in enumerate(summary.buckets):
        upper = BUCKETS_MS[i] if i < len(BUCKETS_MS) else None
        label = f"{lower}-{upper} ms" if upper is not None else f"> {lower} ms"
        h = 0.0 if count == 0 else max(1.0, plot_h * count / top)
        x, y = i * bar_w + 1, pad_top + plot_h - h
        slow = upper is None or upper > SLOW_MS
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w - 2:.1f}" height="{h:.1f}" '
            f'class="{"bar-slow" if slow else "bar"}" fill="{"#c0392b" if slow else "#2e7d32"}">'
            f"<title>{label}: {count}</title></rect>")
        if i % 2 == 0 or upper is None:
            text = f"{upper}" if upper is not None else f">{lower}"
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{height - 4}" font-size="9" '
                         f'text-anchor="middle" fill="#555">{text}</text>')
        lower = upper if upper is not None else lower
    edge = (BUCKETS_MS.index(SLOW_MS) + 1) * bar_w
    parts.append(f'<line x1="{edge:.1f}" y1="{pad_top}" x2="{edge:.1f}" '
                 f'y2="{pad_top + plot_h}" stroke="#c0392b" stroke-dasharray="3,2">'
                 f"<title>slow: over {SLOW_MS} ms</title></line>")
    parts.append("</svg>")
    return "".join(parts)


# --- the database -----------------------------------------------------------------------------

_WINDOW_SQL = """
WITH lat AS (
    SELECT GREATEST(EXTRACT(EPOCH FROM (o.completed_at - e.received_at)) * 1000, 0) AS ms
    FROM copier_order o
    JOIN copier_decision d ON d.id = o.decision_id
    JOIN copier_leaderevent e ON e.id = d.event_id
    WHERE o.completed_at IS NOT NULL AND o.status = ANY(%s)
      AND o.created_at >= %s
)
SELECT (SELECT count(*) FROM lat),
       (SELECT percentile_disc(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY ms) FROM lat),
       (SELECT count(*) FROM lat WHERE ms > %s),
       (SELECT array_agg(ARRAY[b, n]) FROM (
            SELECT width_bucket(ms, %s::float8[]) AS b, count(*) AS n FROM lat GROUP BY 1
        ) AS x)
"""


def latency_window(label: str, since: dt.datetime) -> LatencySummary:
    """The copies of orders created since `since`: one statement, percentiles in PostgreSQL."""
    from django.db import connection

    # width_bucket counts a value equal to a bound in the bucket above it; the buckets
    # here include their upper bound, hence the bounds nudged by a microsecond.
    bounds = [b + 1e-6 for b in BUCKETS_MS]
    with connection.cursor() as cursor:
        cursor.execute(_WINDOW_SQL, [sorted(ANSWERED), since, SLOW_MS, bounds])
        count, pcts, slow, bucket_rows = cursor.fetchone()
    counts = [0] * (len(BUCKETS_MS) + 1)
    for b, n in bucket_rows or []:
        counts[b] = n
    p50, p90, p99 = (pcts or [None, None, None])
    return LatencySummary(label, count, _f(p50), _f(p90), _f(p99), slow, tuple(counts))


def _f(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


_cache: dict[str, tuple[float, list[LatencySummary]]] = {}
CACHE_SECONDS = 10.0


def latency_windows(now: dt.datetime) -> list[LatencySummary]:
    """The last hour and the last day, kept for CACHE_SECONDS per process: every open
    dashboard polls, and a day of orders is a scan (Order has no index on created_at)."""
    hit = _cache.get("windows")
    if hit and time.monotonic() - hit[0] < CACHE_SECONDS:
        return hit[1]
    windows = [latency_window("hour", now - dt.timedelta(hours=1)),
               latency_window("day", now - dt.timedelta(days=1))]
    _cache["windows"] = (time.monotonic(), windows)
    return windows


def latency_cache_clear() -> None:
    _cache.clear()
