"""Flower: housekeeping on its own queue, copy tasks named by what they are about, and a
worker started without -Q consuming both queues."""

from __future__ import annotations

import json
import time

import pytest
import redis
from django.conf import settings

from copier import alerts, publisher, tasks
from copier.models import Alert, FailedExit, LeaderEvent
from copier.periodic import PERIODIC
from copier.services.failed_exits import failed_exits_dispatch_due
from copier.shell.celery import app
from tests.factories import T0, account, connect, group, leader_fill

COPY_TASKS = [publisher.PROCESS_EVENT, publisher.COPY_FOLLOWERS, publisher.RETRY_FAILED_EXIT]


def _queue_of(task_name: str) -> str:
    return app.amqp.router.route({}, task_name)["queue"].name


def test_periodic_tasks_go_to_housekeeping_and_copies_to_the_default_queue():
    for periodic in PERIODIC:
        assert _queue_of(periodic.task) == "housekeeping", periodic.task
    assert _queue_of("copier.send_alerts") == "housekeeping"
    for task in COPY_TASKS:
        assert _queue_of(task) == "celery", task


def test_a_worker_without_dash_q_consumes_both_queues():
    # what `celery worker` consumes when no -Q is given: every queue in task_queues
    assert set(app.amqp.queues) == {"celery", "housekeeping"}


def _messages(queue: str) -> list[dict]:
    raw = redis.Redis.from_url(settings.REDIS_URL).lrange(queue, 0, -1)
    return [json.loads(m) for m in raw]


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_copy_tasks_say_what_they_are_about_in_flower(settings):
    """Read from the Redis queues as a worker would get them. The Redis server is shared
    by the parallel test processes, so nothing is flushed here and only this test's
    messages (its symbol) are looked at."""
    settings.COPIER_BATCH_SIZE = 1
    leader, f1, f2 = account("L"), account("F1"), account("F2")
    group("g", leader, {f1: "1", f2: "1"})
    connect(leader, f1, f2)
    leader_fill(leader, "QQQ9", "buy", 2)  # ingestion publishes the event's task, named
    event = LeaderEvent.objects.get()
    tasks.process_event(event.pk)  # copies the first batch, publishes the second
    FailedExit.objects.create(account=f1, symbol="QQQ9", side="sell", qty=2,
                              first_failed_at=T0, next_attempt_at=T0, updated_at=T0)
    (fe_id,) = failed_exits_dispatch_due()
    app.signature("copier.send_alerts").apply_async()
    mine = [(h["task"], h["argsrepr"]) for h in (m["headers"] for m in _messages("celery"))
            if "QQQ9" in h["argsrepr"]]
    assert sorted(mine) == [
        ("copier.copy_followers", f"event {event.pk}: L buy 2 QQQ9, 1 followers"),
        ("copier.process_event", f"event {event.pk}: L buy 2 QQQ9"),
        ("copier.retry_failed_exit", f"failed exit {fe_id}: F1 sell 2 QQQ9"),
    ]
    assert "copier.send_alerts" in [m["headers"]["task"] for m in _messages("housekeeping")]
    assert "copier.send_alerts" not in [m["headers"]["task"] for m in _messages("celery")]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_the_worker_runs_housekeeping_from_its_queue(celery_worker, smtp, settings):
    settings.COPIER_ALERT_EMAILS = "ops@example.com"
    alerts.alert_raise(kind="kill_switch", account=account("LONE"), text="kill switch pulled")
    app.signature("copier.send_alerts").apply_async()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not Alert.objects.filter(status="sent").exists():
        time.sleep(0.05)
    assert [m.message["Subject"] for m in smtp.messages] == [
        "[copier] operator: kill switch pulled"]
    assert Alert.objects.get().status == "sent"
