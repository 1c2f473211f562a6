"""The periodic tasks, each defined once: its Celery name, the name the admin shows it by,
and how often beat sends it.

The routing (settings.CELERY_TASK_ROUTES: every one on the housekeeping queue), the beat
schedule (`copier_setup`) and the tasks themselves (`copier.tasks`, whose `@periodic`
refuses a task missing here) all follow from this table, so that a periodic task cannot
be left out of one of them and run, unnoticed, on the copy queue. Standard library only:
the settings read it.
"""

from __future__ import annotations

from dataclasses import dataclass

HOUSEKEEPING_QUEUE = "housekeeping"


@dataclass(frozen=True, slots=True)
class Periodic:
    task: str  # the Celery name, "copier." + the task function's name
    label: str  # the name shown in the admin (django-celery-beat's PeriodicTask.name)
    every: int | str  # seconds, or the name of the setting that holds them

    def seconds(self) -> int:
        """The interval, a setting's read when beat's schedule is written."""
        if isinstance(self.every, int):
            return self.every
        from django.conf import settings

        return int(getattr(settings, self.every))


PERIODIC: tuple[Periodic, ...] = (
    Periodic("copier.dispatch_due", "copier: re-dispatch lost events and due exit retries", 10),
    Periodic("copier.heal_paused", "copier: heal paused accounts", 60),
    Periodic("copier.prune_failed_exits", "copier: prune failed exits older than 7 days", 3600),
    Periodic("copier.settle_positions", "copier: apply position statements no fill explained",
             5),
    Periodic("copier.prune_follower_fills",
             "copier: forget follower fill ids older than 30 days", 86400),
    Periodic("copier.prune_login_records", "copier: forget login records older than 30 days",
             86400),
    Periodic("copier.send_alerts", "copier: send due alerts", 10),
    Periodic("copier.check_disconnects", "copier: alert on long disconnects", 15),
    Periodic("copier.sweep_working_orders", "copier: cancel working orders past their time", 5),
    Periodic("copier.check_loss_limits", "copier: check daily loss limits",
             "COPIER_LOSS_CHECK_SECONDS"),
    Periodic("copier.check_guards", "copier: check account guards against their firms' lines",
             "COPIER_GUARD_CHECK_SECONDS"),
)
BY_TASK: dict[str, Periodic] = {p.task: p for p in PERIODIC}


def routes() -> dict[str, dict[str, str]]:
    """Celery's task_routes: every periodic task on the housekeeping queue."""
    return {p.task: {"queue": HOUSEKEEPING_QUEUE} for p in PERIODIC}
