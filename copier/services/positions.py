"""The copier's confirmed positions, and the row lock that serialises (account, symbol).

Lock order, everywhere: Position rows (by account, then symbol), then the
TradingAccount row, then FailedExit rows. Keeping one order is what keeps
concurrent events, retries and reconnects free of deadlocks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from django.db import connection
from django.db.models import Exists, OuterRef

from accounts.models import Position
from copier.models import Quarantine


def positions_ensure(account_ids: Iterable[int], symbol: str) -> None:
    """Create missing (account, symbol) rows in one statement, so that they can be locked."""
    Position.objects.bulk_create(
        [Position(account_id=a, symbol=symbol) for a in account_ids], ignore_conflicts=True
    )


def positions_lock(account_ids: Sequence[int], symbol: str) -> dict[int, Position]:
    """Lock (account, symbol) rows in one statement, in account order, with the facts
    evaluation needs read in the same query.

    The account row comes fresh (pause and connection flags) and `quarantined`
    tells whether an active quarantine covers the symbol.
    """
    found = _positions_locked(account_ids, symbol)
    if len(found) < len(set(account_ids)):  # first event on this symbol for some of them
        positions_ensure(account_ids, symbol)
        found = _positions_locked(account_ids, symbol)
    return found


def _positions_locked(account_ids: Sequence[int], symbol: str) -> dict[int, Position]:
    rows = (
        Position.objects.select_for_update(of=("self",))
        .select_related("account")
        .annotate(
            quarantined=Exists(
                Quarantine.objects.filter(
                    account_id=OuterRef("account_id"), symbol=OuterRef("symbol"),
                    lifted_at__isnull=True,
                )
            )
        )
        .filter(account_id__in=account_ids, symbol=symbol)
        .order_by("account_id")
    )
    return {row.account_id: row for row in rows}


def position_lock(account_id: int, symbol: str) -> Position:
    return positions_lock([account_id], symbol)[account_id]


def positions_of(account_id: int) -> dict[str, int]:
    return dict(
        Position.objects.filter(account_id=account_id).exclude(qty=0).values_list("symbol", "qty")
    )


def positions_lock_all(account_id: int, symbols: Iterable[str]) -> dict[str, Position]:
    """Lock every position row of an account (creating the given symbols), in symbol order."""
    for symbol in sorted(set(symbols)):
        positions_ensure([account_id], symbol)
    rows = (
        Position.objects.select_for_update()
        .filter(account_id=account_id)
        .order_by("symbol")
    )
    return {row.symbol: row for row in rows}


def positions_save(rows: Sequence[Position]) -> None:
    """Write qty and watermark of many locked rows in one statement.

    Django's bulk_update builds a CASE expression per row, which costs more
    than the whole fan-out's decisions; this is one UPDATE ... FROM (VALUES).
    """
    if not rows:
        return
    values = ", ".join(["(%s, %s, %s)"] * len(rows))
    params = [v for row in rows for v in (row.pk, row.qty, row.last_event_id)]
    # only placeholders are joined in; every value is a bound parameter
    sql = (
        "UPDATE accounts_position AS p SET qty = v.qty, last_event_id = v.last_event_id,"  # noqa: S608
        " updated_at = now() FROM (VALUES " + values + ") AS v(id, qty, last_event_id)"
        " WHERE p.id = v.id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)

