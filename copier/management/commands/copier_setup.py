"""Register the periodic tasks in django-celery-beat, idempotently.

Existing entries keep whatever an operator changed in the admin (enabled,
interval); only missing ones are created, so running it on every start is safe.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from copier.periodic import PERIODIC


class Command(BaseCommand):
    help = "Register the copier's periodic tasks (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        created = 0
        for periodic in PERIODIC:
            schedule, _ = IntervalSchedule.objects.get_or_create(
                every=periodic.seconds(), period=IntervalSchedule.SECONDS
            )
            _, was_created = PeriodicTask.objects.get_or_create(
                name=periodic.label, defaults={"task": periodic.task, "interval": schedule}
            )
            created += was_created
        self.stdout.write(f"periodic tasks: {created} created, "
                          f"{len(PERIODIC) - created} already there")
