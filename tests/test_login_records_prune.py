"""django-axes' records of logins (who logged in from where) and failed logins are
forgotten after 30 days by a periodic task on the housekeeping queue; a failed login still
inside the cool-off is kept whatever the cool-off is, so pruning never lifts a lockout."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.core.management import call_command
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from copier import tasks
from copier.periodic import BY_TASK

pytestmark = pytest.mark.django_db


def _aged(model: Any, days: float, **fields: object) -> Any:
    """A row as axes writes it (attempt_time is auto_now_add), then made `days` old."""
    row = model.objects.create(username=f"u{days}", ip_address="10.0.0.1", user_agent="ua",
                               path_info="/login/", **fields)
    model.objects.filter(pk=row.pk).update(
        attempt_time=timezone.now() - dt.timedelta(days=days))
    return row


def test_login_records_older_than_30_days_are_pruned():
    old_log, new_log = _aged(AccessLog, 31), _aged(AccessLog, 29)
    old_fail, new_fail = (_aged(AccessFailureLog, 40, locked_out=False),
                          _aged(AccessFailureLog, 1, locked_out=True))
    old_try, new_try = (_aged(AccessAttempt, 30.1, failures_since_start=5, get_data="",
                              post_data=""),
                        _aged(AccessAttempt, 0, failures_since_start=1, get_data="",
                              post_data=""))
    assert tasks.prune_login_records() == 3
    assert list(AccessLog.objects.values_list("pk", flat=True)) == [new_log.pk]
    assert list(AccessFailureLog.objects.values_list("pk", flat=True)) == [new_fail.pk]
    assert list(AccessAttempt.objects.values_list("pk", flat=True)) == [new_try.pk]
    assert not AccessLog.objects.filter(pk=old_log.pk).exists()
    assert not AccessFailureLog.objects.filter(pk=old_fail.pk).exists()
    assert not AccessAttempt.objects.filter(pk=old_try.pk).exists()
    assert tasks.prune_login_records() == 0  # a second run finds nothing


def test_a_lockout_longer_than_the_keep_is_not_lifted_by_the_prune(settings):
    settings.AXES_COOLOFF_TIME = dt.timedelta(days=60)
    locked = _aged(AccessAttempt, 45, failures_since_start=5, get_data="", post_data="")
    assert tasks.prune_login_records() == 0
    assert AccessAttempt.objects.filter(pk=locked.pk).exists()
    AccessAttempt.objects.filter(pk=locked.pk).update(
        attempt_time=timezone.now() - dt.timedelta(days=61))
    assert tasks.prune_login_records() == 1


def test_the_prune_is_a_daily_periodic_task_on_the_housekeeping_queue(settings):
    periodic = BY_TASK["copier.prune_login_records"]
    assert (periodic.label, periodic.seconds()) == (
        "copier: forget login records older than 30 days", 86400)
    assert settings.CELERY_TASK_ROUTES["copier.prune_login_records"] == {
        "queue": "housekeeping"}
    call_command("copier_setup")
    registered = PeriodicTask.objects.get(name="copier: forget login records older than 30 days")
    assert registered.task == "copier.prune_login_records"
    assert registered.interval.every == 86400
    assert registered.interval.period == "seconds"
