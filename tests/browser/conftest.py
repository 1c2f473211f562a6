"""Browser-test fixtures: one live stack for the module, a headless Chromium per test.

The stack is what `make run` runs, on the test database: the web server
(`manage.py runserver`), a Celery worker and `copier_listen`, each a real process; a sim
fill placed in a page is taken off the sim's stream by the listener and copied by the
worker, as in production. Starting it costs seconds, so the module's tests share it; each
test is a transactional one (its rows are flushed after it), the processes outlive that.

Chromium is started per test, inside the test's database fixture: Playwright's sync API
keeps an asyncio loop running on the test's thread, under which Django refuses the ORM,
and pytest-django's flush after the test must find it stopped.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pluggy
import pytest
import redis
from django.conf import settings

from copier.shell.celery import app
from devkit.devstack import CHROMIUM
from tests.faults.conftest import WorkerProcess
from tests.helpers import wait_until
from tests.listener.helpers import ListenerProcess

if TYPE_CHECKING:  # playwright may be missing locally: the fixture skips then
    from playwright.sync_api import Page

    from tests.browser.helpers import Shots


def _browser_missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return ("the Python package playwright is not installed "
                "(pip install -e '.[dev]'; no `playwright install` is needed)")
    if not CHROMIUM.exists():
        return (f"{CHROMIUM} is missing: `sudo apt-get install chromium` (`make test` "
                "installs it when run as root: python -m devkit.devstack packages)")
    return None


@dataclass
class LiveStack:
    url: str
    logs: dict[str, Path]
    shots: Shots

    def logs_tail(self, chars: int = 4000) -> str:
        return "\n".join(f"--- {name}\n{path.read_text(errors='replace')[-chars:]}"
                         for name, path in self.logs.items() if path.exists())


@dataclass
class Console:
    """The trader's browser tab on the live stack, and what the test learnt so far."""

    page: Page
    stack: LiveStack
    known: dict[str, str] = field(default_factory=dict)
    # What Chromium refused under the Content-Security-Policy (its console says so)
    csp_violations: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.stack.url

    def shot(self, name: str) -> Path:
        return self.stack.shots(self.page, name)


@pytest.fixture(scope="module")
def live_stack(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[LiveStack]:
    missing = _browser_missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests cannot run in CI: {missing}")
        pytest.skip(missing)
    from tests.browser.helpers import ARTIFACTS, Shots, WebServer

    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    logdir = tmp_path_factory.mktemp("browser-stack")
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    worker = WorkerProcess(pool="threads", concurrency=4)
    listener = ListenerProcess("browser", logdir)
    web = WebServer(logdir)
    try:
        worker.start()
        listener.start()
        web.start()
        wait_until(lambda: not worker.alive or app.control.ping(timeout=0.5), timeout=60,
                   interval=0.2, what="the worker answering")
        assert worker.alive, "the Celery worker exited at start"
        yield LiveStack(url=web.url, shots=Shots(ARTIFACTS),
                        logs={"web": web.logfile, "listener": listener.logfile})
    finally:
        web.stop()
        if listener.alive:
            listener.terminate()
        worker.stop()


@pytest.fixture
def console(live_stack: LiveStack, request: pytest.FixtureRequest) -> Iterator[Console]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM))
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            context.set_default_timeout(10_000)
            found = Console(page=context.new_page(), stack=live_stack)
            found.page.on("console", lambda message: found.csp_violations.append(
                f"{found.page.url}: {message.text}")
                if "Content Security Policy" in message.text else None)
            yield found
            report = getattr(request.node, "rep_call", None)
            if report is not None and report.failed:  # the page it failed on, and the logs
                found.shot(f"FAILED-{request.node.name}")
                print(live_stack.logs_tail())
            # every page worked under the policy: nothing refused on the way either
            assert found.csp_violations == [], "\n".join(found.csp_violations)
        finally:
            browser.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                               ) -> Generator[None, pluggy.Result[pytest.TestReport], None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
