"""Register the periodic tasks in django-celery-beat, idempotently.

Existing entries keep whatever an operator changed in the admin (enabled,
interval); only missing ones are created, so running it on every start is safe.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from copier.tasks import PERIODIC_TASKS


class Command(BaseCommand):
    help = "Register the copier's periodic tasks (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        created = 0
        for name, (task, seconds) in PERIODIC_TASKS.items():
            schedule, _ = IntervalSchedule.objects.get_or_create(
                every=seconds, period=IntervalSchedule.SECONDS
            )
            _, was_created = PeriodicTask.objects.get_or_create(
                name=name, defaults={"task": task, "interval": schedule}
            )
            created += was_created
        self.stdout.write(f"periodic tasks: {created} created, "
                          f"{len(PERIODIC_TASKS) - created} already there")
