"""The copier's confirmed positions, and the row lock that serialises (account, symbol).

Lock order, everywhere: Position rows (by account, then symbol), then the
TradingAccount row, then FailedExit rows. Keeping one order is what keeps
concurrent events, retries and reconnects free of deadlocks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from django.db import connection

from accounts.models import Position, TradingAccount
from copier.models import Order


def positions_ensure(account_ids: Iterable[int], symbol: str) -> None:
    """Create missing (account, symbol) rows in one statement, so that they can be locked."""
    Position.objects.bulk_create(
        [Position(account_id=a, symbol=symbol) for a in account_ids], ignore_conflicts=True
    )


def positions_lock(account_ids: Sequence[int], symbol: str) -> dict[int, Position]:
    """Lock (account, symbol) rows in one statement, in account order, with the facts
    evaluation needs read in the same query.

    The account row comes fresh (pause and connection flags), `quarantined`
    tells whether an active quarantine covers the symbol and `unknown_orders`
    whether an order of (account, symbol) has an outcome the copier does not know.
    """
    found = _positions_locked(account_ids, symbol)
    if len(found) < len(set(account_ids)):  # first event on this symbol for some of them
        positions_ensure(account_ids, symbol)
        found = _positions_locked(account_ids, symbol)
    return found


_POSITION_FIELDS = [f.attname for f in Position._meta.concrete_fields]
# The account comes along without its (encrypted) credentials: evaluation never needs them.
_ACCOUNT_FIELDS = [f.attname for f in TradingAccount._meta.concrete_fields
                   if f.name != "credentials"]
# The hot path's one lock statement, written out: the ORM spent four times longer
# compiling its select_related + Exists + FOR UPDATE OF than PostgreSQL spent running it.
_LOCK_SQL = (
    "SELECT " + ", ".join(f"p.{c}" for c in _POSITION_FIELDS) + ", "  # noqa: S608 (column names)
    + ", ".join(f"a.{c}" for c in _ACCOUNT_FIELDS) + ", "
    "EXISTS (SELECT 1 FROM copier_quarantine q WHERE q.account_id = p.account_id"
    " AND q.symbol = p.symbol AND q.lifted_at IS NULL),"
    " EXISTS (SELECT 1 FROM copier_order o WHERE o.account_id = p.account_id"
    " AND o.symbol = p.symbol AND o.status = %s)"
    " FROM accounts_position p JOIN accounts_tradingaccount a ON a.id = p.account_id"
    " WHERE p.account_id = ANY(%s) AND p.symbol = %s ORDER BY p.account_id FOR UPDATE OF p"
)


def _positions_locked(account_ids: Sequence[int], symbol: str) -> dict[int, Position]:
    with connection.cursor() as cursor:
        cursor.execute(_LOCK_SQL, [Order.Status.UNKNOWN.value, list(account_ids), symbol])
        rows = cursor.fetchall()
    split = len(_POSITION_FIELDS)
    found = {}
    for row in rows:
        position = Position.from_db("default", _POSITION_FIELDS, row[:split])
        position.account = TradingAccount.from_db("default", _ACCOUNT_FIELDS,
                                                  row[split:split + len(_ACCOUNT_FIELDS)])
        position.quarantined = row[-2]
        position.unknown_orders = row[-1]  # an order's outcome is unknown: ask before sending
        found[position.account_id] = position
    return found


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

