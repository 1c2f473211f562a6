"""The sim paper broker: fills, positions, the stream, idempotency and fault injection."""

from __future__ import annotations

import pytest

from brokers.base import (
    ConnectionLost,
    OrderOutcomeUnknown,
    OrderRequest,
    PermanentBrokerError,
    TransientBrokerError,
)
from brokers.models import SimOrder
from brokers.registry import adapter_for, broker_choices
from brokers.sim import DB, SimBroker
from tests.factories import account


def held_count(sim: SimBroker) -> int:
    """How many of the book's held orders are still working."""
    return SimOrder.objects.using(DB).filter(
        book__account_id=sim.account.pk, status=SimOrder.Status.WORKING).count()

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture
def sim():
    return SimBroker(account("F1"))


def order(cid: str, side: str = "buy", qty: int = 2, symbol: str = "MNQ") -> OrderRequest:
    return OrderRequest(cid, symbol, side, qty)  # type: ignore[arg-type]


def test_registry_gives_the_sim_adapter_for_sim_accounts():
    assert isinstance(adapter_for(account("X")), SimBroker)
    assert ("sim", "Sim (paper broker)") in broker_choices()


def test_market_order_fills_at_once_and_moves_the_position(sim):
    result = sim.place_order(order("c1", "buy", 3))
    assert (result.status, result.filled_qty) == ("filled", 3)
    sim.place_order(order("c2", "sell", 5))
    assert sim.positions() == {"MNQ": -2}


def test_same_client_order_id_twice_executes_once(sim):
    first = sim.place_order(order("dup", "buy", 2))
    second = sim.place_order(order("dup", "buy", 2))
    assert first == second
    assert sim.positions() == {"MNQ": 2}
    assert SimOrder.objects.using("broker").filter(client_order_id="dup").count() == 1


def test_flat_symbols_are_omitted_from_positions(sim):
    sim.place_order(order("a", "buy", 1))
    sim.place_order(order("b", "sell", 1))
    assert sim.positions() == {}


def test_outage_makes_every_call_fail_transiently_and_no_order_exists(sim):
    sim.set_reachable(False)
    with pytest.raises(TransientBrokerError, match="unreachable"):
        sim.place_order(order("c1"))
    with pytest.raises(TransientBrokerError):
        sim.positions()
    with pytest.raises(TransientBrokerError):
        sim.poll_events()
    assert not SimOrder.objects.using("broker").exists()
    sim.set_reachable(True)
    assert sim.place_order(order("c1")).status == "filled"


def test_fail_next_n_fails_exactly_n_orders_then_recovers(sim):
    sim.inject(fail=2)
    for cid in ("a", "b"):
        with pytest.raises(TransientBrokerError, match="503"):
            sim.place_order(order(cid))
    assert sim.place_order(order("c")).status == "filled"
    assert sim.positions() == {"MNQ": 2}


def test_reject_next_n_rejects_for_good_and_records_the_order(sim):
    sim.inject(reject=1)
    with pytest.raises(PermanentBrokerError, match="rejected"):
        sim.place_order(order("a"))
    assert sim.find_order("a").status == "rejected"
    assert sim.positions() == {}
    assert sim.place_order(order("b")).status == "filled"


def test_timeout_executes_but_loses_the_answer_and_find_order_tells(sim):
    sim.inject(timeout=1)
    with pytest.raises(OrderOutcomeUnknown):
        sim.place_order(order("t1", "sell", 1))
    found = sim.find_order("t1")
    assert found is not None
    assert found.status == "filled"
    assert sim.positions() == {"MNQ": -1}
    assert sim.find_order("never-sent") is None


def test_negative_fault_counts_are_refused(sim):
    with pytest.raises(ValueError, match=">= 0"):
        sim.inject(fail=-1)


def test_invalid_quantity_is_rejected_for_good(sim):
    with pytest.raises(PermanentBrokerError):
        sim.place_order(order("z", qty=0))
    with pytest.raises(ValueError, match="> 0"):
        sim.execute_fill("MNQ", "buy", 0)


def test_stream_delivers_each_fill_once_in_order(sim):
    sim.execute_fill("ES", "buy", 1, "f1")
    sim.place_order(order("mine", "sell", 1, "ES"))
    events = sim.poll_events()
    assert next((e.fill_id, e.client_order_id) for e in events) == ("f1", None)
    assert events[1].client_order_id == "mine"
    assert sim.poll_events() == []


def test_fills_during_an_outage_are_missed_by_the_stream_but_in_positions(sim):
    sim.set_reachable(False)
    sim.execute_fill("ES", "buy", 2)
    sim.set_reachable(True)
    sim.connect()
    assert sim.poll_events() == []
    assert sim.positions() == {"ES": 2}


def test_same_fill_id_again_is_a_redelivery_not_a_second_trade(sim):
    sim.execute_fill("ES", "buy", 1, "same")
    sim.poll_events()
    sim.execute_fill("ES", "buy", 1, "same")
    assert [e.fill_id for e in sim.poll_events()] == ["same"]
    assert sim.positions() == {"ES": 1}


def test_closed_account_rejects_every_order(sim):
    book = sim._book(lock=False)
    book.closed = True
    book.save(using="broker")
    with pytest.raises(PermanentBrokerError, match="closed"):
        sim.place_order(order("x"))


def test_books_survive_a_rollback_of_the_callers_transaction(sim):
    from django.db import transaction

    with pytest.raises(RuntimeError), transaction.atomic():
        sim.place_order(order("kept", "buy", 1))
        raise RuntimeError("copier crashed mid-placement")
    assert sim.positions() == {"MNQ": 1}


def test_connection_lost_is_a_plain_event_type():
    assert ConnectionLost("x").reason == "x"


def test_a_twin_placed_while_waiting_for_the_book_is_found_not_executed_again(sim):
    """The batch reads known orders in the statement that waits for the book's lock, so
    a twin committed during the wait is not in what it read: the insert must catch it."""
    import threading
    import time

    from django.db import connection, connections, transaction

    from brokers import sql
    from core import clock

    sim.place_order(order("warm", "buy", 1))  # the book exists
    outcome: list[object] = []

    def place() -> None:
        try:
            outcome.extend(SimBroker.place_many([(sim.account, order("twin", "buy", 2))]))
        finally:
            connections.close_all()

    with transaction.atomic(using="broker"):
        book = sim._book(lock=True)  # a concurrent batch holds the book...
        placer = threading.Thread(target=place)
        placer.start()
        deadline = time.monotonic() + 10
        with connection.cursor() as cursor:  # ...until the other batch waits for it
            while time.monotonic() < deadline:
                cursor.execute("SELECT count(*) FROM pg_stat_activity"
                               " WHERE wait_event_type = 'Lock' AND datname = current_database()")
                if cursor.fetchone()[0]:
                    break
                time.sleep(0.01)
            else:
                pytest.fail("the second batch never waited for the book")
        twin = SimOrder.objects.using("broker").create(
            book=book, client_order_id="twin", fill_id="f-twin", symbol="MNQ", side="buy",
            qty=2, status=SimOrder.Status.FILLED, created_at=clock.now(),
        )
        # the twin moves the book as a real batch does
        sql.positions_move({(book.pk, "MNQ"): 2})
    placer.join(10)
    assert [(r.status, r.broker_order_id) for r in outcome] == [("filled", f"SIM-{twin.pk}")]
    assert SimOrder.objects.using("broker").filter(client_order_id="twin").count() == 1
    assert sim.positions() == {"MNQ": 3}


def test_fills_carry_the_books_sequence_and_positions_say_which_they_include(sim):
    assert sim.fills_cursor() is None  # no positions read yet
    assert sim.positions() == {}
    assert sim.fills_cursor() == 0
    sim.execute_fill("ES", "buy", 1, "f1")
    sim.place_order(order("mine", "buy", 2, "ES"))
    first, second = sim.poll_events()
    assert first.seq < second.seq
    assert sim.positions() == {"ES": 3}
    assert sim.fills_cursor() == second.seq
    sim.execute_fill("ES", "buy", 1, "f1")  # delivered again: the same fill, the same number
    assert [e.seq for e in sim.poll_events()] == [first.seq]


# --- held orders: a venue's working orders and part fills --------------------------------------
def test_a_held_order_is_acknowledged_working_and_moves_nothing(sim):
    sim.inject(hold=1)
    held = sim.place_order(order("h1", "buy", 3))
    assert (held.status, held.filled_qty, held.qty) == ("accepted", 0, 3)
    assert sim.positions() == {}
    assert sim.poll_events() == []
    assert sim.place_order(order("h2", "buy", 1)).status == "filled"  # only the next one
    assert sim.place_order(order("h1", "buy", 3)) == held  # a resend is the same order
    found = sim.find_order("h1")
    assert found is not None
    assert (found.status, found.filled_qty) == ("accepted", 0)


def test_hold_counts_add_up_and_a_negative_one_is_refused(sim):
    sim.inject(hold=1)
    sim.inject(hold=1)
    assert [sim.place_order(order(f"h{i}", "buy", 1)).status for i in range(3)] == [
        "accepted", "accepted", "filled"]
    with pytest.raises(ValueError, match=">= 0"):
        sim.inject(hold=-1)
    assert held_count(sim) == 2


def test_fill_held_in_parts_each_a_fill_of_its_own_then_the_order_settles(sim):
    from brokers.base import Fill, OrderUpdate

    sim.inject(hold=1)
    sim.place_order(order("h1", "sell", 3))
    first = sim.fill_held(1)
    assert sim.positions() == {"MNQ": -1}
    assert sim.fills_cursor() is not None
    found = sim.find_order("h1")
    assert found is not None
    assert (found.status, found.filled_qty) == ("accepted", 1)
    [fill] = sim.poll_events()
    assert isinstance(fill, Fill)
    assert (fill.fill_id, fill.client_order_id, fill.qty, fill.side) == (first, "h1", 1, "sell")
    second = sim.fill_held()  # all that is left
    assert second != first
    assert sim.positions() == {"MNQ": -3}
    events = sim.poll_events()
    assert isinstance(events[0], Fill)
    assert (events[0].fill_id, events[0].qty, events[0].client_order_id) == (second, 2, "h1")
    assert events[1:] == [OrderUpdate("h1", found.broker_order_id, "MNQ", "filled", 3, 3)]
    done = sim.find_order("h1")
    assert done is not None
    assert (done.status, done.filled_qty) == ("filled", 3)
    assert held_count(sim) == 0


def test_fill_held_refuses_what_is_not_there(sim):
    with pytest.raises(ValueError, match="no held order"):
        sim.fill_held()
    sim.inject(hold=1)
    sim.place_order(order("h1", "buy", 2))
    for bad in (0, 3, -1):
        with pytest.raises(ValueError, match="from 1 to 2"):
            sim.fill_held(bad)
    assert sim.positions() == {}
    assert sim.find_order("h1").filled_qty == 0  # type: ignore[union-attr]


def test_cancel_held_cancels_the_rest_and_the_stream_says_what_filled(sim):
    from brokers.base import OrderUpdate

    sim.inject(hold=2)
    sim.place_order(order("h1", "sell", 3))
    sim.place_order(order("h2", "buy", 1))
    sim.fill_held(1)
    cancelled = sim.cancel_held()  # the oldest: h1
    assert (cancelled.client_order_id, cancelled.status, cancelled.filled_qty) == (
        "h1", "cancelled", 1)
    events = sim.poll_events()
    assert events[-1] == OrderUpdate("h1", cancelled.broker_order_id, "MNQ", "cancelled", 1, 3)
    assert sim.positions() == {"MNQ": -1}
    with pytest.raises(ValueError, match="from 1 to 1"):
        sim.fill_held(2)  # h2 is the oldest now
    assert sim.cancel_held().client_order_id == "h2"
    with pytest.raises(ValueError, match="no held order"):
        sim.cancel_held()
    found = sim.find_order("h1")
    assert found is not None
    assert (found.status, found.filled_qty) == ("cancelled", 1)


def test_order_cancel_cancels_a_working_order_and_answers_a_settled_one(sim):
    assert sim.order_cancel("never") is None
    sim.place_order(order("f1", "buy", 1))
    filled = sim.order_cancel("f1")
    assert filled is not None
    assert (filled.status, filled.filled_qty) == ("filled", 1)
    sim.inject(hold=1)
    sim.place_order(order("h1", "buy", 2))
    cancelled = sim.order_cancel("h1")
    assert cancelled is not None
    assert (cancelled.status, cancelled.filled_qty) == ("cancelled", 0)
    assert sim.order_cancel("h1") == cancelled  # again: the same answer
    sim.set_reachable(False)
    with pytest.raises(TransientBrokerError):
        sim.order_cancel("h1")


def test_held_parts_keep_the_realized_pnl_and_the_cursor_right(sim):
    import datetime as dt
    from decimal import Decimal

    from core import clock

    sim.price_set("MNQZ6", 100)
    sim.place_order(order("open", "buy", 3, "MNQZ6"))
    sim.inject(hold=1)
    sim.place_order(order("h1", "sell", 3, "MNQZ6"))
    sim.price_set("MNQZ6", 110)
    sim.fill_held(1)
    sim.price_set("MNQZ6", 120)
    sim.fill_held(2)
    held = sim.positions()
    assert held == {}
    newest = SimOrder.objects.using("broker").order_by("-id").first()
    assert newest is not None
    assert sim.fills_cursor() == newest.pk
    # (110 - 100) * 1 + (120 - 100) * 2 points, $2 a point for MNQ
    assert sim.realized_pnl(clock.now() - dt.timedelta(days=1)) == Decimal("100.00")


def test_a_cancel_while_the_stream_was_down_is_still_said_after_the_reconnect(sim):
    from brokers.base import OrderUpdate

    sim.inject(hold=1)
    sim.place_order(order("h1", "buy", 2))
    sim.set_reachable(False)
    sim.fill_held(1)  # the venue fills and cancels while the copier cannot see it
    sim.set_reachable(True)
    sim.cancel_held()
    sim.connect()
    events = sim.poll_events()
    assert [type(e) for e in events] == [OrderUpdate]  # the fill is in the positions
    assert sim.positions() == {"MNQ": 1}


def test_cancel_all_of_many_books_cancels_each_books_working_orders_as_one_book_would(sim):
    """`orders_cancel_all_many` (a flatten of many followers): each book's count in its
    place, an unreachable book's error in its place and its orders left working, a book
    never used before made and answering 0."""
    from brokers.base import TransientBrokerError

    two, away, new = SimBroker(account("F2")), SimBroker(account("F3")), account("F4")
    for broker, held in ((sim, 2), (two, 1), (away, 1)):
        broker.inject(hold=held)
        for i in range(held):
            broker.place_order(order(f"h{broker.account.pk}-{i}", "buy", 1))
    two.fill_held()  # filled: not working any more
    away.set_reachable(False)
    counts = SimBroker.orders_cancel_all_many([sim.account, two.account, away.account, new])
    assert [counts[0], counts[1], counts[3]] == [2, 0, 0]
    assert isinstance(counts[2], TransientBrokerError)
    assert (held_count(sim), held_count(away)) == (0, 1)
    assert sim.find_order(f"h{sim.account.pk}-0").status == "cancelled"  # type: ignore[union-attr]
    assert two.positions() == {"MNQ": 1}


def test_cancel_all_cancels_the_held_orders_still_working(sim):
    assert sim.orders_cancel_all() == 0
    sim.inject(hold=2)
    sim.place_order(order("h1", "buy", 2))
    sim.place_order(order("h2", "buy", 1))
    sim.fill_held()  # h1 filled: not working any more
    assert sim.orders_cancel_all() == 1
    assert sim.find_order("h2").status == "cancelled"  # type: ignore[union-attr]
    assert held_count(sim) == 0
    assert sim.positions() == {"MNQ": 2}
