"""The fault tests with every account at a local protocol server, through the real adapters
and a real `copier_listen` (issue 10): the leader's fills come off its stream, the
followers' orders go to the venue over HTTP, and the worker, Redis, PostgreSQL or the
listener itself die in the middle.

What "nothing lost, nothing doubled" means at a venue: every client order id the venue
executed is one the copier knows (an order row filled), none was executed twice, and
each follower's position at the venue is the copier's. While PostgreSQL is down the
copier cannot store what the leader's stream says, so a fill then is a move missed while
disconnected (docs/rules.md#sync-divergence-guard): copied close-only at the reconnect, never more.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest
from django.db import OperationalError, close_old_connections, connections

from accounts.models import TradingAccount
from copier.domain import rules
from copier.models import Decision, LeaderEvent, Order
from core.trading import signed
from devkit.localvenue import LocalVenue, venue_start
from tests.factories import copier_position, group
from tests.faults.common import FOLLOWERS, SYMBOLS, drain
from tests.helpers import wait_until
from tests.listener.conftest import Listeners
from tests.listener.helpers import ListenerProcess

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"), pytest.mark.slow]


@pytest.fixture(params=["projectx", "tradovate"])
def venue(request: pytest.FixtureRequest) -> Iterator[LocalVenue]:
    started = venue_start(request.param)
    for symbol in SYMBOLS:
        started.contract_add(symbol)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def listeners(tmp_path, request) -> Iterator[Listeners]:
    found = Listeners(tmp_path)
    try:
        yield found
    finally:
        for proc in found.started:
            if proc.alive:
                proc.terminate()
        if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
            print(found.logs())


def _account(venue: LocalVenue, name: str) -> TradingAccount:
    account = venue.trading_account(name)
    account.save()
    return account


def venue_world(venue: LocalVenue) -> tuple[TradingAccount, dict[TradingAccount, str]]:
    leader = _account(venue, "L")
    followers = {_account(venue, name): m for name, m in FOLLOWERS.items()}
    group("g", leader, {a: m for a, m in followers.items() if a.name != "R1"})
    group("r", leader, {a: m for a, m in followers.items() if a.name == "R1"}, reverse=True)
    return leader, followers


def _connected(accounts: list[TradingAccount]) -> bool:
    close_old_connections()
    try:
        return TradingAccount.objects.filter(pk__in=[a.pk for a in accounts],
                                             connection_state="connected").count() == len(accounts)
    except OperationalError:
        connections.close_all()
        return False


def connected_by(listener: ListenerProcess, accounts: list[TradingAccount]) -> None:
    wait_until(lambda: not listener.alive or _connected(accounts), timeout=60, interval=0.1,
               what="the listener connected every account")
    assert listener.alive, listener.log()[-3000:]


def venue_fill(venue: LocalVenue, leader: TradingAccount, rng: random.Random,
               final: dict[str, int]) -> None:
    symbol, side, qty = rng.choice(SYMBOLS), rng.choice(["buy", "sell"]), rng.randint(1, 3)
    venue.trade(leader.external_id, symbol, side, qty)
    final[symbol] += signed(side, qty)


def events_stored(count: int, timeout: float = 60) -> None:
    """The listener took every fill off the leader's stream and stored it."""
    def stored() -> bool:
        close_old_connections()
        try:
            return LeaderEvent.objects.filter(source="stream").count() >= count
        except OperationalError:
            connections.close_all()
            return False
    wait_until(stored, timeout=timeout, interval=0.1, what=f"{count} leader events stored")


def _executed_tags(venue: LocalVenue, account: TradingAccount) -> list[str]:
    """Client order ids of the orders the venue executed for the account (each as often as
    the venue executed an order carrying it)."""
    if venue.kind == "tradovate":
        return [o["clOrdId"] for o in venue.orders(account.external_id)
                if o.get("clOrdId") and o["filled"]]
    traded = {t["orderId"] for t in venue.trades(account.external_id)}  # type: ignore[attr-defined]
    return [o["customTag"] for o in venue.orders(account.external_id)
            if o.get("customTag") and o["id"] in traded]


def _caught_up(venue: LocalVenue, leader: TradingAccount) -> bool:
    close_old_connections()
    try:
        at_venue = venue.positions(leader.external_id)
        return all(copier_position(leader, s) == at_venue.get(s, 0) for s in SYMBOLS)
    except OperationalError:
        connections.close_all()
        return False


def leader_views_agree(venue: LocalVenue, leader: TradingAccount,
                       listener: ListenerProcess) -> None:
    """The copier's view of the leader is the venue's: a fill counted twice (stored from the
    stream and again by a reconnect's re-read) shows here first, with the events that did it."""
    at_venue = venue.positions(leader.external_id)
    copier = {s: copier_position(leader, s) for s in SYMBOLS}
    if copier != {s: at_venue.get(s, 0) for s in SYMBOLS}:
        events = "\n".join(
            f"  {e.pk} {e.source} {e.fill_id} {e.symbol} {e.side} {e.qty} p0={e.p0} p1={e.p1} "
            f"close_only={e.close_only} at={e.received_at:%H:%M:%S.%f}"
            for e in LeaderEvent.objects.filter(account=leader).order_by("pk"))
        trades = "\n".join(f"  {t}" for t in venue.trades(leader.external_id)) \
            if hasattr(venue, "trades") else ""
        raise AssertionError(f"the copier holds the leader at {copier}, the venue at {at_venue}"
                             f"\nevents:\n{events}\nvenue trades:\n{trades}\n"
                             f"listener log:\n{listener.log()[-6000:]}")


def _story(follower: TradingAccount, symbol: str) -> str:
    """What the copier decided for the follower's symbol, event by event (a failure's why)."""
    return "\n".join(
        f"  event {d.event_id} {d.event.side} {d.event.qty} p0={d.event.p0} p1={d.event.p1} "
        f"{d.event.source} close_only={d.event.close_only}: {d.reason} "
        f"{d.position_before} -> {d.position_after} legs={d.placed_legs} {d.detail}"
        for d in Decision.objects.filter(account=follower, symbol=symbol)
        .select_related("event").order_by("event_id"))


def check_venue_outcome(venue: LocalVenue, followers: dict[TradingAccount, str],
                        final: dict[str, int], *, exact: bool) -> dict[str, int]:
    executed: list[str] = []
    for follower, multiplier in followers.items():
        held = venue.positions(follower.external_id)
        for symbol, p in final.items():
            expected = rules.expected_position(p, Decimal(multiplier), follower.name == "R1")
            at_venue = held.get(symbol, 0)
            why = (follower.name, symbol, at_venue, expected, _story(follower, symbol))
            assert copier_position(follower, symbol) == at_venue, why
            if exact:
                assert at_venue == expected, why
            else:  # missed moves are copied close-only: never more than the leader calls for
                assert rules.sign(at_venue) in (0, rules.sign(expected)), why
                assert abs(at_venue) <= abs(expected), why
        executed += _executed_tags(venue, follower)
    known = set(Order.objects.filter(status="filled").values_list("client_order_id", flat=True))
    doubled = len(executed) - len(set(executed))
    lost = len(set(executed) - known)
    assert doubled == 0
    assert lost == 0, [(o.client_order_id, o.status, o.qty, o.filled_qty, o.message)
                       for o in Order.objects.filter(client_order_id__in=set(executed) - known)]
    assert not Order.objects.filter(status="unknown").exists()
    return {"events": LeaderEvent.objects.count(), "orders_checked": len(executed),
            "lost": lost, "doubled": doubled}


def test_worker_killed_mid_stream_at_a_venue_loses_and_doubles_nothing(
    venue, listeners, worker_process, capsys
):
    rng = random.Random(5)
    leader, followers = venue_world(venue)
    listener = listeners.start("A")
    connected_by(listener, [leader, *followers])
    final = {s: 0 for s in SYMBOLS}
    worker_process.start()
    done = threading.Event()

    def killer() -> None:
        while not done.wait(rng.uniform(0.5, 1.5)):
            worker_process.kill()
            worker_process.start()

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    for _ in range(30):
        venue_fill(venue, leader, rng, final)
        time.sleep(rng.uniform(0.03, 0.15))
    done.set()
    thread.join()
    events_stored(30)
    rounds = drain()
    figures = check_venue_outcome(venue, followers, final, exact=True)
    with capsys.disabled():
        print(f"\n[{venue.kind} worker-kill] kills={worker_process.killed} rounds={rounds} "
              + " ".join(f"{k}={v}" for k, v in figures.items()))
    assert worker_process.killed >= 2


def test_redis_down_mid_stream_at_a_venue_stores_the_fills_and_copies_them_after(
    venue, listeners, worker_process, redis_server, capsys
):
    rng = random.Random(8)
    leader, followers = venue_world(venue)
    listener = listeners.start("A")
    connected_by(listener, [leader, *followers])
    final = {s: 0 for s in SYMBOLS}
    worker_process.start()
    for _ in range(8):
        venue_fill(venue, leader, rng, final)
    events_stored(8)
    redis_server.stop()
    for _ in range(5):  # the listener stores them; publishing fails
        venue_fill(venue, leader, rng, final)
    events_stored(13)
    redis_server.restart()
    for _ in range(8):
        venue_fill(venue, leader, rng, final)
    events_stored(21)
    rounds = drain()
    figures = check_venue_outcome(venue, followers, final, exact=True)
    with capsys.disabled():
        print(f"\n[{venue.kind} redis-restart] rounds={rounds} "
              + " ".join(f"{k}={v}" for k, v in figures.items()))


def test_postgresql_restarted_mid_stream_at_a_venue_doubles_nothing_and_misses_only_close_only(
    venue, listeners, worker_process, pg_server, capsys
):
    rng = random.Random(12)
    leader, followers = venue_world(venue)
    listener = listeners.start("A")
    connected_by(listener, [leader, *followers])
    final = {s: 0 for s in SYMBOLS}
    worker_process.start()
    for _ in range(10):
        venue_fill(venue, leader, rng, final)
    events_stored(10)
    connections.close_all()
    pg_server.restart()
    connections.close_all()
    for _ in range(10):
        venue_fill(venue, leader, rng, final)
        time.sleep(0.05)
    wait_until(lambda: venue.positions(leader.external_id) == {
        s: q for s, q in final.items() if q}, what="the venue holds the leader's trades")
    # The listener notices the lost lease connection on its next check, stops every
    # stream, then reconnects and reconciles: until then the accounts still read as
    # connected, and the fills in between are not the copier's yet. Checked before that,
    # followers on the old view look over-sized (the CI failure of b7743af).
    wait_until(lambda: _caught_up(venue, leader), timeout=60, interval=0.1,
               what="the copier's view of the leader caught up with the venue's")
    connected_by(listener, [leader, *followers])
    # An exit a follower missed while the listener reconnected it is queued: it goes out
    # at the reconnect or its retry (the CI failure of 4976c5b checked before it had).
    rounds = drain(exits=True)
    assert worker_process.alive, "the worker died with the database"
    leader_views_agree(venue, leader, listener)
    figures = check_venue_outcome(venue, followers, final, exact=False)
    with capsys.disabled():
        print(f"\n[{venue.kind} postgres-restart] rounds={rounds} "
              + " ".join(f"{k}={v}" for k, v in figures.items()))


def test_listener_failover_at_a_venue_within_5_s_copies_before_and_after_once(
    venue, listeners, worker_process, capsys
):
    """Two listeners; the owner is SIGKILLed. The survivor owns every stream within 5 s,
    reconnects and reconciles (the Sync Divergence Guard); the leader's fills before and
    after the kill are each copied once."""
    rng = random.Random(3)
    leader, followers = venue_world(venue)
    accounts = [leader, *followers]
    first = listeners.start("A")
    connected_by(first, accounts)
    listeners.start("B")
    final = {s: 0 for s in SYMBOLS}
    worker_process.start()
    for _ in range(5):
        venue_fill(venue, leader, rng, final)
    events_stored(5)
    drain()
    check_venue_outcome(venue, followers, final, exact=True)
    first.kill()
    killed_at = time.monotonic()
    wait_until(lambda: TradingAccount.objects.filter(
        pk__in=[a.pk for a in accounts], stream_owner="B", connection_state="connected",
    ).count() == len(accounts), timeout=15, interval=0.05, what="B owns every stream")
    took_over = time.monotonic() - killed_at
    for _ in range(5):
        venue_fill(venue, leader, rng, final)
    events_stored(10)
    drain()
    figures = check_venue_outcome(venue, followers, final, exact=True)
    with capsys.disabled():
        print(f"\n[{venue.kind} listener-failover] took_over_s={took_over:.2f} "
              + " ".join(f"{k}={v}" for k, v in figures.items()))
    assert took_over < 5
