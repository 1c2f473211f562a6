"""`manage.py copier_bench`: it runs end to end and its JSON counts what it says it counts.

No figure is asserted (a benchmark is not a timed test): the test holds the
command to measuring every follower order of every event, and to refusing
bad options with a clear error.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from django.conf import settings

pytestmark = pytest.mark.slow  # runs the benchmark command: the full run, not the edit loop


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "manage.py", "copier_bench", *args],
                          cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=300,
                          check=False)


@pytest.mark.slow
def test_bench_measures_every_order_through_a_private_stack():
    done = _bench("--private", "--followers", "3", "--events", "4", "--warmup", "2",
                  "--burst", "2", "--gap-ms", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["followers"] == 3
    assert report["warmup_events"] == 2
    assert report["copy_latency_ms"]["n"] == 4 * 3  # every follower order of every event
    assert report["fanout_latency_ms"]["n"] == 4
    assert report["noop_task_latency_ms"]["n"] == 4  # one bare task beside each event
    assert report["throughput"]["orders"] == 2 * 3
    for figures in (report["copy_latency_ms"], report["noop_task_latency_ms"]):
        assert 0 < figures["p50"] <= figures["p90"] <= figures["p99"] <= figures["max"]
    assert report["copy_p50_over_noop_p50"] > 0


@pytest.mark.parametrize(("args", "error"), [
    (["--followers", "0"], "--followers must be a number >= 1"),
    (["--burst", "-1"], "--burst must be a number >= 0"),
    (["--gap-ms", "-5"], "--gap-ms must be a number >= 0"),
])
def test_bad_options_are_refused_before_anything_starts(args, error):
    done = _bench(*args)
    assert done.returncode != 0
    assert error in done.stderr


@pytest.mark.slow
def test_bench_at_a_venue_measures_to_the_acknowledgement_and_to_the_fill_read_back():
    """Through a local ProjectX server, the real adapter and a real listener: the copy runs
    to the venue's acknowledgement, and the fill's read-back comes after it, per order."""
    done = _bench("--private", "--broker", "projectx", "--followers", "1", "--events", "3",
                  "--warmup", "1", "--burst", "0", "--gap-ms", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    copy, known = report["copy_latency_ms"], report["copy_to_fill_known_ms"]
    assert copy["n"] == known["n"] == 3
    assert 0 < copy["p50"] <= known["p50"]
    assert copy["max"] <= known["max"]
    stages = report["copy_stages_p50_ms"]
    assert list(stages) == ["read_to_started", "started_to_sent", "sent_to_acknowledged",
                            "acknowledged_to_fill_known", "fill_known_to_done"]
    assert all(v >= 0 for v in stages.values())
    assert report["venue_round_trip_ms"]["n"] == 50
    assert report["floor_p50_ms"] > 0


@pytest.mark.slow
def test_the_guard_bench_times_every_followers_flatten_from_the_price_move():
    done = _bench("--private", "--guard", "--followers", "3")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert (report["guarded_followers"], report["reads_published"], report["locked"]) == (
        3, 3, 3)
    sent = report["price_move_to_flatten_sent_ms"]
    assert sent["n"] == 3  # one flatten order per follower
    assert 0 < report["price_move_to_reading_kept_ms"]["p50"] <= sent["p50"] <= sent["max"]
    assert report["last_flatten_sent_ms"] == sent["max"]


def test_the_guard_bench_refuses_a_venue():
    done = _bench("--guard", "--broker", "projectx")
    assert done.returncode != 0
    assert "--guard runs at the sim" in done.stderr
