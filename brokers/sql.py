"""The sim's hand-written statements, each named, each with its own test (tests/sql).

They are inside every copy's latency (the sim is the broker the benchmark and
the scenarios copy to), and the ORM cost more than the database did. They run
on the `broker` connection, in the sim's own transactions. Model columns are
spelled from the models and rows come back as models through `ModelColumns`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from brokers.models import SimAccount, SimOrder
from core.rawsql import ModelColumns, Statement

DB = "broker"
BOOK = ModelColumns.of(SimAccount)
ORDER = ModelColumns.of(SimOrder)

# Lock the books and read the orders already sent with these client order ids, in one
# statement. A book without such an order comes once, with NULLs for the order.
# Each row also carries the prices of the symbols asked (the same on every row: one
# subquery), which the orders fill at: no second round trip on the copy's path.
BOOKS_LOCK = Statement(
    "books_lock",
    "SELECT " + BOOK.select("b") + ", " + ORDER.select("o") + ","  # noqa: S608 (column names)
    " (SELECT jsonb_object_agg(q.symbol, q.price::text) FROM brokers_simquote q"
    " WHERE q.symbol = ANY(%s)) AS quotes"
    " FROM brokers_simaccount b LEFT JOIN brokers_simorder o ON o.book_id = b.id"
    " AND o.client_order_id = ANY(%s) WHERE b.account_id = ANY(%s) ORDER BY b.id FOR UPDATE OF b",
    (*BOOK.names, *ORDER.names, "quotes"),
)


@dataclass(frozen=True, slots=True)
class BooksLocked:
    """The locked books, each with one of its orders among the ids asked (a fresh instance
    per row; None: no such order), and the prices of the symbols asked (`SimQuote`)."""

    rows: list[tuple[SimAccount, SimOrder | None]]
    quotes: dict[str, Decimal]


def books_lock(*, account_ids: Sequence[int], client_order_ids: Sequence[str],
               symbols: Sequence[str] = ()) -> BooksLocked:
    rows = BOOKS_LOCK.run([list(symbols), list(client_order_ids), list(account_ids)],
                          using=DB)
    start = len(BOOK.names)
    quotes = rows[0][-1] if rows else None
    if isinstance(quotes, str):  # psycopg hands jsonb to Django's connections as text
        quotes = json.loads(quotes)
    return BooksLocked(
        [(BOOK.build(row, using=DB),
          ORDER.build(row, start=start, using=DB) if row[start] is not None else None)
         for row in rows],
        {symbol: Decimal(price) for symbol, price in (quotes or {}).items()})


# Add to many (book, symbol) positions in one statement.
POSITIONS_MOVE = Statement(
    "positions_move",
    "INSERT INTO brokers_simposition (book_id, symbol, qty) VALUES {moves}"
    " ON CONFLICT (book_id, symbol) DO UPDATE SET qty = brokers_simposition.qty + EXCLUDED.qty",
    widths={"moves": 3},
)


def _moves_params(deltas: Mapping[tuple[int, str], int]) -> list[object]:
    return [v for (book, symbol), qty in deltas.items() for v in (book, symbol, qty)]


def positions_move(deltas: Mapping[tuple[int, str], int]) -> None:
    """Add `qty` to each (book, symbol) position, creating those missing."""
    if deltas:
        POSITIONS_MOVE.run(_moves_params(deltas), using=DB, rows={"moves": len(deltas)})


_INSERTED = ("book_id", "client_order_id", "fill_id", "symbol", "side", "qty", "status",
             "message", "created_at", "delivered", "missed", "price", "filled_qty")
_INSERT = (
    "WITH ins AS (INSERT INTO brokers_simorder (" + ", ".join(_INSERTED)  # noqa: S608
    + ") VALUES {orders} ON CONFLICT DO NOTHING RETURNING " + ORDER.select() + ")"
)
# The books that got a fill are announced to their streams (`fills_announce`) by the
# same statement: a SELECT in WITH runs only as far as the outer query reads it, so the
# outer query counts it whole.
_TOLD = (", told AS (SELECT pg_notify(%s, f.book_id::text) FROM (SELECT DISTINCT book_id"
         " FROM ins WHERE status = %s) f)")
_FROM_INS = (" SELECT " + ORDER.select() + " FROM ins"  # noqa: S608 (column names)
             " WHERE (SELECT count(1) FROM told) >= 0")
# New orders, in one statement. An order whose client order id is taken (by a
# concurrent batch) inserts nothing and is missing from the result.
ORDERS_INSERT = Statement("orders_insert", _INSERT + _TOLD + _FROM_INS, ORDER.names,
                          widths={"orders": len(_INSERTED)})
# The same, with the positions the filled ones move: still one statement.
ORDERS_INSERT_MOVING = Statement(
    "orders_insert_moving",
    _INSERT + ", moved AS (" + POSITIONS_MOVE.sql + ")" + _TOLD + _FROM_INS,
    ORDER.names, widths={"orders": len(_INSERTED), "moves": 3},
)


def orders_insert(orders: Sequence[SimOrder], deltas: Mapping[tuple[int, str], int]
                  ) -> list[SimOrder]:
    """Insert the (unsaved) orders and add `deltas` to the positions; the orders stored.

    The books that got a fill are announced to their streams (`fills_announce`), in the
    caller's transaction: on its commit, never before.
    """
    params: list[object] = [getattr(o, c) for o in orders for c in _INSERTED]
    told = [FILLS_CHANNEL, SimOrder.Status.FILLED.value]
    if deltas:
        rows = ORDERS_INSERT_MOVING.run(params + _moves_params(deltas) + told, using=DB,
                                        rows={"orders": len(orders), "moves": len(deltas)})
    else:
        rows = ORDERS_INSERT.run(params + told, using=DB, rows={"orders": len(orders)})
    return [ORDER.build(row, using=DB) for row in rows]


# The channel the sim's streams LISTEN on; a notification's payload is a book's id.
FILLS_CHANNEL = "copier_sim_book"
# Notify each book's stream that something changed (a fill, an outage, a restore).
# PostgreSQL delivers a transaction's notifications at its commit only, and drops them
# with a rollback: no stream is woken for a fill that never happened.
FILLS_ANNOUNCE = Statement(
    "fills_announce",
    "SELECT pg_notify(%s, book_id::text) FROM unnest(%s::bigint[]) AS book_id",
    ("pg_notify",),
)


def fills_announce(book_ids: Sequence[int]) -> None:
    """Wake the streams of these books when the caller's transaction commits."""
    if book_ids:
        FILLS_ANNOUNCE.run([FILLS_CHANNEL, list(book_ids)], using=DB)


# One snapshot: the positions held and the newest order they include (a book's
# orders are numbered under its lock, so ids follow commit order). A flat book
# still gives one row, with a NULL symbol, for the order number.
POSITIONS_READ = Statement(
    "positions_read",
    "SELECT p.symbol, p.qty, c.seq FROM (SELECT COALESCE(max(id), 0) AS seq"
    " FROM brokers_simorder WHERE book_id = %s) c"
    " LEFT JOIN brokers_simposition p ON p.book_id = %s AND p.qty <> 0 ORDER BY p.symbol",
    ("symbol", "qty", "seq"),
)


def positions_read(*, book_id: int) -> tuple[dict[str, int], int]:
    """The book's non-flat positions, and the id of the newest order they include."""
    rows = POSITIONS_READ.run([book_id, book_id], using=DB)
    return {symbol: qty for symbol, qty, _seq in rows if symbol is not None}, rows[0][2]
