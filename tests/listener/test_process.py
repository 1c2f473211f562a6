"""`manage.py copier_listen` as a real process, with a real Celery worker, on the test database.

Nothing but the listener takes fills off the sim's stream here: no test calls the pump.
"""

from __future__ import annotations

import time

import pytest
from django.db.models.functions import Coalesce

from accounts.models import TradingAccount
from brokers.sim import SimBroker
from copier.models import CopyGroup, Follower, LeaderEvent, Order
from tests.factories import account, broker_position, copier_position, group
from tests.helpers import wait_until

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"), pytest.mark.slow]


def _state(acct: TradingAccount) -> TradingAccount:
    return TradingAccount.objects.get(pk=acct.pk)


def _connected(*accounts: TradingAccount, owner: str | None = None) -> bool:
    rows = [_state(a) for a in accounts]
    return all(r.connection_state == "connected" and (owner is None or r.stream_owner == owner)
               for r in rows)


@pytest.mark.worker  # a Celery worker on the shared private Redis: not under -n
def test_a_new_group_is_connected_and_its_leader_fill_copied_with_no_other_action(
        listeners, worker, capsys):
    first = listeners.start("A")
    leader, follower = account("NEW-L2"), account("NEW-F9")
    started = time.monotonic()
    group("g", leader, {follower: "1"})  # what the admin's group form does
    wait_until(lambda: _connected(leader, follower, owner="A"), timeout=5,
               what="the new accounts connected")
    connected_after = time.monotonic() - started
    placed = time.monotonic()
    SimBroker(leader).execute_fill("ES", "buy", 2)  # what the admin's sim fill does
    wait_until(lambda: broker_position(follower, "ES") == 2, timeout=10, what="the copy")
    copied_after = time.monotonic() - placed
    # the sim executes on its own connection before the copier's transaction commits
    wait_until(lambda: LeaderEvent.objects.filter(status="done").exists(), timeout=10,
               what="the copy committed")
    event = LeaderEvent.objects.get()
    assert event.source == LeaderEvent.Source.STREAM  # not "missed while disconnected"
    assert copier_position(follower, "ES") == 2
    assert _state(follower).connection_state == "connected"
    assert first.alive
    with capsys.disabled():
        print(f"\n[listener] new group connected after {connected_after:.2f} s, "
              f"leader fill copied after {copied_after:.2f} s")


def test_an_account_enabled_later_is_connected_and_one_disabled_is_let_go(listeners):
    leader, f1, f2 = account("L"), account("F1"), account("F2")
    g = group("g", leader, {f1: "1", f2: "1"})
    Follower.objects.filter(account=f2).update(enabled=False)
    listeners.start("A")
    wait_until(lambda: _connected(leader, f1, owner="A"), timeout=5, what="connected")
    assert _state(f2).stream_owner == ""
    Follower.objects.filter(account=f2).update(enabled=True)
    wait_until(lambda: _connected(f2, owner="A"), timeout=5, what="the enabled follower")
    CopyGroup.objects.filter(pk=g.pk).update(enabled=False)
    wait_until(lambda: all(_state(a).stream_owner == "" for a in (leader, f1, f2)), timeout=5,
               what="the disabled group's streams released")
    assert {_state(a).connection_state for a in (leader, f1, f2)} == {"disconnected"}
    assert "not in an enabled copy group" in _state(f1).last_error


@pytest.mark.worker  # a Celery worker on the shared private Redis: not under -n
def test_an_outage_disconnects_and_a_restore_reconnects_and_reconciles(listeners, worker):
    leader, follower = account("L"), account("F1")
    group("g", leader, {follower: "1"})
    listeners.start("A")
    wait_until(lambda: _connected(leader, follower), timeout=5, what="connected")
    SimBroker(leader).execute_fill("ES", "buy", 2)
    wait_until(lambda: broker_position(follower, "ES") == 2, timeout=10, what="the copy")
    SimBroker(leader).set_reachable(False)
    wait_until(lambda: _state(leader).connection_state == "disconnected", timeout=5,
               what="the outage noticed")
    assert "outage" in _state(leader).last_error
    SimBroker(leader).execute_fill("ES", "sell", 1)  # unseen by the stream: an exit missed
    SimBroker(leader).set_reachable(True)
    wait_until(lambda: _connected(leader), timeout=10, what="reconnected after the restore")
    # The reconnect's re-read finds the missed exit and copies it (close-only).
    wait_until(lambda: broker_position(follower, "ES") == 1, timeout=10, what="the reconcile")
    assert LeaderEvent.objects.filter(source=LeaderEvent.Source.RECONCILE).count() == 1


def test_sigterm_closes_the_streams_releases_the_leases_and_exits_0(listeners):
    leader, follower = account("L"), account("F1")
    group("g", leader, {follower: "1"})
    a = listeners.start("A")
    wait_until(lambda: _connected(leader, follower, owner="A"), timeout=5, what="connected")
    b = listeners.start("B")
    time.sleep(1.5)  # B scans and finds both leases held
    assert _state(leader).stream_owner == "A"
    assert a.terminate() == 0
    assert "listener A stopped" in a.log()
    wait_until(lambda: _connected(leader, follower, owner="B"), timeout=5,
               what="B took the released accounts")
    assert b.alive


def _copies(follower: TradingAccount) -> list[tuple[int, str, int]]:
    """(leader event, side, qty) of each filled copier order on the follower: an exit that
    went out through the Failed Exit Queue (the follower not yet reconnected by the new
    owner) counts for the event it was queued for."""
    return sorted(Order.objects.filter(account=follower, status="filled")
                  .annotate(event=Coalesce("decision__event_id", "failed_exit__event_id"))
                  .values_list("event", "side", "filled_qty"))


@pytest.mark.worker  # a Celery worker on the shared private Redis: not under -n
def test_failover_the_survivor_takes_the_accounts_of_a_killed_listener_and_copies_once(
        listeners, worker, capsys):
    leader, f1, f2 = account("L"), account("F1"), account("F2")
    group("g", leader, {f1: "1", f2: "2"})
    a = listeners.start("A")
    wait_until(lambda: _connected(leader, f1, f2, owner="A"), timeout=5, what="A owns all")
    b = listeners.start("B")
    time.sleep(1.5)  # B is up and scanning, finding every lease held
    sim = SimBroker(leader)

    sim.execute_fill("ES", "buy", 3, "before")
    wait_until(lambda: (broker_position(f1, "ES"), broker_position(f2, "ES")) == (3, 6),
               timeout=10, what="the fill before the kill copied")
    a.kill()
    killed = time.monotonic()
    # An exit while nobody streams: B's reconnect finds it (or its stream delivers it).
    sim.execute_fill("ES", "sell", 1, "during")
    wait_until(lambda: _connected(leader, f1, f2, owner="B"), timeout=5,
               what="B owns and connected every account")
    took_over = time.monotonic() - killed
    sim.execute_fill("ES", "buy", 2, "after")
    wait_until(lambda: (broker_position(f1, "ES"), broker_position(f2, "ES")) == (4, 8),
               timeout=10, what="the fills during and after the kill copied")
    time.sleep(1.0)  # anything copied twice would show now
    assert (broker_position(f1, "ES"), broker_position(f2, "ES")) == (4, 8)
    assert (copier_position(f1, "ES"), copier_position(f2, "ES")) == (4, 8)
    events = list(LeaderEvent.objects.order_by("id").values_list("id", "side", "qty"))
    assert [(side, qty) for _, side, qty in events] == [("buy", 3), ("sell", 1), ("buy", 2)]
    ids = [event_id for event_id, _, _ in events]
    assert _copies(f1) == [(ids[0], "buy", 3), (ids[1], "sell", 1), (ids[2], "buy", 2)]
    assert _copies(f2) == [(ids[0], "buy", 6), (ids[1], "sell", 2), (ids[2], "buy", 4)]
    assert b.alive
    with capsys.disabled():
        print(f"\n[listener] failover: B owned and connected every account "
              f"{took_over:.2f} s after A was killed")
