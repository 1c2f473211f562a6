"""The live stack the browser tests drive, and what a trader's clicks need that Playwright
does not say in one call (an admin autocomplete, a page that only changes on reload).

The web server is `manage.py runserver` as the local runner starts it, in its own process
on the test database, so the pages are served exactly as `make run` serves them; the
Celery worker and `copier_listen` are the listener tests' real processes.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from django.conf import settings
from django.db import connections
from playwright.sync_api import Locator, Page, expect

from devkit.devstack import free_port
from tests.listener.helpers import test_database_url

ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts" / "browser"
# A copy goes fill -> listener -> worker -> sim -> dashboard refresh (2.5 s): a few seconds
# on a loaded two-core machine; every wait is bounded by this, none sleeps and hopes.
COPY_TIMEOUT_MS = 20_000

T = TypeVar("T")


def db_call(fn: Callable[[], T]) -> T:
    """Run ORM code from the test while Playwright's sync API is live.

    Playwright keeps an asyncio loop running on the test's thread, and Django refuses the
    ORM under a running loop (SynchronousOnlyOperation); a thread of its own has none. Its
    connections are closed afterwards so none is left open on the test database.
    """
    def run() -> T:
        try:
            return fn()
        finally:
            connections.close_all()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result(timeout=60)


class WebServer:
    """`manage.py runserver --noreload --insecure` on 127.0.0.1, on the test database."""

    def __init__(self, logdir: Path, env: dict[str, str] | None = None) -> None:
        self.extra_env = env or {}  # settings of the test's own (COPIER_REQUIRE_2FA=1)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.logfile = logdir / "web.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> WebServer:
        env = {**os.environ, "DATABASE_URL": test_database_url(),
               "REDIS_URL": settings.REDIS_URL, "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": str(settings.BASE_DIR), **self.extra_env}
        with self.logfile.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "runserver",
                 f"127.0.0.1:{self.port}", "--noreload", "--insecure"],
                env=env, cwd=settings.BASE_DIR, start_new_session=True,
                stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the web server exited:\n{self.log()[-3000:]}")
            try:
                # an http:// address of our own making
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2):  # noqa: S310
                    return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
            except urllib.error.HTTPError:  # answering (a 503 names a server down)
                return self
        raise RuntimeError(f"the web server did not answer in {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""


class Shots:
    """A screenshot of each page the tests see, numbered in the order taken, kept under
    test-artifacts/browser/ (git-ignored) for a person to look at after a CI run."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.taken = 0

    def __call__(self, page: Page, name: str) -> Path:
        self.taken += 1
        path = self.folder / f"{self.taken:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


def autocomplete_pick(page: Page, select_id: str, text: str) -> None:
    """Choose `text` in an admin autocomplete field (select2 over an empty <select>): open
    it, type, click the option the server's search returned, as a person does."""
    page.locator(f"#{select_id} + .select2 .select2-selection").click()
    search = page.locator(".select2-container--open .select2-search__field")
    search.fill(text)
    page.locator(".select2-container--open .select2-results__option",
                 has_text=re.compile(rf"^{re.escape(text)}$")).click()
    expect(page.locator(f"#select2-{select_id}-container")).to_have_text(text)


def mouse_away(page: Page) -> None:
    """The dashboard does not refresh a part while the pointer is over one of its forms (a
    click must not be lost): after clicking a button, the pointer is moved off the grid."""
    page.mouse.move(1, 1)


def dashboard(page: Page, base_url: str) -> None:
    page.goto(f"{base_url}/")
    mouse_away(page)
    expect(page.get_by_test_id("dashboard-title")).to_have_text("Followers")


def follower_testid(page: Page, account: str) -> str:
    """The card's data-testid (`follower-<pk>`) of a follower account, read off the page."""
    card = page.locator(f'article.follower-card[data-account="{account}"]')
    expect(card).to_have_count(1)
    testid = card.get_attribute("data-testid")
    assert testid is not None
    return testid


def reload_until(page: Page, locator: Locator, timeout_ms: int = COPY_TIMEOUT_MS) -> None:
    """For an admin page that does not refresh itself (a decisions list): reload it until
    `locator` is on it, for at most `timeout_ms`; then fail saying what was looked for."""
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        try:
            expect(locator.first).to_be_visible(timeout=1000)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            page.reload()
