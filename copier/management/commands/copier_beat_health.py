"""`manage.py copier_beat_health`: exit 0 only while beat is sending the periodic tasks.

The beat container's health check. django-celery-beat's scheduler writes each
task's `last_run_at` back to the database as it sends it (CELERY_BEAT_SYNC_EVERY
= 1), so a recent one on an enabled task means a beat is alive, reaches the
database and is sending the re-dispatch, retries, heal and prune. That the
process exists proves none of it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError
from django.db.models import Max
from django.utils import timezone
from django_celery_beat.models import PeriodicTask


class Command(BaseCommand):
    help = "Exit 0 if beat sent an enabled periodic task recently (the beat health check)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--max-age", type=int, default=300,
                            help="seconds since the last task sent (default 300; the most "
                                 "frequent task runs every 10 s)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            last = PeriodicTask.objects.filter(enabled=True).aggregate(
                last=Max("last_run_at"))["last"]
        except DatabaseError as exc:
            raise CommandError(f"the database does not answer: {exc}") from None
        if last is None:
            raise CommandError("beat has not sent any enabled periodic task yet")
        age = timezone.now() - last
        if age > timedelta(seconds=options["max_age"]):
            raise CommandError(f"beat sent no periodic task for {age.total_seconds():.0f} s")
        self.stdout.write(f"beat sent a periodic task {age.total_seconds():.0f} s ago")
