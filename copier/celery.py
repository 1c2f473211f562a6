"""The Celery app, configured from Django settings (`CELERY_*`)."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "copier.settings")

app = Celery("copier")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Celery's Django fixup closes every database connection after every task
# (celery PR 9824 reverted CONN_MAX_AGE support), so each task paid for two new
# PostgreSQL connections, about 25 ms on the copy path. With a reuse budget it
# leaves them open; the handlers below give tasks Django's request lifecycle
# instead: a broken or expired connection is dropped, a healthy one is reused.
app.conf["CELERY_DB_REUSE_MAX"] = int(os.environ.get("COPIER_DB_REUSE_MAX", "100000"))
app.autodiscover_tasks()


@signals.task_prerun.connect
@signals.task_postrun.connect
def _close_old_connections(**_: Any) -> None:
    from django.db import close_old_connections

    close_old_connections()
