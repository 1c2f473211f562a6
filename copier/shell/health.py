"""The few non-admin views."""

from __future__ import annotations

import logging
from functools import cache

import redis
from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse

log = logging.getLogger(__name__)


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)


def health_problems() -> list[str]:
    """What the copier cannot work without and cannot reach now: the database, Redis.

    Without the database nothing is stored or copied; without Redis stored events
    wait for it. Either way the service is not healthy, and a health check that
    only proves the process answers HTTP would say it is.
    """
    problems = []
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        log.warning("health: the database does not answer", exc_info=True)
        problems.append("database")
    try:
        _redis().ping()
    except redis.RedisError:
        log.warning("health: Redis does not answer", exc_info=True)
        problems.append("redis")
    return problems


def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the database and Redis answer, 503 naming what does not (details in the log)."""
    problems = health_problems()
    if problems:
        return JsonResponse({"status": "down", "unreachable": problems}, status=503)
    return JsonResponse({"status": "ok"})
