"""The Celery app, configured from Django settings (`CELERY_*`)."""

from __future__ import annotations

import contextlib
import gc
import os
import select
from typing import Any

from celery import Celery, signals
from psycopg import DatabaseError

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "copier.shell.settings")

app = Celery("copier")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Celery's Django fixup closes every database connection after every task
# (celery PR 9824 reverted CONN_MAX_AGE support), so each task paid for two new
# PostgreSQL connections on the copy path (CHANGELOG). With a reuse budget it
# leaves them open; the handlers below give tasks Django's request lifecycle
# instead: a broken or expired connection is dropped, a healthy one is reused.
app.conf["CELERY_DB_REUSE_MAX"] = int(os.environ.get("COPIER_DB_REUSE_MAX", "100000"))
app.autodiscover_tasks()


def heap_freeze() -> None:
    """Leave the objects a process started with out of every later garbage collection.

    A worker process holds a great many long-lived objects (Django, the apps, Celery),
    and each full collection walked them all: under load that was the copy's slowest
    tail (measured in the CHANGELOG). Frozen before the pool forks, the children also
    share those pages instead of copying them as the collector touches them (Sentry and
    Airflow freeze their Celery workers for this).
    """
    gc.freeze()


@signals.worker_before_create_process.connect
def _heap_freeze_before_fork(**_: Any) -> None:
    heap_freeze()


@signals.worker_process_init.connect
def _heap_freeze_in_child(**_: Any) -> None:
    heap_freeze()  # what the child set up after the fork, too


@signals.task_prerun.connect
def _connections_ready(**_: Any) -> None:
    """Before a task: drop a connection its server ended, keep the rest, without asking.

    Django's health check is a `SELECT 1` per connection per task: two round
    trips on every copy. A healthy idle connection has nothing to read; one
    whose server restarted or ended it has (the server's goodbye, or EOF), so
    a zero-timeout poll of its socket finds it without asking the server.
    Nothing is closed here for its age: that is done after a task (below).
    """
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        if conn.connection is None:
            continue
        try:
            readable = bool(select.select([conn.connection.fileno()], [], [], 0)[0])
        except (OSError, ValueError, DatabaseError):
            readable = True
        if readable:
            conn.close()
        else:
            # Django's own flag (not in its stubs): checked, no SELECT 1 needed
            setattr(conn, "health_check_done", True)  # noqa: B010


@signals.task_postrun.connect
def _connections_recycle(**_: Any) -> None:
    """After a task, Django's end of request: drop a connection that saw errors or outlived
    CONN_MAX_AGE, and open its successor now, so that the next copy does not pay for it.

    Fills come minutes apart: with the age checked before a task, one copy in a
    few would have waited for two new connections.
    """
    from django.db import DatabaseError as DjangoDatabaseError
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        if conn.connection is None:
            continue
        conn.close_if_unusable_or_obsolete()
        if conn.connection is None:
            with contextlib.suppress(DjangoDatabaseError):  # down: the next task connects
                conn.ensure_connection()
