"""Locked-out logins (django-axes' attempts): which are locked, and unlocking them, recorded.

django-axes counts failed logins per (user, address) and refuses that pair once the limit
is reached (AXES_* in copier.shell.settings). Its own `axes_reset` commands clear attempts too,
but record nothing: unlocking through here writes who unlocked which user or address in
the audit log, like any other operator action.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from axes.utils import reset
from django.conf import settings
from django.db import transaction
from django.db.models import Max, Sum
from django.utils import timezone

from copier.models import AuditEntry
from copier.services.audit import audit_record

# How long django-axes' records of logins are kept: who logged in from where (AccessLog),
# failed logins (AccessAttempt, AccessFailureLog). Each row holds a user name (now and
# then a password typed in the wrong field) and an address; a month answers "who was in
# lately", and the table does not grow with every login for ever.
LOGIN_RECORDS_KEEP = dt.timedelta(days=30)


@dataclass(frozen=True)
class Lockout:
    username: str
    ip_address: str
    failures: int
    last_attempt: Any  # an aware datetime

    @property
    def locked(self) -> bool:
        return self.failures >= settings.AXES_FAILURE_LIMIT


def lockouts_current() -> list[Lockout]:
    """Each (user, address) with failures inside the cool-off window, most recent first,
    whether it is locked yet or not."""
    since = timezone.now() - settings.AXES_COOLOFF_TIME  # axes keeps its own time
    rows = (AccessAttempt.objects.filter(attempt_time__gte=since)
            .values("username", "ip_address")
            .annotate(failures=Sum("failures_since_start"), last=Max("attempt_time"))
            .order_by("-last"))
    return [Lockout(row["username"] or "", row["ip_address"] or "", int(row["failures"] or 0),
                    row["last"]) for row in rows]


def login_unlock(*, username: str | None = None, ip: str | None = None, by: Any) -> int:
    """Clear the failed logins of a user (from every address), of an address (for every
    user), or of the one pair when both are given; recorded as `by`. How many attempt
    records were cleared (0: nothing was locked or counted; still recorded, since
    someone asked)."""
    if not (username or ip):
        raise ValueError("say whose login to unlock: a user name, an address, or both")
    with transaction.atomic():
        cleared = reset(ip=ip or None, username=username or None)
        what = " from ".join(part for part in (username and f"user {username}",
                                               ip and f"address {ip}") if part)
        audit_record(by=by, action=AuditEntry.Action.LOGIN_UNLOCK,
                     object_type="axes.accessattempt", object_repr=what[:200],
                     detail=f"cleared {cleared} failed-login record(s) of {what}")
    return cleared


def login_records_prune() -> int:
    """Forget django-axes' login records older than LOGIN_RECORDS_KEEP (the periodic
    `copier.prune_login_records`). Failed logins still inside the cool-off are kept
    whatever it is set to: pruning never lifts a lockout. How many rows were removed."""
    now = timezone.now()  # axes keeps its own time
    before = now - LOGIN_RECORDS_KEEP
    attempts_before = now - max(LOGIN_RECORDS_KEEP, settings.AXES_COOLOFF_TIME)
    removed = 0
    with transaction.atomic():
        for rows in (AccessLog.objects.filter(attempt_time__lt=before),
                     AccessFailureLog.objects.filter(attempt_time__lt=before),
                     AccessAttempt.objects.filter(attempt_time__lt=attempts_before)):
            _total, per_model = rows.delete()
            removed += per_model.get(rows.model._meta.label, 0)
    return removed
