"""The worker's database connections around a task.

Before a task: a connection whose server ended it must be replaced before
the task's first statement (else the copy fails and waits for the periodic
re-dispatch); a healthy one must be kept and not asked `SELECT 1` (two round
trips a copy), however old it is. After a task: one past CONN_MAX_AGE is
replaced there and then, not by the next copy.
"""

from __future__ import annotations

import time

import pytest
from django.db import connection, connections

from copier.shell.celery import _connections_ready, _connections_recycle

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def _backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def test_a_healthy_connection_is_kept_without_a_round_trip():
    pid = _backend_pid()
    statements: list[str] = []
    with connection.execute_wrapper(lambda execute, sql, *a: statements.append(sql)):
        _connections_ready()
        assert connection.connection is not None
        assert connection.health_check_done  # Django will not send its SELECT 1
    assert _backend_pid() == pid
    assert statements == []


def test_a_connection_its_server_ended_is_replaced_before_the_task_uses_it():
    pid = _backend_pid()
    with connections["broker"].cursor() as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])
    deadline = time.monotonic() + 5
    while connection.connection is not None and time.monotonic() < deadline:
        _connections_ready()  # the server's goodbye arrives within moments
        time.sleep(0.01)
    assert connection.connection is None
    assert _backend_pid() != pid  # the next statement runs on a new connection


def test_an_old_connection_is_replaced_after_a_task_not_before_the_next():
    pid = _backend_pid()
    connection.close_at = time.monotonic() - 1  # past CONN_MAX_AGE
    _connections_ready()
    assert _backend_pid() == pid  # the copy about to run does not wait for a new one
    _connections_recycle()
    assert connection.connection is not None  # its successor is open already
    assert _backend_pid() != pid
