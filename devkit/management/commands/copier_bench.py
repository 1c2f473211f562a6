"""`manage.py copier_bench`: copy latency and throughput through a real worker, as JSON.

It measures what a trader feels: from the leader's fill being received to
each follower order being accepted by the broker, for one event at a time
(latency) and for a burst (throughput). The same run measures a bare no-op
task on the same worker: the floor any Celery-based engine pays.

`--broker sim` (default) trades at the sim and hands each fill to the copier
as the listener would. `--broker projectx|tradovate` runs every account at a
local server that speaks the venue's protocol, through the real adapters, with
a real `copier_listen` process reading the leader's stream: the latency then
runs from the leader's frame being read to the follower's order acknowledged
by the venue, and the run also measures one HTTP round trip to that server, so
the copier's own cost is the copy minus (bare task + one round trip). A venue
answers the placement (acknowledged) before the copier reads the fill back;
`copy_to_fill_known_ms` runs to that read, when the copier counts the fill.
With `--private` it starts its own PostgreSQL and Redis (like the test
harness) and removes them afterwards. `--guard` measures the account guard instead
(devkit/guard_bench.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from devkit.bench import Bench


class Command(BaseCommand):
    help = "Benchmark copy latency and throughput through a real Celery worker."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--followers", type=int, default=200)
        parser.add_argument("--events", type=int, default=30,
                            help="events measured one at a time (latency)")
        parser.add_argument("--warmup", type=int, default=20,
                            help="events copied before measuring: each worker process prepares"
                                 " its statements on their fifth run")
        parser.add_argument("--burst", type=int, default=20,
                            help="events sent back to back (throughput)")
        parser.add_argument("--concurrency", type=int, default=2)
        parser.add_argument("--pool", default="prefork", choices=["prefork", "threads", "solo"])
        parser.add_argument("--batch-size", type=int, default=None)
        parser.add_argument("--gap-ms", type=float, default=50.0,
                            help="idle time before each measured task, bare or copy: fills"
                                 " come seconds apart, so a copy starts on an idle worker")
        parser.add_argument("--guard", action="store_true",
                            help="instead of copies: the account guard flattening every "
                                 "follower whose equity the market moved through its buffer "
                                 "(devkit/guard_bench.py)")
        parser.add_argument("--broker", default="sim", choices=["sim", "projectx", "tradovate"],
                            help="where the accounts trade: the sim, or a local server that "
                                 "speaks the venue's protocol (real adapters and listener)")
        parser.add_argument("--private", action="store_true",
                            help="start a private PostgreSQL and Redis for this run")

    def handle(self, *args: Any, **options: Any) -> None:
        for name in ("followers", "events", "warmup", "burst", "concurrency", "gap_ms"):
            least = 0 if name in ("warmup", "burst", "gap_ms") else 1
            if options[name] < least:
                raise CommandError(f"--{name.replace('_', '-')} must be a number >= {least}")
        if options["private"]:
            self.stdout.write(self._private(options), ending="")
            return
        if options["guard"]:
            from devkit.guard_bench import GuardBench

            report = GuardBench(options).run()
        else:
            report = Bench(options).run()
        self.stdout.write(json.dumps(report, indent=1))

    def _private(self, options: dict[str, Any]) -> str:
        from devkit.devstack import ensure_server_packages, private_stack

        ensure_server_packages()
        with (
            tempfile.TemporaryDirectory(prefix="copier-bench-") as tmp,
            private_stack(Path(tmp)) as stack,
        ):
            env = {**os.environ, **stack.env()}
            manage = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py")]
            subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], env=env, check=True)
            argv = [*manage, "copier_bench"]
            for key in ("followers", "events", "warmup", "burst", "concurrency", "pool", "gap_ms",
                        "batch_size", "broker"):
                if options[key] is not None:
                    argv += [f"--{key.replace('_', '-')}", str(options[key])]
            if options["guard"]:
                argv.append("--guard")
            done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            raise CommandError(done.stderr.strip().splitlines()[-1] if done.stderr else "failed")
        return done.stdout


