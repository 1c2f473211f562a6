"""Listener-test fixtures: listeners and a Celery worker as real processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from copier.shell.celery import app
from tests.faults.conftest import WorkerProcess
from tests.helpers import wait_until
from tests.listener.helpers import ListenerProcess


class Listeners:
    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.started: list[ListenerProcess] = []

    def start(self, name: str) -> ListenerProcess:
        listener = ListenerProcess(name, self.logdir).start()
        self.started.append(listener)
        return listener

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log()[-6000:]}" for p in self.started)


@pytest.fixture
def listeners(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Listeners]:
    found = Listeners(tmp_path)
    try:
        yield found
    finally:
        for proc in found.started:
            if proc.alive:
                proc.terminate()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(found.logs())


@pytest.fixture
def worker(clean_redis: None) -> Iterator[WorkerProcess]:
    proc = WorkerProcess(pool="threads", concurrency=4)
    proc.start()
    # Ready before the test's clock starts: a copy's time is then the listener's and the
    # copy's, not a loaded machine's worker start-up.
    wait_until(lambda: not proc.alive or app.control.ping(timeout=0.5), timeout=60,
               interval=0.2, what="the worker answering")
    assert proc.alive
    try:
        yield proc
    finally:
        proc.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
