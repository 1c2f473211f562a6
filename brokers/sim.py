"""The `sim` paper broker: an adapter of its own, never a dry-run flag in a real one.

Orders fill at once at market (held ones aside: see below). Every write goes
through the `broker` database connection in its own transaction, so the sim's books survive a
rollback or crash of the copier, like a real venue's. It deduplicates on
the client order id as real venues do, which is what makes a resent order
harmless. Fault injection (outage, fail / reject / time out the next N
orders) drives the copier's failure paths in tests, replay and the demo.

Held orders (`inject(hold=N)`) are how a real venue's working orders look at the sim:
acknowledged ("accepted", nothing filled, the position unmoved) and then filled in parts
(`fill_held`) or cancelled (`cancel_held`, `order_cancel`) when a test or the replay says
so. They are the exception path: the batch placement stays the few statements it is, a
held order is one more row in its insert, and everything after it is ORM on its own.

Its live stream (`SimStream`, run by `copier_listen`) is PostgreSQL LISTEN/NOTIFY.
Every write that creates a fill (`execute_fill`, the order inserts of
`brokers.sql`) and the outage switch call `pg_notify` in their own transaction;
PostgreSQL delivers a notification at commit only and drops it with a rollback,
so no stream is woken for a fill that never happened, and none is woken before
the fill is visible to its read. A stream woken for its book reads the book's
undelivered fills (`poll_events`) in a thread. Why not Redis pub/sub: the fills
live in PostgreSQL, and a publish to Redis after the commit could be lost between
the two (a crash, Redis away) or arrive before the commit is visible; with NOTIFY
the announcement is part of the transaction that made the fill. Either way a
notification is only a wake-up, never the data: a stream that missed one (its
LISTEN connection dropped) finds the fills at its next fallback poll, every
`FALLBACK_POLL_SECONDS`. One LISTEN connection per event loop (the listener
process) serves every sim stream on it, not one per account.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
import weakref
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal

import psycopg
from django.db import close_old_connections, transaction
from django.db.models import F

from brokers import sql
from brokers.base import (
    AccountData,
    BrokerAdapter,
    BrokerError,
    BrokerEvent,
    BrokerStream,
    Equity,
    Fill,
    OrderOutcomeUnknown,
    OrderRequest,
    OrderResult,
    OrderStatus,
    OrderUpdate,
    PermanentBrokerError,
    Session,
    TransientBrokerError,
    position_fill,
)
from brokers.models import SimAccount, SimOrder, SimPosition, SimQuote
from core import clock
from core.contracts import point_value
from core.rawsql import database_conninfo
from core.trading import MAX_VENUE_ID, Side, price_clean, signed

DB = sql.DB
# A trade the sim's controls make (a leader's, a manual one) is kept in its 64-bit books:
# it may be far beyond what the copier takes (rules.MAX_VENUE_QTY), as a garbled venue
# number is, but never beyond what its columns hold.
MAX_BOOK_QTY = MAX_VENUE_ID
log = logging.getLogger(__name__)

# A stream reads its book this often even without a notification (one lost with its
# LISTEN connection); a notification wakes it at once.
FALLBACK_POLL_SECONDS = 2.0
# How long `open` waits for the shared LISTEN connection before saying the sim is away.
LISTEN_READY_SECONDS = 5.0
LISTEN_RECONNECT_SECONDS = 1.0
# The LISTEN connection notices a dead server within ~10 s (libpq keepalives).
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
               "keepalives_count": 3}


_STATUS_OF: dict[str, OrderStatus] = {
    SimOrder.Status.FILLED: OrderStatus.FILLED, SimOrder.Status.COMPLETE: OrderStatus.FILLED,
    SimOrder.Status.REJECTED: OrderStatus.REJECTED, SimOrder.Status.WORKING: OrderStatus.ACCEPTED,
    SimOrder.Status.CANCELLED: OrderStatus.CANCELLED,
}


def _filled(order: SimOrder) -> int:
    if order.status == SimOrder.Status.FILLED:
        return order.qty
    return order.filled_qty or 0


def _broker_order_id(order: SimOrder) -> str:
    return f"SIM-{order.pk}"


def _result(order: SimOrder) -> OrderResult:
    return OrderResult(
        client_order_id=order.client_order_id or "",
        broker_order_id=_broker_order_id(order),
        status=_STATUS_OF[order.status],
        filled_qty=_filled(order),
        message=order.message,
        symbol=order.symbol,
        side=Side(order.side),
        qty=order.qty,
    )


def _update(order: SimOrder) -> OrderUpdate:
    """A held order's settlement as the stream says it."""
    return OrderUpdate(client_order_id=order.client_order_id, broker_order_id=f"SIM-{order.pk}",
                       symbol=order.symbol, status=_STATUS_OF[order.status],
                       filled_qty=_filled(order), qty=order.qty)


_SETTLED_HELD = (SimOrder.Status.COMPLETE, SimOrder.Status.CANCELLED)


def _quote_save(symbol: str, price: Decimal) -> None:
    SimQuote.objects.using(DB).update_or_create(
        symbol=symbol, defaults={"price": price, "updated_at": clock.now()})


def _new_fill_id() -> str:
    return f"simfill-{uuid.uuid4().hex[:16]}"


class _Twin(Exception):
    """A client order id in the batch was placed by a concurrent batch: decide again."""


class _Tape:
    """What one batch of orders does to the books, decided in memory, written in bulk."""

    def __init__(self, known: dict[tuple[int, str | None], SimOrder],
                 quotes: dict[str, Decimal]) -> None:
        self.known = known
        self.quotes = quotes
        self.books: dict[int, SimAccount] = {}  # by the copier's account id
        self.new_orders: list[SimOrder] = []
        self.deltas: dict[tuple[int, str], int] = {}
        self.changed_books: set[SimAccount] = set()

    def execute(
        self, book: SimAccount, request: OrderRequest
    ) -> Callable[[], OrderResult | BrokerError]:
        """Apply one order; returns how to read its outcome once the rows have their ids."""
        if request.qty <= 0:
            return lambda: PermanentBrokerError(f"sim: invalid quantity {request.qty}")
        if not book.reachable:
            return lambda: TransientBrokerError("sim: broker unreachable (outage)")
        key = (book.pk, request.client_order_id)
        if key in self.known:
            return lambda: _result(self.known[key])  # the stored row, once written
        if book.fail_next:
            book.fail_next -= 1
            self.changed_books.add(book)
            return lambda: TransientBrokerError("sim: HTTP 503 Service Unavailable (injected)")
        rejected = bool(book.reject_next or book.closed)
        if book.reject_next:
            book.reject_next -= 1
            self.changed_books.add(book)
        held = not rejected and book.hold_next > 0
        if held:
            book.hold_next -= 1
            self.changed_books.add(book)
        order = self._order(book, request, rejected=rejected, held=held)
        self.new_orders.append(order)
        self.known[key] = order
        if rejected:
            return lambda: PermanentBrokerError(order.message)
        if not held:  # a held order moves nothing until its parts fill
            position = (book.pk, request.symbol)
            self.deltas[position] = (self.deltas.get(position, 0)
                                     + signed(request.side, request.qty))
        if book.timeout_next:
            book.timeout_next -= 1
            self.changed_books.add(book)
            return lambda: OrderOutcomeUnknown("sim: timeout waiting for the order (injected)")
        return lambda: _result(self.known[key])

    def _order(self, book: SimAccount, request: OrderRequest, *, rejected: bool,
               held: bool) -> SimOrder:
        """The order's row: a fill, a rejection, or a held order (no fill: its parts are)."""
        if rejected:
            status, fill_id = SimOrder.Status.REJECTED, f"simrej-{uuid.uuid4().hex[:16]}"
        elif held:
            status, fill_id = SimOrder.Status.WORKING, f"simheld-{uuid.uuid4().hex[:16]}"
        else:
            status, fill_id = SimOrder.Status.FILLED, _new_fill_id()
        return SimOrder(
            book=book, client_order_id=request.client_order_id, symbol=request.symbol,
            side=request.side, qty=request.qty, created_at=clock.now(), status=status,
            fill_id=fill_id,
            message=("sim: account closed" if book.closed else "sim: order rejected (injected)")
            if rejected else "",
            delivered=rejected or held,
            price=None if rejected or held else self.quotes.get(request.symbol),
            filled_qty=0 if held else None,
        )


def _costed(book: SimAccount, since: dt.datetime | None
            ) -> tuple[dict[str, tuple[int, Decimal | None]], Decimal]:
    """The book's fills at average cost, oldest first: each symbol's net and average
    price, and what the fills since `since` (None: all of them) realised, in money."""
    return _costed_fills(
        SimOrder.objects.using(DB).filter(book=book, status=SimOrder.Status.FILLED)
        .order_by("id").only("symbol", "side", "qty", "price", "created_at", "fill_id"),
        since)


def _costed_fills(fills: Iterable[SimOrder], since: dt.datetime | None
                  ) -> tuple[dict[str, tuple[int, Decimal | None]], Decimal]:
    held: dict[str, tuple[int, Decimal | None]] = {}
    total = Decimal(0)
    for order in fills:
        net, average = held.get(order.symbol, (0, None))
        net, average, closed, points = position_fill(
            net, average, signed(order.side, order.qty), order.price)
        held[order.symbol] = (net, average)
        if not closed or (since is not None and order.created_at < since):
            continue
        value = point_value(order.symbol)
        if points is None or value is None:
            why = ("no point value is known for it" if value is None else
                   "a fill it closes or opens has no price")
            raise PermanentBrokerError(
                f"sim: the realised P&L of {order.symbol} cannot be valued: {why} "
                f"(fill {order.fill_id})")
        total += points * value
    return held, total.quantize(Decimal("0.01"))


def _equity(book: SimAccount, held: dict[str, tuple[int, Decimal | None]], realized: Decimal,
        stated: dict[str, int], quotes: dict[str, Decimal]) -> Equity:
    """One book's equity from its fills' costs, its positions and the prices."""
    open_symbols = {s for s, q in stated.items() if q} | {s for s, (n, _a) in held.items()
                                                           if n}
    open_pnl = Decimal(0)
    for symbol in sorted(open_symbols):
        net, average = held.get(symbol, (0, None))
        value, price = point_value(symbol), quotes.get(symbol)
        if net != stated.get(symbol, 0):
            why = f"it holds {stated.get(symbol, 0):+d} and its fills explain {net:+d}"
        elif average is None or price is None or value is None:
            why = ("no point value is known for it" if value is None else
                   "its cost or its last price is unknown")
        else:
            open_pnl += (price - average) * net * value
            continue
        raise PermanentBrokerError(f"sim: the open P&L of {symbol} cannot be valued: {why}")
    return Equity(balance=(book.cash + realized).quantize(Decimal("0.01")),
                  open_pnl=open_pnl.quantize(Decimal("0.01")),
                  contracts=sum(abs(q) for q in stated.values()),
                  source="sim: fills at average cost, last prices",
                  can_trade=not book.closed, why="account closed" if book.closed else "")


class SimBroker(BrokerAdapter):
    kind = "sim"
    label = "Sim (paper broker)"
    _cursor: int | None = None  # of the last positions() answer

    # --- the book -------------------------------------------------------------------------
    def _book(self, *, lock: bool) -> SimAccount:
        book, _ = SimAccount.objects.using(DB).get_or_create(account_id=self.account.pk)
        if lock:
            book = SimAccount.objects.using(DB).select_for_update().get(pk=book.pk)
        return book

    @staticmethod
    def _books_locked(account_ids: set[int], client_order_ids: list[str],
                      symbols: set[str]) -> _Tape:
        """Lock the books and read the orders already sent with these ids and the symbols'
        prices, in one statement: the tape the batch is decided on.

        The orders come from the statement's snapshot, taken before any wait for a
        lock: a twin committed meanwhile is caught by `_write`'s insert instead.
        """
        def lock() -> _Tape:
            locked = sql.books_lock(account_ids=list(account_ids),
                                    client_order_ids=client_order_ids, symbols=sorted(symbols))
            tape = _Tape({}, locked.quotes)
            for row_book, order in locked.rows:
                book = tape.books.setdefault(row_book.account_id, row_book)
                if order is not None:
                    tape.known[(book.pk, order.client_order_id)] = order
            return tape

        tape = lock()
        if len(tape.books) < len(account_ids):  # an account's first order at the sim
            SimAccount.objects.using(DB).bulk_create(
                [SimAccount(account_id=a) for a in account_ids - set(tape.books)],
                ignore_conflicts=True,
            )
            tape = lock()
        return tape

    @staticmethod
    def _write(tape: _Tape) -> None:
        """The new orders and the positions they move, in one statement.

        Raises `_Twin` when an order's client order id was taken by a concurrent
        batch after our snapshot: the caller rolls back and decides again.
        """
        orders = tape.new_orders
        if not orders:
            return
        stored = sql.orders_insert(orders, tape.deltas)
        if len(stored) < len(orders):
            raise _Twin
        for order in stored:  # the outcomes are read from the rows as stored
            tape.known[(order.book_id, order.client_order_id)] = order

    # --- BrokerAdapter ----------------------------------------------------------------------
    def connect(self) -> None:
        """A new session streams from now on; what happened before is in `positions()`."""
        with transaction.atomic(using=DB):
            book = self._book(lock=True)
            if not book.reachable:
                raise TransientBrokerError("sim: broker unreachable (outage)")
            # Fills are in the positions read next; a held order's settlement is not: it is
            # still said (the copier reads it as the look-up would answer).
            SimOrder.objects.using(DB).filter(book=book, delivered=False, missed=False,
                                              status=SimOrder.Status.FILLED).update(missed=True)

    def stream(self, session: Session | None) -> BrokerStream:
        return SimStream(self, session)

    def stream_book(self) -> SimAccount:
        """The book a stream opens on (a thread's work); raises while the sim is away."""
        close_old_connections()
        book = self._book(lock=False)
        if not book.reachable:
            raise TransientBrokerError("sim: broker unreachable (outage)")
        return book

    def stream_poll(self) -> list[BrokerEvent]:
        """One read of the stream (a thread's work): the book's undelivered fills."""
        close_old_connections()
        return self.poll_events()

    def place_order(self, request: OrderRequest) -> OrderResult:
        outcome = self.place_many([(self.account, request)])[0]
        if isinstance(outcome, BrokerError):
            raise outcome
        return outcome

    @classmethod
    def place_many(
        cls, batch: Sequence[tuple[AccountData, OrderRequest]]
    ) -> list[OrderResult | BrokerError]:
        """One transaction of the sim's for all: a 200-follower fan-out is a few statements."""
        if not batch:
            return []
        account_ids = {a.pk for a, _ in batch}
        for _attempt in range(3):
            try:
                with transaction.atomic(using=DB):
                    tape = cls._books_locked(account_ids,
                                             [r.client_order_id for _, r in batch],
                                             {r.symbol for _, r in batch})
                    plan = [tape.execute(tape.books[account.pk], request)
                            for account, request in batch]
                    cls._write(tape)
                    for book in tape.changed_books:
                        book.save(using=DB, update_fields=["fail_next", "reject_next",
                                                           "timeout_next", "hold_next"])
                return [step() for step in plan]
            except _Twin:
                continue  # the books are unchanged: decide again from what is there now
        raise TransientBrokerError("sim: client order ids placed concurrently; try again")

    def find_order(self, client_order_id: str) -> OrderResult | None:
        book = self._book(lock=False)
        if not book.reachable:
            raise TransientBrokerError("sim: broker unreachable (outage)")
        if SimAccount.objects.using(DB).filter(pk=book.pk, lookup_fail_next__gt=0).update(
            lookup_fail_next=F("lookup_fail_next") - 1
        ):
            raise TransientBrokerError("sim: HTTP 504 looking the order up (injected)")
        order = (
            SimOrder.objects.using(DB)
            .filter(book__account_id=self.account.pk, client_order_id=client_order_id).first()
        )
        return _result(order) if order else None

    def order_cancel(self, client_order_id: str) -> OrderResult | None:
        """A held order still working is cancelled (its rest), and the stream says so."""
        with transaction.atomic(using=DB):
            book = self._book(lock=True)
            if not book.reachable:
                raise TransientBrokerError("sim: broker unreachable (outage)")
            order = (SimOrder.objects.using(DB).select_for_update()
                     .filter(book=book, client_order_id=client_order_id).first())
            if order is None:
                return None
            if order.status == SimOrder.Status.WORKING:
                self._held_cancel(book, order)
        return _result(order)

    def orders_cancel_all(self) -> int:
        """The book's held orders still working are cancelled (a flatten's first step): the
        sim's only orders that rest."""
        with transaction.atomic(using=DB):
            book = self._book(lock=True)
            if not book.reachable:
                raise TransientBrokerError("sim: broker unreachable (outage)")
            held = list(SimOrder.objects.using(DB).select_for_update()
                        .filter(book=book, status=SimOrder.Status.WORKING).order_by("id"))
            for order in held:
                self._held_cancel(book, order)
        return len(held)

    @classmethod
    def orders_cancel_all_many(cls, accounts: Sequence[AccountData]) -> list[int | BrokerError]:
        """Every book's held orders still working cancelled in one transaction whatever the
        number of books (the books locked in account order, as a batch of orders locks
        them; their working orders read and cancelled in one statement each), as
        `orders_cancel_all` cancels one book's."""
        ids = sorted({a.pk for a in accounts})
        locked = (SimAccount.objects.using(DB).select_for_update().filter(account_id__in=ids)
                  .order_by("account_id"))
        with transaction.atomic(using=DB):
            books = {b.account_id: b for b in locked}
            if len(books) < len(ids):  # a book is made on its account's first use
                SimAccount.objects.using(DB).bulk_create(
                    [SimAccount(account_id=a) for a in ids if a not in books],
                    ignore_conflicts=True)
                books = {b.account_id: b for b in locked.all()}
            open_books = [b.pk for b in books.values() if b.reachable]
            working = SimOrder.objects.using(DB).filter(book_id__in=open_books,
                                                        status=SimOrder.Status.WORKING)
            counts: dict[int, int] = {}
            for book_id in working.values_list("book_id", flat=True):
                counts[book_id] = counts.get(book_id, 0) + 1
            if counts:
                working.update(status=SimOrder.Status.CANCELLED, delivered=False, missed=False,
                               message="sim: cancelled")
                sql.fills_announce(sorted(counts))
        return [counts.get(books[a.pk].pk, 0) if books[a.pk].reachable
                else TransientBrokerError("sim: broker unreachable (outage)") for a in accounts]

    def positions(self) -> dict[str, int]:
        book = self._book(lock=False)
        if not book.reachable:
            raise TransientBrokerError("sim: broker unreachable (outage)")
        # One statement, one snapshot: the positions and the newest order they include.
        # A book's orders are numbered under the book's lock, so ids follow commit order.
        held, self._cursor = sql.positions_read(book_id=book.pk)
        return held

    def fills_cursor(self) -> int | None:
        return self._cursor

    def realized_pnl(self, since: dt.datetime) -> Decimal:
        """The book's fills at average cost, symbol by symbol, from its first: what the
        fills since `since` realised, times the root's point value (no fees at the sim).

        A fill in that span that closes contracts whose price or cost is unknown (a trade
        without a price, an order before the symbol had one), or a root without a known
        point value, cannot be valued: PermanentBrokerError naming it, never a guess.
        """
        book = self._book(lock=False)
        if not book.reachable:
            raise TransientBrokerError("sim: broker unreachable (outage)")
        return _costed(book, since)[1]

    def equity_read(self) -> Equity:
        """The book's cash plus every fill's realised P&L, and the open contracts at the
        symbols' last prices (SimQuote) against their average cost. A closed book is one
        the firm stopped (`can_trade` False). A position the fills do not explain (stated
        by a test) or one without a price cannot be valued: PermanentBrokerError."""
        book = self._book(lock=False)
        if not book.reachable:
            raise TransientBrokerError("sim: broker unreachable (outage)")
        held, realized = _costed(book, None)
        stated, _cursor = sql.positions_read(book_id=book.pk)
        symbols = {s for s, q in stated.items() if q} | {s for s, (n, _a) in held.items() if n}
        quotes = dict(SimQuote.objects.using(DB).filter(symbol__in=symbols)
                      .values_list("symbol", "price"))
        return _equity(book, held, realized, stated, quotes)

    @classmethod
    def equity_read_many(cls, accounts: Sequence[AccountData]
                         ) -> list[Equity | BrokerError]:
        """Every book's equity in four statements whatever their number (the books, their
        fills, their positions, the prices), valued as `equity_read` values one."""
        books = {b.account_id: b for b in SimAccount.objects.using(DB).filter(
            account_id__in=[a.pk for a in accounts])}
        for a in accounts:  # a book is made on its account's first use, as `_book` does
            if a.pk not in books:
                books[a.pk] = SimAccount.objects.using(DB).get_or_create(account_id=a.pk)[0]
        fills: dict[int, list[SimOrder]] = {}
        for order in (SimOrder.objects.using(DB).filter(book__in=books.values(),
                                                         status=SimOrder.Status.FILLED)
                      .order_by("id").only("book_id", "symbol", "side", "qty", "price",
                                           "created_at", "fill_id")):
            fills.setdefault(order.book_id, []).append(order)
        stated_all: dict[int, dict[str, int]] = {}
        for book_id, symbol, qty in SimPosition.objects.using(DB).filter(
                book__in=books.values()).values_list("book_id", "symbol", "qty"):
            stated_all.setdefault(book_id, {})[symbol] = qty
        quotes = dict(SimQuote.objects.using(DB).values_list("symbol", "price"))
        out: list[Equity | BrokerError] = []
        for a in accounts:
            book = books[a.pk]
            try:
                if not book.reachable:
                    raise TransientBrokerError("sim: broker unreachable (outage)")
                held, realized = _costed_fills(fills.get(book.pk, []), None)
                out.append(_equity(book, held, realized, stated_all.get(book.pk, {}), quotes))
            except BrokerError as exc:
                out.append(exc)
        return out


    def poll_events(self) -> list[BrokerEvent]:
        """The book's undelivered fills, oldest first, then the held orders settled since:
        a held order's settlement comes after the fills that made it (they are in this batch
        or an earlier one), as a venue's cancel comes after the parts filled before it."""
        with transaction.atomic(using=DB):
            book = self._book(lock=True)
            if not book.reachable:
                raise TransientBrokerError("sim: stream down (outage)")
            rows = list(
                SimOrder.objects.using(DB).select_for_update(of=("self",))
                .filter(book=book, delivered=False, missed=False,
                        status__in=(SimOrder.Status.FILLED, *_SETTLED_HELD))
                .select_related("parent").order_by("id")
            )
            SimOrder.objects.using(DB).filter(pk__in=[r.pk for r in rows]).update(delivered=True)
        events: list[BrokerEvent] = [
            Fill(fill_id=r.fill_id, symbol=r.symbol, side=Side(r.side), qty=r.qty,
                 time=r.created_at, seq=r.pk, client_order_id=r.client_order_id if
                 r.parent is None else r.parent.client_order_id,
                 broker_order_id=_broker_order_id(r.parent or r))
            for r in rows if r.status == SimOrder.Status.FILLED
        ]
        return events + [_update(r) for r in rows if r.status in _SETTLED_HELD]

    # --- the sim's own controls (demo, replay, tests) ------------------------------
    def execute_fill(self, symbol: str, side: Side, qty: int, fill_id: str | None = None,
                     price: object = None) -> str:
        """A trade made at the broker outside the copier (the leader's or a manual one).

        While the broker is unreachable the trade still happens, unseen by the
        copier's stream. With a `price`, it is the symbol's price from then on (the
        copier's orders fill there); without, it fills at the last price known.
        Returns the fill id.
        """
        if isinstance(qty, bool) or not isinstance(qty, int) or not 0 < qty <= MAX_BOOK_QTY:
            raise ValueError(f"quantity must be a whole number > 0 and at most "
                             f"{MAX_BOOK_QTY}, got {qty!r}")
        priced = None if price is None else price_clean(price)
        with transaction.atomic(using=DB):
            if priced is not None:
                _quote_save(symbol, priced)
            else:
                quote = SimQuote.objects.using(DB).filter(symbol=symbol).first()
                priced = quote.price if quote is not None else None
            book = self._book(lock=True)
            if fill_id is not None:
                # The same fill id again is the stream delivering that fill twice,
                # not a second trade: the book does not move.
                again = SimOrder.objects.using(DB).filter(book=book, fill_id=fill_id)
                if again.update(delivered=False, missed=not book.reachable):
                    sql.fills_announce([book.pk])
                    return fill_id
            order = SimOrder.objects.using(DB).create(
                book=book, client_order_id=None, fill_id=fill_id or _new_fill_id(), symbol=symbol,
                side=side, qty=qty, status=SimOrder.Status.FILLED, created_at=clock.now(),
                missed=not book.reachable, price=priced,
            )
            sql.positions_move({(book.pk, symbol): signed(side, qty)})
            sql.fills_announce([book.pk])
        return order.fill_id

    @staticmethod
    def price_set(symbol: str, price: object) -> None:
        """The market moves: `symbol`'s orders fill at `price` from now on, at every book."""
        _quote_save(symbol, price_clean(price))

    def set_reachable(self, reachable: bool) -> None:
        """Switch the outage on or off; the book's stream is woken to notice it."""
        with transaction.atomic(using=DB):
            book = self._book(lock=False)
            SimAccount.objects.using(DB).filter(pk=book.pk).update(reachable=reachable)
            sql.fills_announce([book.pk])

    def inject(self, *, fail: int = 0, reject: int = 0, timeout: int = 0,
               lookup_fail: int = 0, hold: int = 0) -> None:
        """Make the next orders fail (transient), be rejected (permanent), time out or be
        held (acknowledged working, filled only by `fill_held`), or the next look-ups by
        client order id fail (transient). Counts add up."""
        counts = {"fail": fail, "reject": reject, "timeout": timeout,
                  "lookup_fail": lookup_fail, "hold": hold}
        bad = {k: v for k, v in counts.items()
               if isinstance(v, bool) or not isinstance(v, int) or v < 0}
        if bad:
            raise ValueError(f"fault counts must be whole numbers >= 0, got {bad}")
        SimAccount.objects.using(DB).filter(pk=self._book(lock=False).pk).update(
            fail_next=F("fail_next") + fail,
            reject_next=F("reject_next") + reject,
            timeout_next=F("timeout_next") + timeout,
            lookup_fail_next=F("lookup_fail_next") + lookup_fail,
            hold_next=F("hold_next") + hold,
        )

    def _held_oldest(self, book: SimAccount) -> SimOrder:
        held = (SimOrder.objects.using(DB).select_for_update()
                .filter(book=book, status=SimOrder.Status.WORKING).order_by("id").first())
        if held is None:
            raise ValueError(f"sim: {self.account} has no held order working")
        return held

    def fill_held(self, qty: int | None = None) -> str:
        """Fill the oldest held order of the book: all that is left of it, or `qty` of it.

        The part is a fill of its own (its own fill id, the symbol's price now, the held
        order's client order id on the stream) and moves the position; the order is
        complete once all of it filled. ValueError when nothing is held or `qty` is not
        from 1 to what is left. Returns the part's fill id.
        """
        with transaction.atomic(using=DB):
            book = self._book(lock=True)
            held = self._held_oldest(book)
            left = held.qty - (held.filled_qty or 0)
            part = left if qty is None else qty
            if isinstance(part, bool) or not isinstance(part, int) or not 0 < part <= left:
                raise ValueError(f"sim: fill_held qty must be a whole number from 1 to {left} "
                                 f"(what is left of order {held.client_order_id}), got {qty!r}")
            quote = SimQuote.objects.using(DB).filter(symbol=held.symbol).first()
            fill = SimOrder.objects.using(DB).create(
                book=book, client_order_id=None, parent=held, fill_id=_new_fill_id(),
                symbol=held.symbol, side=held.side, qty=part, status=SimOrder.Status.FILLED,
                created_at=clock.now(), missed=not book.reachable,
                price=quote.price if quote is not None else None,
            )
            held.filled_qty = (held.filled_qty or 0) + part
            fields = ["filled_qty"]
            if held.filled_qty == held.qty:
                held.status, held.delivered, held.missed = SimOrder.Status.COMPLETE, False, False
                fields += ["status", "delivered", "missed"]
            held.save(using=DB, update_fields=fields)
            sql.positions_move({(book.pk, held.symbol): signed(Side(held.side), part)})
            sql.fills_announce([book.pk])
        return fill.fill_id

    def cancel_held(self) -> OrderResult:
        """Cancel what is left of the oldest held order of the book (the venue's own cancel
        or expiry); the stream says so. ValueError when nothing is held."""
        with transaction.atomic(using=DB):
            book = self._book(lock=True)
            held = self._held_oldest(book)
            self._held_cancel(book, held)
        return _result(held)

    @staticmethod
    def _held_cancel(book: SimAccount, held: SimOrder) -> None:
        """(In the caller's transaction, the book locked.)"""
        held.status, held.delivered, held.missed = SimOrder.Status.CANCELLED, False, False
        held.message = "sim: cancelled"
        held.save(using=DB, update_fields=["status", "delivered", "missed", "message"])
        sql.fills_announce([book.pk])



class _Announcements:
    """The one LISTEN connection of an event loop, waking the sim streams it serves.

    Its own task keeps it: connect, LISTEN, hand each notification to the streams of
    its book; on any failure reconnect after a second, and wake every stream then,
    since what was announced meanwhile is lost (their reads find it).
    """

    def __init__(self) -> None:
        self._waiters: dict[int, set[asyncio.Event]] = {}
        self._listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def subscribe(self, book_id: int) -> asyncio.Event:
        """An event set whenever the book is announced; raises while LISTEN cannot start."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="sim-announcements")
        try:
            await asyncio.wait_for(self._listening.wait(), LISTEN_READY_SECONDS)
        except TimeoutError:
            raise TransientBrokerError(
                "sim: cannot LISTEN for fills (database unreachable)") from None
        event = asyncio.Event()
        self._waiters.setdefault(book_id, set()).add(event)
        return event

    def unsubscribe(self, book_id: int, event: asyncio.Event) -> None:
        waiters = self._waiters.get(book_id)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[book_id]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for event in waiters:
                event.set()

    def _wake(self, payload: str) -> None:
        try:
            book_id = int(payload)
        except ValueError:
            log.warning("sim: notification with a payload that is not a book id ignored")
            return
        for event in self._waiters.get(book_id, ()):
            event.set()

    async def _run(self) -> None:
        conninfo = database_conninfo(DB, application_name="copier sim stream", **_KEEPALIVES)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(conninfo,
                                                                 autocommit=True) as conn:
                    await conn.execute(f"LISTEN {sql.FILLS_CHANNEL}")
                    self._listening.set()
                    self._wake_all()
                    async for note in conn.notifies():
                        self._wake(note.payload)
            except psycopg.Error as exc:
                log.warning("sim: LISTEN connection lost (%s); reconnecting",
                            type(exc).__name__)
            finally:
                self._listening.clear()
            self._wake_all()
            await asyncio.sleep(LISTEN_RECONNECT_SECONDS)


_announcements_by_loop: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, _Announcements] = weakref.WeakKeyDictionary()


def sim_announcements() -> _Announcements:
    """The running loop's shared LISTEN connection (made on first use)."""
    loop = asyncio.get_running_loop()
    hub = _announcements_by_loop.get(loop)
    if hub is None:
        hub = _announcements_by_loop[loop] = _Announcements()
    return hub


async def sim_announcements_close() -> None:
    """Close the running loop's LISTEN connection (the listener, on its way out)."""
    hub = _announcements_by_loop.pop(asyncio.get_running_loop(), None)
    if hub is not None:
        await hub.close()


class SimStream(BrokerStream):
    """A sim account's live stream: woken by its book's notifications, read in a thread.

    A read cut short by cancellation goes on in its thread; its fills are what the
    next `receive` returns, so a cancelled wait loses nothing.
    """

    def __init__(self, adapter: SimBroker, session: Session | None) -> None:
        super().__init__(adapter, session)
        self.sim = adapter
        self._book_id: int | None = None
        self._wake: asyncio.Event | None = None
        self._pending: asyncio.Future[list[BrokerEvent]] | None = None

    async def open(self) -> None:
        book = await asyncio.to_thread(self.sim.stream_book)
        self._book_id = book.pk
        self._wake = await sim_announcements().subscribe(book.pk)

    async def receive(self) -> list[BrokerEvent]:
        if self._wake is None:
            raise TransientBrokerError("sim: the stream is not open")
        while True:
            if self._pending is None:
                self._wake.clear()  # before the read: a notification during it wakes the next
                self._pending = asyncio.ensure_future(asyncio.to_thread(self.sim.stream_poll))
            pending = self._pending
            try:
                events = await asyncio.shield(pending)
            finally:
                if pending.done():
                    self._pending = None
            if events:
                return events
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FALLBACK_POLL_SECONDS)

    async def close(self) -> None:
        if self._wake is not None and self._book_id is not None:
            hub = _announcements_by_loop.get(asyncio.get_running_loop())
            if hub is not None:
                hub.unsubscribe(self._book_id, self._wake)
        self._wake = None
