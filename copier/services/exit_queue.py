"""Putting an exit in the Failed Exit Queue: the row, and the retry published for its time.

Below both the placement of orders (an order the broker ended with part of an exit
unfilled leaves the rest here) and the queue's attempts (`copier.services.failed_exits`),
so that neither has to import the other.
"""

from __future__ import annotations

import datetime as dt
import logging
import random

from django.conf import settings
from django.db import transaction

from accounts.models import TradingAccount
from copier import publisher
from copier.domain import rules
from copier.models import FailedExit, LeaderEvent, OperatorAction
from core import clock

log = logging.getLogger(__name__)


def delay(attempts: int) -> dt.timedelta:
    """The backoff after `attempts` failed attempts, with production's jitter (none in replay)."""
    base = rules.backoff_seconds(attempts)
    jitter = 0.0 if clock.is_controlled() else random.uniform(0, settings.COPIER_RETRY_JITTER)
    return dt.timedelta(seconds=base * (1 + jitter))


def failed_exit_queue(
    *, account: TradingAccount, symbol: str, leg: rules.Leg, event: LeaderEvent | None,
    attempts: int, error: str, rejected: bool = False, action: OperatorAction | None = None,
) -> FailedExit:
    """Save an exit that could not go out; a rejected one is kept but never retried.
    `action`: a flatten's exit (its retry closes to flat, see `_expected`)."""
    now = clock.now()
    fe = FailedExit.objects.create(
        account=account, symbol=symbol, side=leg.side, qty=leg.qty, event=event, action=action,
        first_failed_at=now, attempts=attempts, next_attempt_at=now + delay(attempts),
        status=FailedExit.Status.REJECTED if rejected else FailedExit.Status.PENDING,
        last_error=error[:2000], updated_at=now,
    )
    if not rejected:
        log.warning("exit queued: %s %s %s %s (%s)", account.name, leg.side, leg.qty, symbol, error)
        transaction.on_commit(lambda: failed_exit_schedule(fe))
    return fe


def failed_exit_schedule(fe: FailedExit) -> None:
    """Publish the retry for its due time. Under a controlled clock the replay runs it."""
    if clock.is_controlled():
        return
    try:
        publisher.failed_exit_retry_publish(fe.pk, eta=fe.next_attempt_at, about=_about(fe))
    except Exception:
        log.exception("could not schedule retry of failed exit %s; the periodic task will", fe.pk)


def _about(fe: FailedExit) -> str:
    """Flower's name for the retry; the callers have the account loaded (no query)."""
    return publisher.event_about(fe.account.name, fe.side, fe.qty, fe.symbol)
