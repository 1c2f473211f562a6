"""Ingestion: a leader fill becomes a stored LeaderEvent before anything else happens.

One statement stores the event (a duplicate broker fill id changes
nothing), moves the copier's record of the leader's position to compute P0
and P1; processing is enqueued once that is committed. If the enqueue is lost (Redis
down, crash between commit and publish), `events_redispatch` finds the row.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F

from accounts.models import TradingAccount
from accounts.symbols import normalise_symbol
from copier import sql
from copier.domain import rules
from copier.models import LeaderEvent
from copier.publisher import event_about, event_publish
from copier.services.positions import positions_ensure
from core import clock
from core.trading import Side, signed

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FillInput:
    """A leader fill as it arrives, validated before anything is written."""

    fill_id: str
    symbol: str
    side: str
    qty: int

    @classmethod
    def parse(cls, *, fill_id: object, symbol: object, side: object, qty: object) -> FillInput:
        if not isinstance(fill_id, str) or not fill_id.strip() or len(fill_id) > 128:
            raise ValidationError(f"fill id must be 1-128 characters of text, got {fill_id!r}")
        if side not in (Side.BUY, Side.SELL):
            raise ValidationError(f"side must be 'buy' or 'sell', got {side!r}")
        problem = rules.venue_qty_problem(qty, signed=False)
        if problem is not None:
            raise ValidationError(problem)
        assert isinstance(qty, int)
        return cls(fill_id.strip(), normalise_symbol(symbol), str(side), qty)


def leader_fill_ingest(
    *,
    account: TradingAccount,
    fill: FillInput,
    fill_time: dt.datetime | None = None,
    source: str = LeaderEvent.Source.STREAM,
    close_only: bool = False,
    received_at: dt.datetime | None = None,
) -> LeaderEvent | None:
    """Store the fill as a leader event and enqueue its processing; None for a duplicate.

    `received_at`: when the listener took the fill off the stream (now if not given).
    """
    event = LeaderEvent(
        account=account, fill_id=fill.fill_id, symbol=fill.symbol, side=fill.side, qty=fill.qty,
        close_only=close_only, source=source, fill_time=fill_time,
        received_at=received_at or clock.now(),
    )
    stored = _store(event)
    if stored is None:  # a duplicate, or the leader's first fill on this symbol: no row yet
        positions_ensure([account.pk], fill.symbol)
        stored = _store(event)
    if stored is None:
        log.info("duplicate leader fill %s on %s ignored", fill.fill_id, account.name)
        return None
    # Inside a caller's transaction this waits for its commit; on its own it publishes now.
    about = event_about(account.name, fill.side, fill.qty, fill.symbol)
    transaction.on_commit(lambda: events_dispatch([stored.pk], about=about))
    return stored


def _store(event: LeaderEvent) -> LeaderEvent | None:
    """The event as stored (id, P0, P1, its predecessor); None when nothing was stored."""
    stored = sql.leader_fill_store(event=event, moved=signed(event.side, event.qty))
    if stored is not None:  # the caller's account: reading `stored.account` costs no query
        stored.account = event.account
    return stored


def events_dispatch(event_ids: list[int], *, about: str = "") -> None:
    """Publish processing tasks; a failed publish is logged, the periodic re-dispatch retries.

    Nothing is written here: the worker marks the event when it starts, so the
    ingesting process does not compete with it for the database on the hot path.
    `about`: what Flower shows for a single event's task (its leader, side, size, symbol).
    """
    for event_id in event_ids:
        try:
            event_publish(event_id, about=about)
        except Exception:  # the broker (Redis) is unreachable: the row is safe
            log.exception("could not enqueue leader event %s; the re-dispatch will", event_id)


def events_redispatch(*, older_than_seconds: int, limit: int = 1000) -> list[int]:
    """Events stored but not done after a while: their message was lost. Enqueue again."""
    now = clock.now()
    cutoff = now - dt.timedelta(seconds=older_than_seconds)
    # The longest-waiting first: an event that keeps failing goes to the back of the
    # line, so it can never starve newer lost events.
    ids = list(
        LeaderEvent.objects.exclude(status=LeaderEvent.Status.DONE)
        .filter(received_at__lte=cutoff)
        .order_by(F("redispatched_at").asc(nulls_first=True), "id")
        .values_list("id", flat=True)[:limit]
    )
    if ids:
        LeaderEvent.objects.filter(pk__in=ids).update(redispatched_at=now)
        log.warning("re-dispatching %d leader events not done after %ss", len(ids),
                    older_than_seconds)
        events_dispatch(ids)
    return ids
