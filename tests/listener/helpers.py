"""Listeners for tests: `manage.py copier_listen` as a real process, or in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.db import connection

from accounts.models import TradingAccount
from copier.stream.process import Listener
from tests.helpers import wait_until


def test_database_url() -> str:
    s = connection.settings_dict
    user = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return f"postgres://{user}@{s['HOST']}:{s['PORT']}/{s['NAME']}"


class ListenerProcess:
    """`manage.py copier_listen --name NAME` on the test database, in its own process group.

    Its log goes to a file, shown by `log()` when a test fails.
    """

    def __init__(self, name: str, logdir: Path) -> None:
        self.name = name
        self.logfile = logdir / f"listener-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {**os.environ, "DATABASE_URL": test_database_url(),
                    "REDIS_URL": settings.REDIS_URL, "LOG_LEVEL": "INFO",
                    "PYTHONPATH": str(settings.BASE_DIR)}

    def start(self) -> ListenerProcess:
        with self.logfile.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "copier_listen",
                 "--name", self.name],
                env=self.env, cwd=settings.BASE_DIR, start_new_session=True,
                stdout=out, stderr=subprocess.STDOUT)
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup at all; PostgreSQL drops its connections and locks."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM and wait; the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                raise
        return self.proc.returncode

    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""


@contextlib.contextmanager
def listener_thread(name: str = "in-process", scan_seconds: float = 0.2) -> Iterator[Listener]:
    """A listener on its own loop in a thread of the test process (its tasks run eagerly
    where the test says so); stopped, its connections closed, on exit."""
    listener = Listener(name, scan_seconds=scan_seconds)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(listener.run())
        except BaseException as exc:  # shown by the test, not lost in the thread
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"listener-{name}", daemon=True)
    thread.start()
    try:
        yield listener
    finally:
        while thread.is_alive() and listener._stop is None:  # not started yet
            thread.join(0.01)
        listener.stop()
        thread.join(30)
        assert not thread.is_alive(), "the listener did not stop"
        if failure:
            raise failure[0]


@contextlib.contextmanager
def listening(*accounts: TradingAccount, name: str = "in-process") -> Iterator[Listener]:
    """`listener_thread`, once it has connected these accounts' streams."""
    with listener_thread(name) as listener:
        wait_until(lambda: all(
            TradingAccount.objects.filter(pk=a.pk, stream_owner=name,
                                          connection_state="connected").exists()
            for a in accounts), timeout=10, what="the listener connected the accounts")
        yield listener
