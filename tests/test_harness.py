"""The harness itself: real PostgreSQL, real Redis, a real worker."""

from __future__ import annotations

import time

import pytest
from django.db import connection

from devkit import tasks
from tests.helpers import wait_until


@pytest.mark.django_db
def test_database_is_postgresql():
    assert connection.vendor == "postgresql"


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_tasks_run_in_a_real_worker_over_redis(celery_worker):
    tasks.bench_redis().delete("copier:bench:noop")
    tasks.noop.delay(time.time())
    wait_until(lambda: tasks.bench_redis().llen("copier:bench:noop") == 1, what="no-op task ran")
