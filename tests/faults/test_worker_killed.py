"""SIGKILL the worker at random moments while leader events fan out to followers."""

from __future__ import annotations

import random
import threading
import time

import pytest

from tests.faults.common import build_world, check_outcome, drain, stream_fill

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"), pytest.mark.slow]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_worker_killed_mid_stream_loses_and_doubles_nothing(worker_process, seed, capsys):
    rng = random.Random(seed)
    leader, followers = build_world()
    final = {"ES": 0, "NQ": 0}
    worker_process.start()
    done = threading.Event()

    def killer() -> None:
        while not done.wait(rng.uniform(0.5, 1.5)):
            worker_process.kill()
            worker_process.start()

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    for _ in range(60):
        stream_fill(leader, rng, final)
        time.sleep(rng.uniform(0.03, 0.15))
    time.sleep(rng.uniform(0.0, 1.0))
    done.set()
    thread.join()
    rounds = drain()
    figures = check_outcome(followers, final)
    with capsys.disabled():
        print(f"\n[worker-kill seed {seed}] kills={worker_process.killed} "
              f"workers_started={worker_process.started} redispatch_rounds={rounds} "
              + " ".join(f"{k}={v}" for k, v in figures.items()))
    assert worker_process.killed >= 3
