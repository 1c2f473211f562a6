"""The periodic tasks are defined once (copier.periodic.PERIODIC): each is a registered
task, routed to the housekeeping queue and on beat's schedule, as the table says; a task
the table lacks is refused when it is defined, never left to run on the copy queue."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django_celery_beat.models import PeriodicTask

from copier import publisher, tasks
from copier.periodic import HOUSEKEEPING_QUEUE, PERIODIC
from copier.shell.celery import app
from copier.tasks import periodic

# The copy path's tasks, on the default queue (and the bench's floor).
COPY_TASKS = {publisher.PROCESS_EVENT, publisher.COPY_FOLLOWERS, publisher.RETRY_FAILED_EXIT,
              publisher.ORDERS_SETTLED, publisher.WORKING_ORDER_EXPIRE, publisher.GUARD_READ,
              "copier.noop"}


def _queue_of(name: str) -> str:
    return app.amqp.router.route({}, name)["queue"].name


def test_every_copier_task_is_a_copy_task_or_a_periodic_one_in_the_table():
    assert tasks  # imported: every task registered
    registered = {name for name in app.tasks if name.startswith("copier.")}
    periodic_names = {p.task for p in PERIODIC}
    assert registered == COPY_TASKS | periodic_names
    assert not COPY_TASKS & periodic_names


def test_every_periodic_task_routes_to_housekeeping_and_every_copy_task_to_the_default():
    # by name only, as beat or a process that never imported the tasks sends them
    for p in PERIODIC:
        assert _queue_of(p.task) == HOUSEKEEPING_QUEUE, p.task
    for name in COPY_TASKS:
        assert _queue_of(name) == "celery", name


def test_a_periodic_task_missing_from_the_table_is_refused_where_it_is_defined():
    def not_in_the_table() -> int:
        return 0

    with pytest.raises(LookupError, match=r"copier\.not_in_the_table"):
        periodic(not_in_the_table)
    assert "copier.not_in_the_table" not in app.tasks


@pytest.mark.django_db
def test_copier_setup_schedules_the_table_once_and_keeps_admin_edits():
    call_command("copier_setup")
    labels = [p.label for p in PERIODIC]
    assert PeriodicTask.objects.filter(name__in=labels).count() == len(PERIODIC)
    for p in PERIODIC:
        scheduled = PeriodicTask.objects.get(name=p.label)
        assert (scheduled.task, scheduled.interval.every) == (p.task, p.seconds())
    PeriodicTask.objects.filter(task="copier.heal_paused").update(enabled=False)
    call_command("copier_setup")
    assert PeriodicTask.objects.filter(name__in=labels).count() == len(PERIODIC)
    assert not PeriodicTask.objects.get(task="copier.heal_paused").enabled
