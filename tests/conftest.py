"""Shared fixtures: a real Celery worker on the private Redis."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import redis
from celery.contrib.testing.worker import start_worker
from celery.fixups.django import DjangoWorkerFixup
from celery.signals import task_postrun
from django.conf import settings
from django.core.management.commands.flush import Command as FlushCommand
from django.db import connections
from django.db.backends.postgresql.operations import DatabaseOperations as PostgresOperations
from django.test import override_settings
from hypothesis import settings as hypothesis_settings

from copier.shell.celery import app
from core import clock
from tests.factories import T0

FAST_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# The edit-run loop (`make test-fast`, COPIER_TEST_FAST=1) tries a quarter of the cases of
# every property without its own count; the full run (`make test`, CI) tries them all.
hypothesis_settings.register_profile("fast", max_examples=25)
if os.environ.get("COPIER_TEST_FAST"):
    hypothesis_settings.load_profile("fast")


@pytest.fixture(autouse=True)
def _fast_password_hashing(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests create users by the hundred: PBKDF2's deliberate slowness (~0.3 s a user) is
    the point in production and only waste here. Browser tests log in through a server
    process that runs the real settings, so they keep them."""
    if request.node.get_closest_marker("browser") is not None:
        yield
        return
    with override_settings(PASSWORD_HASHERS=FAST_HASHERS):  # clears the hashers' cache
        yield


@pytest.fixture(autouse=True)
def _cheap_recovery_codes(request: pytest.FixtureRequest) -> Iterator[None]:
    """The same for recovery codes: scrypt at N=2**14 is ~30 ms a code, and a test that
    enrols and checks its ten codes spends seconds in it. Tests of the cost itself
    (`real_costs`) and browser tests (a server on the real settings) keep it."""
    if request.node.get_closest_marker("browser") or request.node.get_closest_marker(
            "real_costs"):
        yield
        return
    with override_settings(COPIER_RECOVERY_SCRYPT_N=2**4):
        yield


@pytest.fixture
def eager_tasks() -> Iterator[None]:
    """Tasks run in-process: for tests about the database, never about delivery."""
    old = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = old


@pytest.fixture
def frozen_clock() -> Iterator[None]:
    """A controlled clock from T0: retries run when the test says, not on Celery's timer."""
    clock.freeze(T0)
    yield
    clock.release()


@pytest.fixture
def clean_redis() -> None:
    """Tasks left in the queue by an earlier test must not run in this one."""
    redis.Redis.from_url(settings.REDIS_URL).flushdb()


@pytest.fixture
def celery_worker(clean_redis: None) -> Iterator[object]:
    """A real worker consuming from Redis in threads of this process.

    Celery's Django fixup closes the test's database connections under it
    (celery issue 4511), so it is not installed here.
    """
    original = DjangoWorkerFixup.install
    DjangoWorkerFixup.install = lambda self: self  # type: ignore[method-assign]
    # ...but each worker thread closes its own connections after a task, so that
    # none is left open on the test database when it is dropped.
    task_postrun.connect(_close_thread_connections, weak=False)
    assert not app.conf.task_always_eager
    try:
        with start_worker(app, pool="threads", concurrency=4, perform_ping_check=False,
                          loglevel="WARNING", shutdown_timeout=30) as worker:
            yield worker
    finally:
        task_postrun.disconnect(_close_thread_connections)
        DjangoWorkerFixup.install = original  # type: ignore[method-assign]


def _close_thread_connections(**_: object) -> None:
    connections.close_all()


# A transactional test ends with a flush, which Django writes as one TRUNCATE of every
# table: ~90 ms on this database, each new relation file made and the old one dropped.
# The tests leave a few rows behind, and every foreign key here is DEFERRABLE INITIALLY
# DEFERRED (Django makes them so; none crosses into another app's tables), so deleting
# them in one round trip inside the flush's transaction empties the same tables in
# ~2 ms. A flush that resets sequences keeps the TRUNCATE (it needs RESTART IDENTITY).
_truncate_flush = PostgresOperations.sql_flush


def _delete_flush(self: PostgresOperations, style: Any, tables: Sequence[str], *,
                  reset_sequences: bool = False, allow_cascade: bool = False) -> list[str]:
    if reset_sequences or not tables:
        return _truncate_flush(self, style, tables, reset_sequences=reset_sequences,
                               allow_cascade=allow_cascade)
    # the audit log refuses a DELETE but in a superuser's prune (migration copier 0019):
    # the flush between tests is one, for this transaction only
    prune = "SELECT set_config('copier.audit_prune', 'on', true)"
    return ["; ".join([prune, *(f"DELETE FROM {self.quote_name(table)}"  # noqa: S608
                                for table in tables if table not in MIGRATIONS_OWN)])]


# What the migrations made and the post_migrate handlers would make again row for row
# after the flush (every model's content type, four permissions each): kept, so that the
# handlers that follow the flush find them and insert nothing (~100 ms a test less).
MIGRATIONS_OWN = frozenset({"django_content_type", "auth_permission"})
PostgresOperations.sql_flush = _delete_flush  # type: ignore[method-assign]

# ...and since those two tables are all the post_migrate handlers write (contenttypes',
# auth's: the only ones installed), the signal after such a flush is skipped: run
# once for each of the two aliases (default, broker) on the one database, it cost some
# 60 ms each, most of an admin test's teardown.
_flush_handle = FlushCommand.handle


def _flush_handle_quiet(self: FlushCommand, **options: Any) -> None:
    if not options.get("reset_sequences"):
        options["inhibit_post_migrate"] = True
    _flush_handle(self, **options)


FlushCommand.handle = _flush_handle_quiet  # type: ignore[method-assign]



# A transactional test ends with a flush; without `available_apps` Django re-runs every
# post_migrate handler after it (content types, one permission per model and action),
# which costs more than most of these tests. Tests of the copier's own apps get the
# cheap flush; those that need users and permissions (the admin's), or start a worker in
# this process, keep the full one.
# devkit: its commands (copier_replay, copier_demo) are looked up among the available apps
OWN_APPS = ["accounts", "brokers", "copier", "django_celery_beat", "devkit"]
NEEDS_AUTH = ("tests/admin/", "tests/test_", "tests/browser/")  # the browser logs in


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        marker = item.get_closest_marker("django_db")
        if marker is None or not marker.kwargs.get("transaction"):
            continue
        if "available_apps" in marker.kwargs or item.nodeid.startswith(NEEDS_AUTH):
            continue
        # a worker started in this process imports every installed app's modules
        if item.get_closest_marker("worker") or "celery_worker" in item.fixturenames:
            continue
        item.add_marker(pytest.mark.django_db(**marker.kwargs, available_apps=OWN_APPS),
                        append=False)
