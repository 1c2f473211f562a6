"""A mapped follower through the real services: positions, orders, quarantines, queued exits
and the heal check all on the follower's symbol; the leader's P on the leader's symbol."""

from __future__ import annotations

from decimal import Decimal

import pytest

from brokers.sim import SimBroker
from copier import tasks
from copier.domain.symbol_map import SymbolRule
from copier.models import Decision, FailedExit, Follower, LeaderEvent, Order, SymbolMapping
from copier.services import engine, failed_exits
from tests.factories import account, broker_position, connect, copier_position, group, leader_fill

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"),
              pytest.mark.usefixtures("eager_tasks")]


@pytest.fixture
def world():
    """F1 trades the leader's NQ as MNQ (x10); F2 is not mapped."""
    leader, f1, f2 = account("L"), account("F1"), account("F2")
    g = group("g", leader, {f1: "1", f2: "1"})
    SymbolMapping.objects.create(follower=Follower.objects.get(group=g, account=f1),
                                 leader_symbol="NQ", follower_symbol="MNQ")
    connect(leader, f1, f2)
    return leader, f1, f2


def test_each_follower_is_locked_and_placed_on_its_own_symbol_in_one_batch(world):
    leader, f1, f2 = world
    leader_fill(leader, "NQZ6", "buy", 2)
    assert (broker_position(f1, "MNQZ6"), broker_position(f1, "NQZ6")) == (20, 0)
    assert broker_position(f2, "NQZ6") == 2
    rows = {d.account_id: d for d in Decision.objects.all()}
    assert (rows[f1.pk].symbol, rows[f1.pk].expected_after) == ("MNQZ6", 20)
    assert "leader NQZ6 -> MNQZ6 x10" in rows[f1.pk].detail
    assert rows[f2.pk].symbol == "NQZ6"
    assert LeaderEvent.objects.get().symbol == "NQZ6"


def test_a_re_run_decides_with_the_mapping_the_event_first_saw(world):
    leader, f1, _f2 = world
    leader_fill(leader, "NQ", "buy", 1)
    event = LeaderEvent.objects.get()
    seats = {seat.account_id: seat for seat in engine.event_seats(event)}
    assert seats[f1.pk].symbols.rules == (
        SymbolRule("NQ", "MNQ", Decimal(10)),)  # frozen unratioed: the pair's own ratio
    SymbolMapping.objects.all().delete()  # changed after the event first ran
    tasks.process_event(event.pk)  # a redelivery: decided already, nothing new
    assert Order.objects.filter(account=f1).count() == 1
    assert broker_position(f1, "MNQ") == 10


def test_a_queued_exit_on_the_mapped_symbol_is_sized_from_the_leaders_symbol(world, frozen_clock):
    leader, f1, _f2 = world
    leader_fill(leader, "NQ", "buy", 2)
    SimBroker(f1).inject(fail=1)
    leader_fill(leader, "NQ", "sell", 1)
    fe = FailedExit.objects.get()
    assert (fe.symbol, fe.side, fe.qty) == ("MNQ", "sell", 10)
    leader_fill(leader, "NQ", "buy", 1)  # back to +2: F1 (still +20) is at E(P) again
    assert failed_exits.failed_exit_attempt(failed_exit_id=fe.pk) is None  # not due yet
    FailedExit.objects.filter(pk=fe.pk).update(next_attempt_at=fe.first_failed_at)
    assert failed_exits.failed_exit_attempt(failed_exit_id=fe.pk) == "resolved"
    assert copier_position(f1, "MNQ") == 20


def test_the_heal_check_compares_mnq_with_the_leaders_nq(world):
    leader, f1, _f2 = world
    leader_fill(leader, "NQ", "buy", 1)
    sim = SimBroker(f1)
    sim.set_reachable(False)
    connect(f1)
    sim.execute_fill("MNQ", "buy", 5)  # a manual trade while away: paused
    sim.set_reachable(True)
    connect(f1)
    f1.refresh_from_db()
    assert f1.copy_paused
    sim.execute_fill("MNQ", "sell", 5)  # back at 10 MNQ = E(+1 NQ) x10
    connect(f1)
    f1.refresh_from_db()
    assert not f1.copy_paused


# --- with the risk limits (branch merge): the ratio before the cap, the follower's symbols ---


def test_a_fixed_quantity_follower_mapped_to_the_micro_holds_its_notional(world):
    leader, f1, _f2 = world
    Follower.objects.filter(account=f1).update(fixed_qty=1)
    leader_fill(leader, "NQZ6", "buy", 3)  # a fixed 1 NQ traded as MNQ is 10 MNQ
    assert broker_position(f1, "MNQZ6") == 10
    leader_fill(leader, "NQZ6", "sell", 3)
    assert broker_position(f1, "MNQZ6") == 0


def test_a_max_position_caps_the_mapped_symbol_in_the_followers_own_contracts(world):
    leader, f1, _f2 = world
    Follower.objects.filter(account=f1).update(max_position=15)
    leader_fill(leader, "NQ", "buy", 2)  # 20 MNQ called for, 15 held
    assert broker_position(f1, "MNQ") == 15
    d = Decision.objects.get(account=f1)
    assert (d.reason, d.expected_after) == ("risk_limit", 15)


def test_max_open_symbols_counts_the_followers_own_symbol_not_the_leaders(world):
    leader, f1, _f2 = world
    Follower.objects.filter(account=f1).update(max_symbols=1)
    leader_fill(leader, "NQ", "buy", 1)  # F1 opens MNQ
    leader_fill(leader, "NQ", "buy", 1)  # an add on MNQ: no new symbol, copied
    assert broker_position(f1, "MNQ") == 20
    leader_fill(leader, "ES", "buy", 1)  # a second symbol: held back
    assert broker_position(f1, "ES") == 0
    assert Decision.objects.filter(account=f1, symbol="ES").get().reason == "risk_limit"
