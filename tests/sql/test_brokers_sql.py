"""Each of the sim's hand-written statements, run on its own on real rows of the sim's database.

Besides what each returns, every test checks the columns the statement really
returns against the model's fields, in name and order.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import psycopg
import pytest
from django.db import transaction

from brokers import sql
from brokers.models import SimAccount, SimOrder, SimPosition, SimQuote
from core.rawsql import Statement, database_conninfo
from tests.factories import account
from tests.sql.helpers import check_columns, model_columns

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

DB = "broker"
NOW = dt.datetime(2026, 1, 5, 14, 30, tzinfo=dt.UTC)


@pytest.fixture
def books() -> tuple[SimAccount, SimAccount]:
    return (SimAccount.objects.using(DB).create(account_id=account("F1").pk),
            SimAccount.objects.using(DB).create(account_id=account("F2").pk, fail_next=2))


def _order(book: SimAccount, cid: str | None, *, qty: int = 2, side: str = "buy",
           status: str = SimOrder.Status.FILLED) -> SimOrder:
    """An unsaved order, as the sim's tape builds it."""
    return SimOrder(book=book, client_order_id=cid, fill_id=f"fill-{cid}", symbol="MNQ",
                    side=side, qty=qty, status=status, created_at=NOW)


def _held() -> dict[tuple[int, str], int]:
    return {(p.book_id, p.symbol): p.qty for p in SimPosition.objects.using(DB).all()}


# --- books_lock -------------------------------------------------------------------------
def test_books_lock_gives_each_book_with_its_orders_among_the_ids_asked(books):
    b1, b2 = books
    sent = SimOrder.objects.using(DB).bulk_create(
        [_order(b1, "c-1"), _order(b1, "c-2"), _order(b1, "other")])

    SimQuote.objects.using(DB).create(symbol="MNQ", price=Decimal("20000.25"), updated_at=NOW)
    SimQuote.objects.using(DB).create(symbol="ES", price=Decimal("6000"), updated_at=NOW)
    locked = sql.books_lock(account_ids=[b2.account_id, b1.account_id, 999_999],
                            client_order_ids=["c-1", "c-2", "c-9"], symbols=["MNQ", "GC"])
    assert locked.quotes == {"MNQ": Decimal("20000.25")}  # the symbols asked that have one
    rows = locked.rows

    assert [(book.pk, order.client_order_id if order else None) for book, order in rows] in (
        [(b1.pk, "c-1"), (b1.pk, "c-2"), (b2.pk, None)],
        [(b1.pk, "c-2"), (b1.pk, "c-1"), (b2.pk, None)])
    book, order = rows[0]
    assert (book.account_id, book.fail_next, rows[-1][0].fail_next) == (b1.account_id, 0, 2)
    assert order is not None
    assert order.pk in {o.pk for o in sent}
    assert (order.book_id, order.status, order._state.db) == (b1.pk, "filled", DB)
    assert not book._state.adding
    check_columns(sql.BOOKS_LOCK, [["MNQ"], ["c-1"], [b1.account_id]],
                  [*model_columns(SimAccount), *model_columns(SimOrder), "quotes"], using=DB)
    assert sql.books_lock(account_ids=[b1.account_id], client_order_ids=[]).quotes == {}


# --- positions_move ---------------------------------------------------------------------
def test_positions_move_adds_to_positions_and_creates_the_missing_ones(books):
    b1, b2 = books
    sql.positions_move({(b1.pk, "MNQ"): 3})
    sql.positions_move({(b1.pk, "MNQ"): -5, (b2.pk, "MNQ"): 1, (b1.pk, "ES"): 2})
    sql.positions_move({})  # nothing to move: no statement
    assert _held() == {(b1.pk, "MNQ"): -2, (b2.pk, "MNQ"): 1, (b1.pk, "ES"): 2}
    check_columns(sql.POSITIONS_MOVE, [b2.pk, "ES", 1], [], using=DB, rows={"moves": 1})


# --- orders_insert ----------------------------------------------------------------------
def test_orders_insert_stores_the_orders_and_leaves_out_a_taken_client_order_id(books):
    b1, b2 = books
    stored = sql.orders_insert([_order(b1, "r-1", status=SimOrder.Status.REJECTED),
                                _order(b2, "r-2", status=SimOrder.Status.REJECTED)], {})
    assert [(o.book_id, o.client_order_id, o.status) for o in stored] == [
        (b1.pk, "r-1", "rejected"), (b2.pk, "r-2", "rejected")]
    assert all(o.pk and not o._state.adding and o._state.db == DB for o in stored)
    assert SimOrder.objects.using(DB).get(pk=stored[0].pk).fill_id == "fill-r-1"
    again = sql.orders_insert([_order(b1, "r-1", status=SimOrder.Status.REJECTED)], {})
    assert again == []  # a twin: nothing inserted, nothing returned
    assert _held() == {}
    check_columns(sql.ORDERS_INSERT,
                  [*(getattr(_order(b1, "r-3"), c) for c in _INSERTED), *_TOLD],
                  model_columns(SimOrder), using=DB, rows={"orders": 1})


def test_orders_insert_moving_stores_the_orders_and_moves_their_positions(books):
    b1, b2 = books
    stored = sql.orders_insert([_order(b1, "c-1", qty=2), _order(b2, "c-2", qty=1)],
                               {(b1.pk, "MNQ"): 2, (b2.pk, "MNQ"): -1})
    assert [(o.client_order_id, o.qty, o.created_at) for o in stored] == [
        ("c-1", 2, NOW), ("c-2", 1, NOW)]
    assert _held() == {(b1.pk, "MNQ"): 2, (b2.pk, "MNQ"): -1}
    check_columns(sql.ORDERS_INSERT_MOVING,
                  [*(getattr(_order(b1, "c-3"), c) for c in _INSERTED), b1.pk, "MNQ", 2,
                   *_TOLD],
                  model_columns(SimOrder), using=DB, rows={"orders": 1, "moves": 1})


_INSERTED = ["book_id", "client_order_id", "fill_id", "symbol", "side", "qty", "status",
             "message", "created_at", "delivered", "missed", "price", "filled_qty"]
_TOLD = [sql.FILLS_CHANNEL, "filled"]  # the fills' announcement, in the same statement


# --- positions_read ---------------------------------------------------------------------
def test_positions_read_gives_non_flat_positions_and_the_newest_order_they_include(books):
    b1, _b2 = books
    assert sql.positions_read(book_id=b1.pk) == ({}, 0)  # a new book: one row, no symbol
    stored = sql.orders_insert([_order(b1, "c-1", qty=2), _order(b1, "c-2", qty=2)],
                               {(b1.pk, "MNQ"): 4})
    sql.positions_move({(b1.pk, "ES"): 1})
    sql.positions_move({(b1.pk, "ES"): -1})  # flat again: left out
    assert sql.positions_read(book_id=b1.pk) == ({"MNQ": 4}, max(o.pk for o in stored))
    check_columns(sql.POSITIONS_READ, [b1.pk, b1.pk], ["symbol", "qty", "seq"], using=DB)


# --- fills_announce ---------------------------------------------------------------------
def _notes(conn: psycopg.Connection) -> list[tuple[str, str]]:
    return [(n.channel, n.payload) for n in conn.notifies(timeout=0.3)]


def test_fills_announce_notifies_the_books_at_commit_and_never_after_a_rollback(books):
    b1, b2 = books
    with psycopg.connect(database_conninfo(DB), autocommit=True) as listening:
        listening.execute(f"LISTEN {sql.FILLS_CHANNEL}")
        with pytest.raises(RuntimeError), transaction.atomic(using=DB):
            sql.fills_announce([b1.pk])
            raise RuntimeError("rolled back")
        assert _notes(listening) == []
        with transaction.atomic(using=DB):
            sql.fills_announce([b1.pk, b2.pk])
            assert _notes(listening) == []  # not before the commit
        assert sorted(_notes(listening)) == sorted(
            [(sql.FILLS_CHANNEL, str(b1.pk)), (sql.FILLS_CHANNEL, str(b2.pk))])
        sql.fills_announce([])  # nothing to announce: no statement
        # an order insert that fills announces its book; a rejected one does not
        sql.orders_insert([_order(b2, "r-1", status=SimOrder.Status.REJECTED)], {})
        assert _notes(listening) == []
        sql.orders_insert([_order(b1, "c-1")], {(b1.pk, "MNQ"): 2})
        assert _notes(listening) == [(sql.FILLS_CHANNEL, str(b1.pk))]
    check_columns(sql.FILLS_ANNOUNCE, [sql.FILLS_CHANNEL, [b1.pk]], ["pg_notify"], using=DB)


# --- all of them ------------------------------------------------------------------------
STATEMENTS = [s for s in vars(sql).values() if isinstance(s, Statement)]


def test_every_statement_of_the_sim_has_a_test_of_its_own():
    tested = {name.removeprefix("test_") for name in globals() if name.startswith("test_")}
    missing = [s.name for s in STATEMENTS
               if not any(name.startswith(s.name + "_") for name in tested)]
    assert not missing
    assert len(STATEMENTS) == 6


@pytest.mark.parametrize("statement", STATEMENTS, ids=lambda s: s.name)
def test_status_values_are_bound_never_spelled_in_the_text(statement: Statement):
    spelled = [v for v in SimOrder.Status.values if f"'{v}'" in statement.sql]
    assert not spelled
    assert "*" not in statement.sql
