"""The world the fault tests run in, and the checks they end with."""

from __future__ import annotations

import random
import time
from decimal import Decimal

from django.db import OperationalError, close_old_connections, connections

from accounts.models import TradingAccount
from brokers.models import SimOrder
from copier.domain import rules
from copier.models import Decision, FailedExit, LeaderEvent, Order
from copier.services.failed_exits import failed_exits_dispatch_due
from copier.services.ingest import events_redispatch
from core.trading import signed
from tests.factories import account, broker_position, connect, copier_position, group, leader_fill

FOLLOWERS = {"F1": "1", "F2": "2", "F3": "0.5", "R1": "1"}
SYMBOLS = ("ES", "NQ")


def build_world() -> tuple[TradingAccount, dict[TradingAccount, str]]:
    leader = account("L")
    followers = {account(name): m for name, m in FOLLOWERS.items()}
    group("g", leader, {a: m for a, m in followers.items() if a.name != "R1"})
    group("r", leader, {a: m for a, m in followers.items() if a.name == "R1"}, reverse=True)
    connect(leader, *followers)
    return leader, followers


def stream_fill(leader: TradingAccount, rng: random.Random, final: dict[str, int]) -> None:
    """One leader fill at the broker, retried until the broker (the sim, in PostgreSQL) takes it."""
    symbol, side, qty = rng.choice(SYMBOLS), rng.choice(["buy", "sell"]), rng.randint(1, 3)
    fill_id = f"stream-{rng.random()}"
    for _ in range(200):
        try:
            leader_fill(leader, symbol, side, qty, fill_id=fill_id)
            break
        except OperationalError:  # PostgreSQL restarting: the broker is down too
            connections.close_all()
            time.sleep(0.1)
    else:
        raise AssertionError("the leader fill never got through")
    final[symbol] += signed(side, qty)


def drain(timeout: float = 120.0, *, exits: bool = False) -> int:
    """What beat does: re-dispatch events not done, until all are. Returns the rounds.

    `exits`: and the Failed Exit Queue's due retries, until none is waiting: an exit a
    follower missed while it was disconnected (reconnecting after an outage) is queued,
    and goes out at its reconnect or its retry, after its event is done."""
    deadline = time.monotonic() + timeout
    rounds = 0
    waiting = [FailedExit.Status.PENDING, FailedExit.Status.IN_FLIGHT]
    while True:
        close_old_connections()
        try:
            events_left = LeaderEvent.objects.exclude(status="done").exists()
            exits_left = exits and FailedExit.objects.filter(status__in=waiting).exists()
            if not events_left and not exits_left:
                return rounds
            if events_left:
                events_redispatch(older_than_seconds=2)
            if exits_left:
                failed_exits_dispatch_due()
        except OperationalError:
            connections.close_all()
        rounds += 1
        if time.monotonic() > deadline:
            left = LeaderEvent.objects.exclude(status="done").count()
            queued = FailedExit.objects.filter(status__in=waiting).count()
            raise AssertionError(f"{left} events still not copied, {queued} exits still "
                                 f"queued after {timeout} s")
        time.sleep(0.5)


def check_outcome(followers: dict[TradingAccount, str], final: dict[str, int]) -> dict[str, int]:
    """Every follower where a sequential run puts it; nothing lost, nothing doubled."""
    for follower, multiplier in followers.items():
        for symbol, p in final.items():
            expected = rules.expected_position(p, Decimal(multiplier), follower.name == "R1")
            assert broker_position(follower, symbol) == expected, (follower.name, symbol)
            assert copier_position(follower, symbol) == expected, (follower.name, symbol)
    at_broker = list(SimOrder.objects.using("broker").filter(status="filled")
                     .exclude(client_order_id=None).values_list("client_order_id", flat=True))
    recorded = set(Order.objects.filter(status="filled").values_list("client_order_id",
                                                                     flat=True))
    doubled = len(at_broker) - len(set(at_broker))
    lost = len(set(at_broker) - recorded)  # executed at the broker, unknown to the copier
    events = LeaderEvent.objects.count()
    assert doubled == 0
    assert lost == 0
    assert Decision.objects.count() == events * len(followers)
    return {"events": events, "orders_checked": len(at_broker), "lost": lost,
            "doubled": doubled}
