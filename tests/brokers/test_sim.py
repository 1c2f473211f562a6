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
from brokers.sim import SimBroker
from tests.factories import account

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
    from copier import clock

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
