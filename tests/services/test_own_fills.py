"""Which follower fills are the copier's own (issue 18, item 3;
docs/rules.md#whose-fill-it-is): only those of an order the copier recorded, by its exact
client order id on that account or the broker's id for it. Every other fill is the trader's,
whatever its tag.

The copier used to tell its fills by a prefix (`cp`, `fx`, `fl`): a trader's script
tagging its orders `flatten-all-0931` had its fill dropped, the copier kept +2 while the
venue was flat, and the leader's next exit made the follower short 2.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator

import pytest
from django.db import close_old_connections, transaction

from accounts.models import ConnectionState, FollowerFill, Position, TradingAccount
from brokers.base import BrokerEvent, Fill, OrderRequest
from brokers.models import SimOrder
from brokers.registry import adapter_class, adapter_for, adapters_forget
from brokers.sessions import session_load, session_save
from brokers.sim import SimBroker
from copier import tasks
from copier.models import FailedExit, Order
from copier.services import engine
from copier.services.stream_events import broker_events_handle, broker_events_pump
from core.trading import Side
from devkit.localvenue import LocalVenue, venue_start
from tests.factories import account, broker_position, connect, copier_position, group, leader_fill
from tests.services.test_money_safety import crash_mid_copy, retry_due, sent_at_broker, stored

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"),
              pytest.mark.usefixtures("eager_tasks")]


@pytest.fixture
def world():
    leader, f1, f2 = account("L"), account("F1"), account("F2")
    group("g", leader, {f1: "1", f2: "1"})
    connect(leader, f1, f2)
    return leader, f1, f2


def _script(acct: TradingAccount, client_order_id: str, side: str, qty: int,
            symbol: str = "ES") -> None:
    """A trader's own script sends an order through the broker's API with its own tag."""
    SimBroker(acct).place_order(OrderRequest(client_order_id, symbol, Side(side), qty))
    broker_events_pump(account=acct)


@pytest.mark.parametrize("tag", ["flatten-all-0931", "cp123-45-0", "fx7-1", "fl3-2-1"])
def test_a_trader_fill_tagged_like_the_copier_moves_the_position(world, tag):
    leader, f1, _ = world
    leader_fill(leader, "ES", "buy", 2)
    assert copier_position(f1, "ES") == broker_position(f1, "ES") == 2
    _script(f1, tag, "sell", 2)  # the trader flattens by script
    assert copier_position(f1, "ES") == broker_position(f1, "ES") == 0
    leader_fill(leader, "ES", "sell", 2)  # the leader's exit: nothing left to close
    assert copier_position(f1, "ES") == broker_position(f1, "ES") == 0


def test_a_trader_fill_carrying_another_accounts_order_id_is_the_traders(world):
    """Our order id is ours on the account it was sent to: F2's script reusing the id of
    F1's copied order is a trade of F2's trader."""
    leader, f1, f2 = world
    leader_fill(leader, "ES", "buy", 2)
    ours = Order.objects.get(account=f1).client_order_id
    _script(f2, ours, "buy", 1)
    assert copier_position(f2, "ES") == broker_position(f2, "ES") == 3
    assert copier_position(f1, "ES") == broker_position(f1, "ES") == 2


def test_a_fill_of_our_order_by_the_brokers_order_id_alone_is_ours(world):
    """A venue whose fill comes without our tag (its order look-up failed) names the order
    by its own id: that is the copier's order, counted at placement, not again."""
    leader, f1, _ = world
    leader_fill(leader, "ES", "buy", 2)
    order = Order.objects.get(account=f1)
    assert order.broker_order_id
    fill = Fill("again-1", "ES", Side.BUY, 2, order.created_at, None,
                broker_order_id=order.broker_order_id)
    assert broker_events_handle(account=f1, events=[fill]) == 0
    assert copier_position(f1, "ES") == broker_position(f1, "ES") == 2


def test_a_crashed_runs_fill_counted_as_the_traders_is_not_counted_again_by_the_re_run(world):
    """The run sold 3 and crashed before its rows committed; the stream then delivered
    the fill, which no recorded order owns: the trader's, so +4 -> +1. The re-run
    decides on +1 (diverged: reduce by 1), looks its client id up first and finds the
    sell 3 filled: that order is now recorded, and the 3 it filled are in the position
    already (counting them again made the follower short 2)."""
    leader, f1, f2 = world
    leader_fill(leader, "ES", "buy", 4)
    exit_event = stored(leader, "x", "sell", 3)
    crash_mid_copy(exit_event)
    assert broker_position(f1, "ES") == 1
    broker_events_pump(account=f1)  # the run's fill, no order row for it
    assert copier_position(f1, "ES") == 1
    tasks.process_event(exit_event.pk)
    assert copier_position(f1, "ES") == broker_position(f1, "ES") == 1
    assert copier_position(f2, "ES") == broker_position(f2, "ES") == 1
    order = Order.objects.get(client_order_id__startswith=f"cp{exit_event.pk}-{f1.pk}-")
    assert (order.status, order.side, order.qty, order.filled_qty) == ("filled", "sell", 3, 3)
    assert sent_at_broker(f1) == [("buy", 4), ("sell", 3)]
    broker_events_pump(account=f1)  # nothing more comes
    assert copier_position(f1, "ES") == 1


def test_a_crashed_runs_order_whose_fill_made_the_follower_whole_is_recorded_by_the_re_run(world):
    """The run bought 2 and crashed before its rows committed; the stream delivered the
    fill as the trader's (no row owned it): +2, in line with the leader. The re-run
    finds nothing left to send, yet the order is the copier's: it is looked up by this
    event's client order id and recorded, its fill claimed, nothing sent again (seen in
    the venue fault test under load: an executed order the copier never recorded)."""
    leader, f1, f2 = world
    entry = stored(leader, "e", "buy", 2)
    crash_mid_copy(entry)
    assert broker_position(f1, "ES") == 2
    broker_events_pump(account=f1)
    assert copier_position(f1, "ES") == 2
    tasks.process_event(entry.pk)
    for follower in (f1, f2):
        assert copier_position(follower, "ES") == broker_position(follower, "ES") == 2
        order = Order.objects.get(client_order_id=f"cp{entry.pk}-{follower.pk}-0")
        assert (order.status, order.side, order.qty, order.filled_qty) == ("filled", "buy", 2, 2)
        assert sent_at_broker(follower) == [("buy", 2)]
    assert not FollowerFill.objects.filter(account=f1).exclude(client_order_id="").exists()
    broker_events_pump(account=f1)  # nothing more comes
    assert copier_position(f1, "ES") == 2


def test_a_crashed_runs_order_the_re_run_cannot_ask_about_stays_unknown_then_counts_once(world):
    """As above, but the re-run's look-up fails: the order is on record `unknown` (nothing
    is sent on the symbol meanwhile). The leader's exit then looks it up first, finds it
    filled, claims its fill, and sells the 2 the follower holds: flat, nothing doubled."""
    leader, f1, _ = world
    entry = stored(leader, "e", "buy", 2)
    crash_mid_copy(entry)
    broker_events_pump(account=f1)
    SimBroker(f1).inject(lookup_fail=1)
    tasks.process_event(entry.pk)
    order = Order.objects.get(client_order_id=f"cp{entry.pk}-{f1.pk}-0")
    assert (order.status, order.side, order.qty) == ("unknown", "buy", 2)
    assert copier_position(f1, "ES") == 2
    leader_fill(leader, "ES", "sell", 2)
    order.refresh_from_db()
    assert (order.status, order.filled_qty) == ("filled", 2)
    assert copier_position(f1, "ES") == broker_position(f1, "ES") == 0
    assert sent_at_broker(f1) == [("buy", 2), ("sell", 2)]


def test_a_trader_fill_carrying_an_id_of_another_event_stays_the_traders_at_a_re_run(world):
    """Only the re-run event's own client order ids are looked up: a trader's fill tagged
    with another event's id (its script reused one) is left the trader's."""
    leader, f1, _ = world
    entry = stored(leader, "e", "buy", 2)
    crash_mid_copy(entry)
    _script(f1, f"cp{entry.pk + 1000}-{f1.pk}-0", "buy", 1)  # the trader's own, tagged so
    tasks.process_event(entry.pk)
    assert not Order.objects.filter(client_order_id=f"cp{entry.pk + 1000}-{f1.pk}-0").exists()
    assert copier_position(f1, "ES") == broker_position(f1, "ES") == 3


@pytest.mark.usefixtures("frozen_clock")
def test_a_crashed_runs_fill_counted_as_the_traders_and_an_order_left_unknown_count_once(world):
    """As above, but the re-run cannot ask the broker (its look-up fails): the order is on
    record `unknown`, its exit queued. The stream delivering the fill again finds it
    counted; the queued exit's attempt looks the order up, finds it filled, and moves
    the position by nothing more."""
    leader, f1, _ = world
    leader_fill(leader, "ES", "buy", 4)
    exit_event = stored(leader, "x", "sell", 3)
    crash_mid_copy(exit_event)
    broker_events_pump(account=f1)
    assert copier_position(f1, "ES") == 1
    SimBroker(f1).inject(lookup_fail=1)
    tasks.process_event(exit_event.pk)
    order = Order.objects.get(client_order_id__startswith=f"cp{exit_event.pk}-{f1.pk}-")
    assert order.status == "unknown"
    fill_id = SimOrder.objects.using("broker").get(client_order_id=order.client_order_id).fill_id
    SimBroker(f1).execute_fill("ES", "sell", 3, fill_id=fill_id)  # delivered again
    broker_events_pump(account=f1)
    assert copier_position(f1, "ES") == 1
    assert retry_due(FailedExit.objects.get(account=f1)) in ("done", "resolved")
    order.refresh_from_db()
    assert (order.status, order.filled_qty) == ("filled", 3)
    assert copier_position(f1, "ES") == broker_position(f1, "ES") == 1
    assert sent_at_broker(f1) == [("buy", 4), ("sell", 3)]


def test_a_fill_of_our_order_waits_for_the_placing_transaction_and_is_not_counted_twice(world):
    """The fill reaches the listener while the copy that placed its order still holds the
    position's lock, its order row not committed: the fill's handler waits for it, then
    finds the row and counts nothing (the placement counted the order)."""
    leader, f1, _ = world
    entry = stored(leader, "x", "buy", 2)
    started = engine.event_start(event_id=entry.pk)
    assert started is not None
    placed = threading.Event()
    handled: list[int] = []

    def listener() -> None:
        close_old_connections()
        try:
            placed.wait(10)
            handled.append(broker_events_pump(account=TradingAccount.objects.get(pk=f1.pk)))
        finally:
            close_old_connections()

    thread = threading.Thread(target=listener)
    thread.start()
    with transaction.atomic():
        engine.seats_copy(event=started.event, seats=started.batches[0])
        assert broker_position(f1, "ES") == 2  # executed at the broker
        placed.set()
        time.sleep(0.5)  # the listener reads the fill and waits on the position's lock
        assert thread.is_alive()
    thread.join(10)
    assert handled == [0]
    assert copier_position(f1, "ES") == broker_position(f1, "ES") == 2


# --- at the local venues: a trader's order with the venue's own tag -------------------------


@pytest.fixture(params=["projectx", "tradovate"])
def venue(request: pytest.FixtureRequest) -> Iterator[LocalVenue]:
    v = venue_start(request.param)
    try:
        yield v
    finally:
        v.stop()


def _venue_follower(venue: LocalVenue) -> TradingAccount:
    """A connected follower at the venue holding ESZ6 +2 there and in the copier's books."""
    ext = venue.account_add("FV")
    acct = TradingAccount.objects.create(
        name="FV", broker=venue.kind, external_id=ext,
        credentials=json.dumps(venue.credentials(ext)),
        connection_state=ConnectionState.CONNECTED)
    group("gv", account("L"), {acct: "1"})
    adapters_forget()
    session = adapter_for(acct).session_obtain(None)
    assert session is not None
    session_save(acct.pk, session)
    venue.trade(ext, "ESZ6", "buy", 2)
    Position.objects.create(account=acct, symbol="ESZ6", qty=2)
    return acct


def _stream_fills(acct: TradingAccount, act: object, fills: int) -> list[BrokerEvent]:
    """Open the follower's stream as the listener does, do `act`, read until `fills` fills."""
    session = session_load(acct.pk)

    async def read() -> list[BrokerEvent]:
        stream = adapter_for(acct).stream(session)
        await stream.open()
        try:
            await asyncio.to_thread(act)  # type: ignore[arg-type]
            got: list[BrokerEvent] = []
            async with asyncio.timeout(10):
                while sum(isinstance(e, Fill) for e in got) < fills:
                    got += await stream.receive()
            return got
        finally:
            await stream.close()

    return asyncio.run(read())


@pytest.mark.parametrize("tag", ["flatten-all-0931", "cp123-45-0"])
def test_a_traders_tagged_order_at_a_venue_is_the_traders(venue, tag):
    """The trader's script sends a market order with its own customTag / clOrdId through
    the venue's API: its fill, on the follower's stream, moves the copier's position."""
    acct = _venue_follower(venue)
    script = adapter_class(venue.kind)(acct)  # the trader's own client, same login

    def flatten_by_script() -> None:
        script.place_order(OrderRequest(tag, "ESZ6", Side.SELL, 2))

    events = _stream_fills(acct, flatten_by_script, 1)
    fill = next(e for e in events if isinstance(e, Fill))
    assert fill.client_order_id == tag
    broker_events_handle(account=acct, events=events, is_leader=False)
    assert venue.positions(acct.external_id) == {}
    assert copier_position(acct, "ESZ6") == 0
