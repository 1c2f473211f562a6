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
from django.db import connection, transaction
from django.db.models import F

from accounts.models import TradingAccount
from accounts.symbols import normalise_symbol
from copier import clock, rules
from copier.models import LeaderEvent
from copier.publisher import event_publish
from copier.services.positions import positions_ensure

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
    if not stored:  # a duplicate, or the leader's first fill on this symbol: no row to lock yet
        positions_ensure([account.pk], fill.symbol)
        stored = _store(event)
    if not stored:
        log.info("duplicate leader fill %s on %s ignored", fill.fill_id, account.name)
        return None
    # Inside a caller's transaction this waits for its commit; on its own it publishes now.
    transaction.on_commit(lambda: events_dispatch([event.pk]))
    return event


_EVENT_COLUMNS = ["account_id", "fill_id", "symbol", "side", "qty", "close_only", "source",
                  "fill_time", "received_at"]
# The whole of ingestion in one statement, its own transaction unless the caller has one:
# it sits between the fill being received and the copy starting. The leader's position
# row is locked (so concurrent fills on a symbol are numbered one after the other: a
# waiting statement locks the row as the first one left it), the event stored with P0/P1
# from it, and the position moved. A fill id seen before inserts nothing, and so moves
# nothing: that is the duplicate check, and the unique constraint makes it race-free.
# A position the broker's stream stated ahead of this fill (`broker_qty`) is settled
# when the fill brings the position there.
_STORE_SQL = (
    "WITH pos AS (SELECT id, qty, last_event_id FROM accounts_position"  # noqa: S608 (fixed column names)
    " WHERE account_id = %s AND symbol = %s FOR UPDATE),"
    " ev AS (INSERT INTO copier_leaderevent (" + ", ".join(_EVENT_COLUMNS)
    + ", p0, p1, prev_event_id, runs, status) SELECT "
    + ", ".join(["%s"] * len(_EVENT_COLUMNS))
    + ", pos.qty, pos.qty + %s, pos.last_event_id, 0, 'received' FROM pos"
    " ON CONFLICT (account_id, fill_id) DO NOTHING RETURNING id, p0, p1, prev_event_id)"
    " UPDATE accounts_position p SET qty = ev.p1, last_event_id = ev.id, updated_at = now(),"
    " broker_qty = CASE WHEN p.broker_qty = ev.p1 THEN NULL ELSE p.broker_qty END,"
    " broker_qty_since = CASE WHEN p.broker_qty = ev.p1 THEN NULL ELSE p.broker_qty_since END"
    " FROM ev, pos WHERE p.id = pos.id RETURNING ev.id, ev.p0, ev.p1, ev.prev_event_id"
)


def _store(event: LeaderEvent) -> bool:
    """Fill in the event's id, P0, P1 from the row stored; False when nothing was stored."""
    params = [event.account_id, event.symbol, *(getattr(event, c) for c in _EVENT_COLUMNS),
              rules.signed(event.side, event.qty)]
    with connection.cursor() as cursor:
        cursor.execute(_STORE_SQL, params)
        row = cursor.fetchone()
    if row is None:
        return False
    event.pk, event.p0, event.p1, event.prev_event_id = row
    event._state.adding = False
    event._state.db = "default"
    return True


def events_dispatch(event_ids: list[int]) -> None:
    """Publish processing tasks; a failed publish is logged, the periodic re-dispatch retries.

    Nothing is written here: the worker marks the event when it starts, so the
    ingesting process does not compete with it for the database on the hot path.
    """
    for event_id in event_ids:
        try:
            event_publish(event_id)
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
