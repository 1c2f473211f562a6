"""Quarantine of (follower, symbol): created by the rules, lifted by a person or by flat/flat."""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction

from accounts.models import TradingAccount
from copier.alerts import alert_raise
from copier.models import AlertKind, AuditEntry, LeaderEvent, Quarantine
from copier.services.audit import audit_record
from core import clock

log = logging.getLogger(__name__)


def quarantine_create(
    *, account: TradingAccount, symbol: str, reason: str, detail: str = "",
    event: LeaderEvent | None = None,
) -> Quarantine:
    """Quarantine (account, symbol); an already active quarantine is kept as it is."""
    existing = Quarantine.objects.filter(
        account=account, symbol=symbol, lifted_at__isnull=True
    ).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            q = Quarantine.objects.create(
                account=account, symbol=symbol, reason=reason, detail=detail, event=event,
                created_at=clock.now(),
            )
            _alert(q)
    except IntegrityError:  # a concurrent one won: one active quarantine per symbol
        return Quarantine.objects.get(account=account, symbol=symbol, lifted_at__isnull=True)
    log.warning("quarantined %s %s: %s %s", account.name, symbol, reason, detail)
    return q


def _alert(q: Quarantine) -> None:
    """In the quarantine's transaction: the alert exists exactly when the quarantine does.
    A quarantine for a rejection is the broker refusing an order for good: that is what
    a person is told."""
    name, symbol = q.account.name, q.symbol
    if q.reason == Quarantine.Reason.REJECTED:
        kind = AlertKind.REJECTION
        text = (f"{name} {symbol}: an order was rejected for good by the broker "
                f"({q.detail or 'no reason given'}); {symbol} is quarantined on {name} until "
                f"a person lifts it")
    else:
        kind = AlertKind.QUARANTINE
        text = (f"{name} {symbol} quarantined: {q.reason.replace('_', ' ')}"
                f"{': ' + q.detail if q.detail else ''}; nothing is copied to {name} on "
                f"{symbol} until a person lifts it or both sides are flat")
    alert_raise(kind=kind, account=q.account, about=f"{name} {symbol}", text=text)


def quarantine_lift(*, account: TradingAccount, symbol: str, by: str) -> int:
    """Lift the active quarantine of (account, symbol); returns how many were lifted (0 or 1).
    Recorded in the audit log, a person's lift and the rules' own (flat on both sides)."""
    with transaction.atomic():
        active = list(Quarantine.objects.select_for_update().filter(
            account=account, symbol=symbol, lifted_at__isnull=True))
        now = clock.now()
        lifted = Quarantine.objects.filter(pk__in=[q.pk for q in active]).update(
            lifted_at=now, lifted_by=by[:150])
        for q in active:
            q.account = account
            audit_record(by=by, action=AuditEntry.Action.QUARANTINE_LIFT, obj=q,
                         changes={"lifted_at": [None, now.isoformat()],
                                  "lifted_by": ["", by[:150]]})
    if lifted:
        log.info("quarantine lifted %s %s by %s", account.name, symbol, by)
    return lifted
