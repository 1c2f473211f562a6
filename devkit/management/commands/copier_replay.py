"""`manage.py copier_replay SCENARIO.json`: the acceptance contract
of docs/rules.md#scenario-replay.

By default it needs no running server: it starts a private PostgreSQL in a
temporary folder, migrates it, replays the scenario there with the Celery
tasks run in-process, prints the JSON and removes everything. `--keep` uses
the configured database instead; `--live` also sends every task through the
configured Redis to a real worker running in this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from celery.signals import task_postrun
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from devkit.scenario import Scenario, ScenarioError, load


class Command(BaseCommand):
    help = "Replay a scenario against the sim broker and print the outcome as JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("scenario", help="scenario JSON file (docs/rules.md#scenario-replay)")
        parser.add_argument("--keep", action="store_true",
                            help="run on the configured database instead of a private one")
        parser.add_argument("--live", action="store_true",
                            help="run tasks through the configured Redis and a real worker "
                                 "(implies --keep)")
        parser.add_argument("--broker", default="sim", choices=["sim", "projectx", "tradovate"],
                            help="where the accounts trade: the sim, or a local server that "
                                 "speaks the venue's protocol, through the real adapter")
        parser.add_argument("--indent", type=int, default=1)

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["scenario"])
        try:
            text = path.read_text()
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}") from None
        try:
            scenario = load(text)
        except ScenarioError as exc:
            raise CommandError(str(exc)) from None
        self.broker: str = options["broker"]
        if not (options["live"] or options["keep"]):
            self.stdout.write(self._private(path, options["indent"]), ending="")
            return
        result = self._live(scenario) if options["live"] else self._eager(scenario)
        self.stdout.write(json.dumps(result, indent=options["indent"]))

    def _eager(self, scenario: Scenario) -> dict[str, Any]:
        from devkit.replay import eager_tasks

        with eager_tasks():
            return self._replay(scenario)

    def _live(self, scenario: Scenario) -> dict[str, Any]:
        from celery.contrib.testing.worker import start_worker

        from copier.shell.celery import app
        from devkit.replay import TaskTracker

        tracker = TaskTracker()
        tracker.connect()
        # The worker's threads end with the replay: close their connections as they go.
        task_postrun.connect(_close_thread_connections, weak=False)
        try:
            with start_worker(app, pool="threads", concurrency=4, perform_ping_check=False,
                              loglevel="WARNING", shutdown_timeout=30):
                return self._replay(scenario, tracker=tracker)
        finally:
            task_postrun.disconnect(_close_thread_connections)
            tracker.disconnect()

    def _replay(self, scenario: Scenario, tracker: Any = None) -> dict[str, Any]:
        from devkit.replay import replay_run

        try:
            return replay_run(scenario, broker=self.broker, tracker=tracker)
        except ScenarioError as exc:
            raise CommandError(str(exc)) from None

    def _private(self, path: Path, indent: int) -> str:
        """A private PostgreSQL for this run only; the replay itself runs in a child."""
        from devkit.devstack import PostgresServer, StackSecrets, ensure_server_packages

        ensure_server_packages()
        with tempfile.TemporaryDirectory(prefix="copier-replay-") as tmp:
            keys = StackSecrets.load_or_create(Path(tmp))
            server = PostgresServer.start(Path(tmp) / "pg", keys.postgres_password)
            try:
                env = {**os.environ, **keys.django_env(), "DATABASE_URL": server.url}
                manage = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py")]
                migrate = subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], env=env,
                                         capture_output=True, text=True, check=False)
                if migrate.returncode:
                    raise CommandError(f"migrating the private database failed: "
                                       f"{migrate.stderr.strip().splitlines()[-1:]}")
                child = subprocess.run(
                    [*manage, "copier_replay", "--keep", "--indent", str(indent),
                     "--broker", self.broker, str(path)],
                    env=env, capture_output=True, text=True, check=False,
                )
            finally:
                server.stop()
        if child.returncode:
            lines = [ln for ln in child.stderr.strip().splitlines() if ln.strip()]
            raise CommandError(lines[-1].removeprefix("CommandError: ") if lines else
                               "replay failed")
        return child.stdout


def _close_thread_connections(**_: Any) -> None:
    from django.db import connections

    connections.close_all()
