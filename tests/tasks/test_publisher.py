"""The publisher: work goes to Redis by task name, a failed exit's retry with its ETA."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import redis
from django.conf import settings

from copier import publisher
from copier.shell.celery import app

pytestmark = pytest.mark.usefixtures("clean_redis")


def _queued() -> dict[str, dict[str, object]]:
    """The messages waiting in the default queue, by task name (their headers)."""
    queue = redis.Redis.from_url(settings.REDIS_URL).lrange("celery", 0, -1)
    return {h["task"]: h for h in (json.loads(m)["headers"] for m in queue)}


def test_work_is_published_by_task_name_and_a_retry_keeps_its_eta():
    assert not app.conf.task_always_eager
    eta = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    publisher.event_publish(7)
    publisher.batch_publish(7, [1, 2])
    publisher.failed_exit_retry_publish(9, eta=eta)
    queued = _queued()
    assert set(queued) == {"copier.process_event", "copier.copy_followers",
                           "copier.retry_failed_exit"}
    assert queued["copier.process_event"]["argsrepr"] == "(7,)"
    assert queued["copier.copy_followers"]["argsrepr"] == "(7, [1, 2])"
    retry = queued["copier.retry_failed_exit"]
    assert retry["argsrepr"] == "(9,)"
    assert dt.datetime.fromisoformat(str(retry["eta"])) == eta
    assert queued["copier.process_event"]["eta"] is None


def test_the_tasks_answer_to_the_publishers_names():
    for name in (publisher.PROCESS_EVENT, publisher.COPY_FOLLOWERS, publisher.RETRY_FAILED_EXIT):
        assert name in app.tasks  # registered by CopierConfig.ready in every process
