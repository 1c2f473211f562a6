"""Fault-test fixtures: Celery workers as real processes, killed and restarted at will."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.db import connection


def _test_database_url() -> str:
    s = connection.settings_dict
    user = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return f"postgres://{user}@{s['HOST']}:{s['PORT']}/{s['NAME']}"


class WorkerProcess:
    """`celery worker` in its own process group, on the test database and the test Redis."""

    def __init__(self, pool: str = "prefork", concurrency: int = 2) -> None:
        self.pool, self.concurrency = pool, concurrency
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0
        self.killed = 0
        self.env = {
            **os.environ, "DATABASE_URL": _test_database_url(), "REDIS_URL": settings.REDIS_URL,
            # unacked tasks of a killed worker come back after this long, not after hours
            "CELERY_VISIBILITY_TIMEOUT": "4", "COPIER_BATCH_SIZE": "2", "LOG_LEVEL": "WARNING",
        }

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "copier", "worker", "-l", "WARNING",
             "--pool", self.pool, "--concurrency", str(self.concurrency),
             "--without-gossip", "--without-mingle", "--without-heartbeat",
             "-n", f"fault{self.started}@%h"],
            env=self.env, cwd=settings.BASE_DIR, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.started += 1

    def kill(self) -> None:
        """SIGKILL the whole worker, pool children included: no cleanup, no acks."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.killed += 1

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture
def worker_process(clean_redis: None) -> Iterator[WorkerProcess]:
    worker = WorkerProcess()
    try:
        yield worker
    finally:
        worker.stop()
