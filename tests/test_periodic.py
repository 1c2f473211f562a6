"""Periodic tasks are registered in django-celery-beat idempotently, keeping admin edits."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django_celery_beat.models import PeriodicTask

from copier.tasks import PERIODIC_TASKS


@pytest.mark.django_db
def test_copier_setup_registers_periodic_tasks_once_and_keeps_admin_edits():
    call_command("copier_setup")
    assert PeriodicTask.objects.filter(name__in=PERIODIC_TASKS).count() == len(PERIODIC_TASKS)
    PeriodicTask.objects.filter(task="copier.heal_paused").update(enabled=False)
    call_command("copier_setup")
    assert PeriodicTask.objects.filter(name__in=PERIODIC_TASKS).count() == len(PERIODIC_TASKS)
    assert not PeriodicTask.objects.get(task="copier.heal_paused").enabled
