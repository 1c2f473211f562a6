"""The daily loss limit: each follower's realised P&L this session, read from its broker.

The periodic `loss_limits_check` (Celery beat, every `COPIER_LOSS_CHECK_SECONDS`) reads
`BrokerAdapter.realized_pnl(session start)` for every enabled follower with a limit and
keeps it on the follower's `SessionLoss` row of the session. When the loss reaches the
limit, the row says so once (`reached_at`) and an alert is raised once per session; in
lock mode `locked_at`/`locked_until` (the next session reset) are set, and the engine
holds the follower's entries while a leader fill is read inside that span: the lock
a fill was read in is frozen with the event's followers (`copier.sql.EVENT_RUN`, read
back as `copier.domain.rules.LossLock`), so a re-run holds what the first run held. Exits are
never held.

A failed or unvaluable read is logged, written on the row and alerted (once per
session), and never takes or lifts a lock: a number the copier does not have is never
guessed. The broker is asked outside any transaction; each row is written in its own.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db import transaction

from brokers.base import BrokerError
from brokers.registry import adapter_for
from copier.alerts import alert_raise
from copier.domain import rules
from copier.models import AlertKind, AuditEntry, Follower, LossAction, SessionLoss
from copier.services.audit import audit_record
from core import clock

log = logging.getLogger(__name__)


def session_reset() -> rules.SessionReset:
    """The one session reset of this deployment (`COPIER_SESSION_RESET`)."""
    return rules.SessionReset.parse(settings.COPIER_SESSION_RESET)


@dataclass(frozen=True, slots=True)
class LossCheck:
    """What one check did, for the task's result and the tests."""

    read: int = 0
    failed: int = 0
    reached: int = 0
    locked: int = 0


def loss_limits_check() -> LossCheck:
    """Read every watched follower's realised P&L and act on its limit (module docstring).
    One follower's failure never stops the others' checks."""
    now = clock.now()
    reset = session_reset()
    start = reset.start(now)
    read = failed = reached = locked = 0
    followers = (Follower.objects.filter(enabled=True, group__enabled=True,
                                         daily_loss_limit__isnull=False)
                 .select_related("account", "group").order_by("id"))
    for follower in followers:
        try:
            realized = adapter_for(follower.account).realized_pnl(start)
        except BrokerError as exc:
            failed += 1
            _read_failed(follower, start, now, exc.message)
            continue
        except Exception as exc:  # a bug in one adapter must not stop the other checks
            log.exception("loss limit: reading %s's realised P&L failed", follower.account)
            failed += 1
            _read_failed(follower, start, now, f"{type(exc).__name__}: {exc}")
            continue
        read += 1
        outcome = _read_record(follower, start, now, reset, realized)
        reached += outcome in ("reached", "locked")
        locked += outcome == "locked"
    return LossCheck(read, failed, reached, locked)


def _row(follower: Follower, start: dt.datetime) -> SessionLoss:
    """The follower's row of the session, locked (made on the session's first read)."""
    SessionLoss.objects.get_or_create(follower=follower, session_start=start)
    return SessionLoss.objects.select_for_update().get(follower=follower, session_start=start)


def _read_record(follower: Follower, start: dt.datetime, now: dt.datetime,
                 reset: rules.SessionReset, realized: Decimal) -> str:
    """Keep the P&L read; the limit reached: alert once, and lock in lock mode. Returns
    'reached' / 'locked' when this read did either, '' otherwise."""
    limit = follower.daily_loss_limit
    assert limit is not None
    realized = realized.quantize(Decimal("0.01"))
    outcome = ""
    with transaction.atomic():
        row = _row(follower, start)
        row.realized, row.read_at, row.read_error = realized, now, ""
        over = rules.loss_limit_reached(realized, limit)
        lock = follower.daily_loss_action == LossAction.LOCK
        if over and row.reached_at is None:
            row.reached_at, row.limit, outcome = now, limit, "reached"
        if over and lock and row.locked_at is None and not row.cleared_by:
            row.locked_at, row.locked_until = now, reset.next(now)
            row.limit, outcome = limit, "locked"
        row.save()
        if outcome:
            _reached_alert(follower, row, reset)
    if outcome:
        log.warning("loss limit of %s reached: realised %s, limit %s (%s)", follower.account,
                    realized, limit, follower.daily_loss_action)
    return outcome


def _reached_alert(follower: Follower, row: SessionLoss, reset: rules.SessionReset) -> None:
    """Once per session and follower (its dedupe key), in the row's transaction."""
    assert row.realized is not None
    assert row.limit is not None
    name = follower.account.name
    if row.locked_until is not None:
        lock = rules.LossLock(row.limit, row.realized, row.locked_at or row.reached_at
                              or clock.now(), row.locked_until, reset.tz)
        text = (f"{name}: {lock.describe()}. Exits are still copied; a person may lift the "
                f"lock in the admin (Followers).")
    else:
        text = (f"{name}: daily loss limit {rules.money(row.limit)} reached: realised "
                f"{rules.money(row.realized)} this session. Alert only: entries are still "
                f"copied.")
    alert_raise(kind=AlertKind.LOSS_LIMIT, account=follower.account, group=follower.group,
                about=name, text=text,
                dedupe_key=f"loss:{follower.pk}:{row.session_start.isoformat()}:"
                           f"{'lock' if row.locked_until is not None else 'alert'}")


def _read_failed(follower: Follower, start: dt.datetime, now: dt.datetime, why: str) -> None:
    """Logged, on the row, alerted once per session; the lock is left as it is."""
    log.warning("loss limit: the realised P&L of %s could not be read: %s", follower.account,
                why)
    name = follower.account.name
    with transaction.atomic():
        row = _row(follower, start)
        row.read_error = why[:2000]
        row.save(update_fields=["read_error"])
        alert_raise(
            kind=AlertKind.LOSS_LIMIT, account=follower.account, group=follower.group,
            about=name,
            text=(f"{name}: the realised P&L could not be read from its broker ({why}); its "
                  f"daily loss limit {rules.money(follower.daily_loss_limit or Decimal(0))} "
                  f"is not checked until it can be. Nothing was locked or unlocked."),
            dedupe_key=f"loss-read:{follower.pk}:{start.isoformat()}")


def loss_locks_lift(follower_ids: Iterable[int], *, by: str) -> int:
    """A person lifts the followers' current locks now (admin). The session's loss is still
    recorded and is not locked again this session; returns how many were lifted."""
    now = clock.now()
    with transaction.atomic():
        rows = list(SessionLoss.objects.select_for_update(of=("self",)).filter(
            follower_id__in=list(follower_ids), locked_at__isnull=False, locked_until__gt=now,
        ).select_related("follower__account", "follower__group"))
        lifted = SessionLoss.objects.filter(pk__in=[r.pk for r in rows]).update(
            locked_until=now, cleared_by=by[:150])
        for row in rows:
            audit_record(by=by, action=AuditEntry.Action.LOSS_LOCK_LIFT, obj=row.follower,
                         changes={"locked_until": [_jsonable_time(row.locked_until),
                                                   now.isoformat()],
                                  "cleared_by": [row.cleared_by, by[:150]]},
                         detail=f"session of {row.session_start.isoformat()}")
    return lifted


def _jsonable_time(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def session_loss_now(follower: Follower) -> SessionLoss | None:
    """The follower's row of the current session (the admin shows it), if read yet."""
    return SessionLoss.objects.filter(
        follower=follower, session_start=session_reset().start(clock.now())).first()
