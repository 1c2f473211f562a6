"""Orders a venue acknowledged before they filled: counted by their fills, each once.

Real venues answer a market order before (or while) it fills, and may fill it in
parts: the copier counts what the stream reports for it, fill by fill, and at a
reconnect asks about every order still working, whose fills the positions read
then already hold (BROKERS.md; issue 10, "partial fills and late fills").
"""

from __future__ import annotations

import datetime as dt

import pytest

from brokers.base import Fill, OrderRequest
from brokers.sim import SimBroker
from copier.models import FailedExit, Order
from copier.services.stream_events import broker_events_handle
from core import clock
from core.trading import Side
from tests.factories import account, broker_position, connect, copier_position, group, leader_fill

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"),
              pytest.mark.usefixtures("eager_tasks")]


@pytest.fixture
def world():
    leader, f1 = account("L"), account("F1")
    group("g", leader, {f1: "1"})
    connect(leader, f1)
    return leader, f1


def _working(f1, client_order_id: str, qty: int, **kw) -> Order:
    return Order.objects.create(client_order_id=client_order_id, account=f1, symbol="ES",
                                side="buy", qty=qty, kind="entry",
                                status=Order.Status.ACCEPTED, created_at=clock.now(), **kw)


def _fill(fill_id: str, qty: int, client_order_id: str, seq: int | None = None) -> Fill:
    return Fill(fill_id=fill_id, symbol="ES", side=Side.BUY, qty=qty,
                time=dt.datetime.now(dt.UTC), client_order_id=client_order_id, seq=seq)


def test_a_working_order_filled_in_parts_counts_every_part_once(world):
    _, f1 = world
    order = _working(f1, "cp900-1-0", 3)
    broker_events_handle(account=f1, events=[
        _fill("x1", 1, "cp900-1-0"), _fill("x1", 1, "cp900-1-0"),  # delivered twice
    ])
    order.refresh_from_db()
    assert (order.status, order.filled_qty, copier_position(f1, "ES")) == ("accepted", 1, 1)
    broker_events_handle(account=f1, events=[_fill("x2", 2, "cp900-1-0")])
    order.refresh_from_db()
    assert (order.status, order.filled_qty, copier_position(f1, "ES")) == ("filled", 3, 3)
    broker_events_handle(account=f1, events=[_fill("x3", 1, "cp900-1-0")])  # nothing left
    assert copier_position(f1, "ES") == 3


def test_an_order_filled_while_the_stream_was_down_is_asked_about_at_the_reconnect(world):
    """Its fill is in the positions read at the reconnect: not asked about, the guard took
    it for a trade of the trader's and paused the follower; the stream's late delivery of
    the fill (numbered within the read) then moves nothing."""
    _, f1 = world
    sim = SimBroker(f1)
    sim.set_reachable(False)
    connect(f1)
    sim.set_reachable(True)
    sim.place_order(OrderRequest("cp901-1-0", "ES", Side.BUY, 2))  # working when we last saw
    order = _working(f1, "cp901-1-0", 2)
    connect(f1)
    f1.refresh_from_db()
    order.refresh_from_db()
    assert not f1.copy_paused, f1.pause_reason
    assert (order.status, order.filled_qty) == ("filled", 2)
    assert copier_position(f1, "ES") == broker_position(f1, "ES") == 2
    broker_events_handle(account=f1, events=[_fill("late", 2, "cp901-1-0",
                                                   seq=f1.reconciled_fill_seq)])
    assert copier_position(f1, "ES") == 2


def test_a_queued_exit_whose_order_fills_in_parts_is_settled_and_counted_once(world):
    leader, f1 = world
    leader_fill(leader, "ES", "buy", 2)
    SimBroker(f1).set_reachable(False)
    connect(f1)
    leader_fill(leader, "ES", "sell", 2)  # F1's exit is queued
    fe = FailedExit.objects.get(account=f1)
    SimBroker(f1).set_reachable(True)
    connect(f1)
    fe.refresh_from_db()
    order = Order.objects.filter(failed_exit=fe).latest("id")
    assert (fe.status, order.status) == ("done", "filled")
    assert copier_position(f1, "ES") == broker_position(f1, "ES") == 0
    # the stream delivering those fills afterwards counts nothing more
    broker_events_handle(account=f1, events=[
        Fill(fill_id="p1", symbol="ES", side=Side.SELL, qty=1, time=dt.datetime.now(dt.UTC),
             client_order_id=order.client_order_id)])
    assert copier_position(f1, "ES") == 0
