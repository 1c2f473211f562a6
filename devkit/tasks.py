"""The benchmark's task: the engine's floor, a task that does nothing but say when it ran."""

from __future__ import annotations

import functools
import time

import redis
from django.conf import settings

from copier.shell.celery import app


@app.task(name="copier.noop")
def noop(sent_at: float) -> None:
    """The engine's floor in `copier_bench`: a task that only says when it ran."""
    elapsed_ms = (time.time() - sent_at) * 1000
    with bench_redis().pipeline() as pipe:
        pipe.rpush("copier:bench:noop:ms", elapsed_ms)
        pipe.rpush("copier:bench:noop", 1)
        pipe.execute()


@functools.cache
def bench_redis() -> redis.Redis:
    """One client per process: the bench's samples are read back from the same Redis."""
    return redis.Redis.from_url(settings.REDIS_URL)
