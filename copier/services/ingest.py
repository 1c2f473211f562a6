"""Ingestion: a leader fill becomes a stored LeaderEvent before anything else happens.

One transaction stores the event (a duplicate broker fill id changes
nothing), moves the copier's record of the leader's position to compute P0
and P1, and enqueues processing on commit. If the enqueue is lost (Redis
down, crash between commit and publish), `events_redispatch` finds the row.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction

from accounts.models import TradingAccount
from accounts.symbols import normalise_symbol
from copier import clock, rules
from copier.models import LeaderEvent
from copier.services.positions import position_lock

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
        if side not in (rules.Side.BUY, rules.Side.SELL):
            raise ValidationError(f"side must be 'buy' or 'sell', got {side!r}")
        if isinstance(qty, bool) or not isinstance(qty, int) or qty <= 0:
            raise ValidationError(f"quantity must be a whole number > 0, got {qty!r}")
        if qty > 1_000_000:
            raise ValidationError(f"quantity {qty} is beyond any futures account: refused")
        return cls(fill_id.strip(), normalise_symbol(symbol), str(side), qty)


def leader_fill_ingest(
    *,
    account: TradingAccount,
    fill: FillInput,
    fill_time: dt.datetime | None = None,
    source: str = LeaderEvent.Source.STREAM,
    close_only: bool = False,
) -> LeaderEvent | None:
    """Store the fill as a leader event and enqueue its processing; None for a duplicate."""
    try:
        with transaction.atomic():
            position = position_lock(account.pk, fill.symbol)
            if LeaderEvent.objects.filter(account=account, fill_id=fill.fill_id).exists():
                log.info("duplicate leader fill %s on %s ignored", fill.fill_id, account.name)
                return None
            p0 = position.qty
            p1 = p0 + rules.signed(fill.side, fill.qty)
            event = LeaderEvent(
                account=account, fill_id=fill.fill_id, symbol=fill.symbol, side=fill.side,
                qty=fill.qty, p0=p0, p1=p1, close_only=close_only, source=source,
                fill_time=fill_time, received_at=clock.now(), prev_event_id=position.last_event_id,
            )
            _store(event, position_id=position.pk)
            transaction.on_commit(lambda: events_dispatch([event.pk]))
    except IntegrityError:
        # The unique (account, fill id) constraint caught a concurrent twin.
        log.info("duplicate leader fill %s on %s ignored", fill.fill_id, account.name)
        return None
    return event


_EVENT_COLUMNS = ["account_id", "fill_id", "symbol", "side", "qty", "p0", "p1", "close_only",
                  "prev_event_id", "runs", "source", "fill_time", "received_at", "status"]
# The event row and the leader's new position in one round trip: this statement sits
# between the fill being received and the copy starting.
_STORE_SQL = (
    "WITH ev AS (INSERT INTO copier_leaderevent (" + ", ".join(_EVENT_COLUMNS) + ")"  # noqa: S608
    " VALUES (" + ", ".join(["%s"] * len(_EVENT_COLUMNS)) + ") RETURNING id)"
    " UPDATE accounts_position SET qty = %s, last_event_id = (SELECT id FROM ev),"
    " updated_at = now() WHERE id = %s RETURNING last_event_id"
)


def _store(event: LeaderEvent, *, position_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(_STORE_SQL, [*(getattr(event, c) for c in _EVENT_COLUMNS), event.p1,
                                    position_id])
        event.pk = cursor.fetchone()[0]
    event._state.adding = False
    event._state.db = "default"


def events_dispatch(event_ids: list[int]) -> None:
    """Publish processing tasks; a failed publish is logged, the periodic re-dispatch retries.

    Nothing is written here: the worker marks the event when it starts, so the
    ingesting process does not compete with it for the database on the hot path.
    """
    from copier import tasks

    for event_id in event_ids:
        try:
            tasks.process_event.delay(event_id)
        except Exception:  # the broker (Redis) is unreachable: the row is safe
            log.exception("could not enqueue leader event %s; the re-dispatch will", event_id)


def events_redispatch(*, older_than_seconds: int) -> list[int]:
    """Events stored but not done after a while: their message was lost. Enqueue again."""
    cutoff = clock.now() - dt.timedelta(seconds=older_than_seconds)
    ids = list(
        LeaderEvent.objects.exclude(status=LeaderEvent.Status.DONE)
        .filter(received_at__lte=cutoff).order_by("id").values_list("id", flat=True)[:1000]
    )
    if ids:
        log.warning("re-dispatching %d leader events not done after %ss", len(ids),
                    older_than_seconds)
        events_dispatch(ids)
    return ids
