"""The venue says a working order of the copier's settled: `order_update_record`.

Driven through the sim's held orders and its stream (`broker_events_pump`), as the
listener sees them; no engine decision is asserted here (the copier's decisions on
working orders are the engine's).
"""

from __future__ import annotations

import pytest

from brokers.base import OrderUpdate
from brokers.sim import SimBroker
from copier.models import Order
from copier.services.stream_events import broker_events_pump, order_update_record
from tests.factories import account, broker_position, connect, copier_position, group, leader_fill

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"),
              pytest.mark.usefixtures("eager_tasks")]


@pytest.fixture
def held():
    """A follower whose copy of the leader's buy 3 is working at the broker, nothing filled."""
    leader, f1 = account("L"), account("F1")
    group("g", leader, {f1: "1"})
    connect(leader, f1)
    SimBroker(f1).inject(hold=1)
    leader_fill(leader, "ES", "buy", 3)
    order = Order.objects.get(account=f1)
    assert (order.status, order.filled_qty, order.qty) == ("accepted", 0, 3)
    return f1, order


def test_a_cancel_after_a_part_filled_settles_the_order_filled_with_what_filled(held):
    f1, order = held
    sim = SimBroker(f1)
    sim.fill_held(1)
    sim.cancel_held()
    broker_events_pump(account=f1)  # the part's fill, then the cancel
    order.refresh_from_db()
    assert (order.status, order.filled_qty, order.qty) == ("filled", 1, 3)
    assert order.completed_at is not None
    assert "cancelled at the broker after 1 of 3" in order.message
    assert copier_position(f1, "ES") == broker_position(f1, "ES") == 1


def test_a_cancel_with_nothing_filled_settles_the_order_cancelled(held):
    f1, order = held
    SimBroker(f1).cancel_held()
    broker_events_pump(account=f1)
    order.refresh_from_db()
    assert (order.status, order.filled_qty) == ("cancelled", 0)
    assert copier_position(f1, "ES") == broker_position(f1, "ES") == 0


def test_fills_in_parts_settle_the_order_and_the_update_changes_nothing(held):
    f1, order = held
    sim = SimBroker(f1)
    sim.fill_held(2)
    broker_events_pump(account=f1)
    order.refresh_from_db()
    assert (order.status, order.filled_qty) == ("accepted", 2)
    assert copier_position(f1, "ES") == 2
    sim.fill_held()
    broker_events_pump(account=f1)  # the last part's fill, then "filled"
    order.refresh_from_db()
    assert (order.status, order.filled_qty) == ("filled", 3)
    assert copier_position(f1, "ES") == broker_position(f1, "ES") == 3


def test_an_update_ahead_of_the_fills_leaves_the_order_working(held):
    f1, order = held
    update = OrderUpdate(order.client_order_id, order.broker_order_id, "ES", "cancelled", 2, 3)
    assert order_update_record(account=f1, update=update) is None
    order.refresh_from_db()
    assert (order.status, order.filled_qty) == ("accepted", 0)
    assert copier_position(f1, "ES") == 0  # an update never moves the position


def test_a_rejection_of_a_working_order_settles_it_rejected_and_once(held):
    f1, order = held
    update = OrderUpdate(None, order.broker_order_id, "ES", "rejected", 0, 3)  # by broker id
    settled = order_update_record(account=f1, update=update)
    assert settled is not None
    assert settled.status == "rejected"
    assert order_update_record(account=f1, update=update) is None  # settled already
    order.refresh_from_db()
    assert order.status == "rejected"


@pytest.mark.parametrize("client_order_id", ["flatten-all-0931", "cp", None])
def test_updates_of_orders_not_the_copiers_change_nothing(held, client_order_id):
    f1, order = held
    other = account("F2")
    for who, cid, broker_id in ((f1, client_order_id, "SIM-999999"),
                                (other, order.client_order_id, order.broker_order_id)):
        update = OrderUpdate(cid, broker_id, "ES", "cancelled", 0, 3)
        assert order_update_record(account=who, update=update) is None
    order.refresh_from_db()
    assert order.status == "accepted"


def test_a_filled_update_is_left_to_the_fills(held):
    f1, order = held
    update = OrderUpdate(order.client_order_id, order.broker_order_id, "ES", "filled", 3, 3)
    assert order_update_record(account=f1, update=update) is None
    order.refresh_from_db()
    assert (order.status, order.filled_qty) == ("accepted", 0)
