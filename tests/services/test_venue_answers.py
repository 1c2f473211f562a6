"""What the venues answer, through the copy engine, at the local ProjectX and Tradovate
servers (issue 18, item 11): a 5xx on an order placement, before or after the order
executed, is an unknown outcome, looked up by client id before anything else. (Item 12,
a session the venue refuses early, is in tests/listener/test_sessions.py.)

The leader trades at the sim (its fills pumped as the listener would); the follower is an
account at the local venue, logged in as its listener would have, so every order goes
out through the real adapter over HTTP. The venue's books are the truth.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from accounts.models import ConnectionState, Position, TradingAccount
from brokers.registry import adapter_for, adapters_forget
from brokers.sessions import session_save
from copier.models import Decision, FailedExit, Order
from copier.services import failed_exits
from core import clock
from devkit.localvenue import LocalVenue, venue_start
from tests.factories import account, connect, copier_position, group, leader_fill

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"),
              pytest.mark.usefixtures("eager_tasks", "frozen_clock")]

SYMBOL = "ESZ6"


@pytest.fixture(params=["projectx", "tradovate"])
def venue(request: pytest.FixtureRequest) -> Iterator[LocalVenue]:
    started = venue_start(request.param)
    try:
        yield started
    finally:
        started.stop()


def connected_leader() -> TradingAccount:
    leader = account("L")
    connect(leader)
    return leader


def venue_follower(venue: LocalVenue, leader: TradingAccount, holding: int = 0
                   ) -> TradingAccount:
    """A connected follower at the venue (its session stored), holding `holding` there and
    in the copier's books."""
    ext = venue.account_add("FV")
    follower = TradingAccount.objects.create(
        name="FV", broker=venue.kind, external_id=ext,
        credentials=json.dumps(venue.credentials(ext)),
        connection_state=ConnectionState.CONNECTED)
    group("g", leader, {follower: "1"})
    adapters_forget()
    session = adapter_for(follower).session_obtain(None)
    assert session is not None
    session_save(follower.pk, session)
    if holding:
        venue.trade(ext, SYMBOL, "buy", holding)
        Position.objects.create(account=follower, symbol=SYMBOL, qty=holding)
    return follower


def executed(venue: LocalVenue, follower: TradingAccount) -> list[str]:
    """The copier's client ids of the orders the venue executed for the follower."""
    orders = venue.orders(follower.external_id)
    if venue.kind == "tradovate":
        return [o["clOrdId"] for o in orders if o.get("clOrdId") and o["filled"]]
    traded = {t["orderId"] for t in venue.trades(follower.external_id)}  # type: ignore[attr-defined]
    return [o["customTag"] for o in orders if o.get("customTag") and o["id"] in traded]


def retry_due(fe: FailedExit) -> str | None:
    fe.refresh_from_db()
    clock.advance_to(fe.next_attempt_at)
    return failed_exits.failed_exit_attempt(failed_exit_id=fe.pk)


# --- item 11: a 5xx after the order executed ----------------------------------------------------


def test_an_entry_answered_5xx_after_it_executed_is_recorded_filled(venue):
    leader = connected_leader()
    follower = venue_follower(venue, leader)
    venue.inject("http_5xx_after", account_external_id=follower.external_id)
    leader_fill(leader, SYMBOL, "buy", 2)
    decision = Decision.objects.get(account=follower)
    assert decision.reason == "copied", decision.detail
    assert venue.positions(follower.external_id) == {SYMBOL: 2}
    assert copier_position(follower, SYMBOL) == 2
    [order] = Order.objects.filter(account=follower)
    assert (order.status, order.filled_qty) == (Order.Status.FILLED, 2)


def test_an_exit_answered_5xx_after_it_executed_is_found_and_never_sent_again(venue):
    leader = connected_leader()
    leader_fill(leader, SYMBOL, "buy", 2)
    follower = venue_follower(venue, leader, holding=2)
    venue.inject("http_5xx_after", account_external_id=follower.external_id)
    leader_fill(leader, SYMBOL, "sell", 2)
    decision = Decision.objects.get(account=follower, event__side="sell")
    assert decision.reason == "copied", decision.detail
    assert not FailedExit.objects.filter(status="pending").exists()
    assert venue.positions(follower.external_id) == {}
    assert copier_position(follower, SYMBOL) == 0
    assert len(executed(venue, follower)) == 1


def test_a_queued_exit_looks_up_the_order_a_5xx_left_in_doubt_before_sending(venue):
    """The 5xx came after the exit executed, and the look-up that follows fails too: the
    order stays unknown and its exit queued; the queued attempt asks about the first
    client id first, finds it filled, and sends nothing."""
    leader = connected_leader()
    leader_fill(leader, SYMBOL, "buy", 2)
    follower = venue_follower(venue, leader, holding=2)
    venue.inject("http_5xx_after", account_external_id=follower.external_id)
    venue.inject("lookup_fail", account_external_id=follower.external_id)
    leader_fill(leader, SYMBOL, "sell", 2)
    order = Order.objects.get(account=follower)
    assert order.status == Order.Status.UNKNOWN
    fe = FailedExit.objects.get(account=follower)
    assert fe.status == "pending"
    assert retry_due(fe) == "done"
    order.refresh_from_db()
    assert (order.status, order.filled_qty) == (Order.Status.FILLED, 2)
    assert venue.positions(follower.external_id) == {}
    assert copier_position(follower, SYMBOL) == 0
    assert executed(venue, follower) == [order.client_order_id]
    assert Order.objects.filter(account=follower).count() == 1


def test_a_5xx_before_the_order_ran_is_looked_up_found_absent_and_the_exit_retried(venue):
    """The venue answered 503 without executing: the copier cannot tell that from the
    above, asks, finds nothing, and the exit is retried under its queue's client id."""
    leader = connected_leader()
    leader_fill(leader, SYMBOL, "buy", 2)
    follower = venue_follower(venue, leader, holding=2)
    venue.inject("http_5xx", account_external_id=follower.external_id)
    leader_fill(leader, SYMBOL, "sell", 2)
    fe = FailedExit.objects.get(account=follower)
    assert (fe.status, fe.attempts) == ("pending", 1)
    assert executed(venue, follower) == []
    assert retry_due(fe) == "done"
    assert venue.positions(follower.external_id) == {}
    assert copier_position(follower, SYMBOL) == 0
    assert len(executed(venue, follower)) == 1


def test_a_queued_exits_retry_answered_5xx_after_it_executed_is_done_and_sent_once(venue):
    """The class, not the one path: the Failed Exit Queue's own attempt meets the 5xx
    after executing; it is looked up, found filled, and the exit is done."""
    leader = connected_leader()
    leader_fill(leader, SYMBOL, "buy", 2)
    follower = venue_follower(venue, leader, holding=2)
    venue.inject("http_5xx", account_external_id=follower.external_id)
    leader_fill(leader, SYMBOL, "sell", 2)
    fe = FailedExit.objects.get(account=follower)
    venue.inject("http_5xx_after", account_external_id=follower.external_id)
    assert retry_due(fe) == "done"
    assert venue.positions(follower.external_id) == {}
    assert copier_position(follower, SYMBOL) == 0
    assert len(executed(venue, follower)) == 1
    retry_due(fe)  # a late duplicate delivery of the retry does nothing
    assert len(executed(venue, follower)) == 1
