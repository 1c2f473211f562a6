"""`BrokerAdapter.realized_pnl`, the daily loss limit's number, read from the wire: the local
ProjectX Gateway's Trade/search (profitAndLoss less fees), the local Tradovate's cash
balance snapshot, and the sim's own fills at average cost. No adapter is patched: prices are
moved at the venue (`price_set`) and trades made there."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal

import pytest

from accounts.models import TradingAccount
from brokers.base import OrderRequest, PermanentBrokerError, TransientBrokerError, position_fill
from brokers.projectx import ProjectXBroker
from brokers.registry import adapter_for, adapters_forget
from brokers.sessions import session_save
from brokers.sim import SimBroker
from core.trading import Side
from devkit.localvenue.projectx import ProjectXVenue
from devkit.localvenue.tradovate import TradovateVenue
from tests.factories import account

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")
LONG_AGO = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
D = Decimal


def test_average_cost_realises_the_move_on_what_is_closed():
    assert position_fill(0, None, 2, D(100)) == (2, D(100), 0, D(0))
    assert position_fill(2, D(100), 2, D(110)) == (4, D(105), 0, D(0))
    assert position_fill(4, D(105), -1, D(100)) == (3, D(105), 1, D(-5))
    # a reversal: closes the 3 long at +5 each, opens 2 short at 110
    assert position_fill(3, D(105), -5, D(110)) == (-2, D(110), 3, D(15))
    assert position_fill(-2, D(110), 2, D(100)) == (0, None, 2, D(20))
    # unknown price or cost: the realised part is unknown, never zero
    assert position_fill(2, None, -1, D(100)) == (1, None, 1, None)
    assert position_fill(2, D(100), -1, None) == (1, D(100), 1, None)


# --- ProjectX ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def px_venue() -> Iterator[ProjectXVenue]:
    v = ProjectXVenue().start()
    assert isinstance(v, ProjectXVenue)
    yield v
    v.stop()


def _px(venue: ProjectXVenue, name: str) -> ProjectXBroker:
    external = venue.account_add(name)
    acct = TradingAccount.objects.create(name=name, broker="projectx", external_id=external,
                                         credentials=json.dumps(venue.credentials(external)))
    adapter = ProjectXBroker(acct)
    session = adapter.session_obtain(None)
    assert session is not None
    session_save(acct.pk, session, obtained_by="test listener")
    return adapter


def test_projectx_realised_pnl_is_the_closing_trades_pnl_less_every_fee(px_venue):
    px = _px(px_venue, "px-pnl")
    ext = px.account.external_id
    px_venue.price_set("MNQZ6", 20000)
    px.place_order(OrderRequest("pnl-1", "MNQZ6", Side.BUY, 2))  # half-turn: no P&L, fees
    px_venue.price_set("MNQZ6", 19900.5)
    px_venue.trade(ext, "MNQZ6", "sell", 1)  # closes 1: -99.5 points x $2
    trades = px_venue.trades(ext)
    assert [t["profitAndLoss"] for t in trades] == [None, -199.0]
    fees = sum(D(str(t["fees"])) for t in trades)
    assert px.realized_pnl(LONG_AGO) == D(-199) - fees
    # only the trades since `since` count (Trade/search's startTimestamp)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    assert px.realized_pnl(later) == D(0)


def test_projectx_realised_pnl_outage_is_transient(px_venue):
    px = _px(px_venue, "px-pnl-down")
    px_venue.set_reachable(False, account_external_id=px.account.external_id)
    try:
        with pytest.raises(TransientBrokerError):
            px.realized_pnl(LONG_AGO)
    finally:
        px_venue.set_reachable(True, account_external_id=px.account.external_id)


def test_local_venues_refuse_a_bad_price(px_venue):
    for bad in (-1, 0, float("nan"), float("inf"), "abc", True):
        with pytest.raises(ValueError, match="finite number > 0"):
            px_venue.price_set("MNQZ6", bad)
    with pytest.raises(ValueError, match="not listed"):
        px_venue.price_set("ZZZZ9", 10)


# --- Tradovate -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tv_venue() -> Iterator[TradovateVenue]:
    v = TradovateVenue().start()
    assert isinstance(v, TradovateVenue)
    yield v
    v.stop()


def _tv(venue: TradovateVenue, name: str) -> TradingAccount:
    external = venue.account_add(f"DEMO-{name}")
    acct = TradingAccount.objects.create(name=name, broker="tradovate", external_id=external,
                                         credentials=json.dumps(venue.credentials(external)))
    adapters_forget()
    session = adapter_for(acct).session_obtain(None)
    assert session is not None
    session_save(acct.pk, session)
    return acct


def test_tradovate_realised_pnl_is_the_cash_balance_snapshots(tv_venue):
    acct = _tv(tv_venue, "tv-pnl")
    broker = adapter_for(acct)
    tv_venue.price_set("ESZ6", 6000)
    broker.place_order(OrderRequest("tv-pnl-1", "ESZ6", Side.SELL, 2))
    assert broker.realized_pnl(LONG_AGO) == D(0)
    tv_venue.price_set("ESZ6", 6010.25)
    broker.place_order(OrderRequest("tv-pnl-2", "ESZ6", Side.BUY, 3))  # closes 2 short, opens 1
    assert broker.realized_pnl(LONG_AGO) == D("-1025.00")  # -10.25 x 2 x $50
    assert ("POST", "/cashbalance/getcashbalancesnapshot",
            {"accountId": int(acct.external_id)}) in tv_venue.requests


def test_tradovate_snapshot_of_another_users_account_is_refused(tv_venue):
    mine, other = _tv(tv_venue, "tv-mine"), _tv(tv_venue, "tv-other")
    mine.external_id = other.external_id  # a login that does not hold that account
    with pytest.raises(PermanentBrokerError, match="Access is denied"):
        adapter_for(mine).realized_pnl(LONG_AGO)


# --- sim -----------------------------------------------------------------------------------


def test_sim_orders_fill_at_the_last_price_and_realise_at_average_cost():
    leader, follower = account("L"), account("F")
    sim_l, sim_f = SimBroker(leader), SimBroker(follower)
    sim_l.execute_fill("MNQZ6", Side.BUY, 1, price="20000")
    sim_f.place_order(OrderRequest("f-1", "MNQZ6", Side.BUY, 2))  # at 20000, the last price
    SimBroker.price_set("MNQZ6", 20010)
    sim_f.place_order(OrderRequest("f-2", "MNQZ6", Side.BUY, 2))  # average 20005
    sim_l.execute_fill("MNQZ6", Side.SELL, 1, price="19995.5")
    sim_f.place_order(OrderRequest("f-3", "MNQZ6", Side.SELL, 3))  # -9.5 x 3 x $2
    assert sim_f.realized_pnl(LONG_AGO) == D("-57.00")
    assert sim_l.realized_pnl(LONG_AGO) == D("-9.00")  # -4.5 x $2
    assert sim_f.realized_pnl(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)) == D(0)


def test_sim_never_guesses_a_pnl_it_cannot_value():
    f = account("F")
    sim = SimBroker(f)
    sim.execute_fill("ZB", Side.BUY, 1, price=110)  # no point value known for ZB
    sim.execute_fill("ZB", Side.SELL, 1, price=111)
    with pytest.raises(PermanentBrokerError, match="ZB cannot be valued: no point value"):
        sim.realized_pnl(LONG_AGO)
    g = account("G")
    SimBroker(g).execute_fill("YMH7", Side.BUY, 1)  # no price known for YMH7 yet
    SimBroker(g).execute_fill("YMH7", Side.SELL, 1, price=40000)
    with pytest.raises(PermanentBrokerError, match="has no price"):
        SimBroker(g).realized_pnl(LONG_AGO)
    # opening without a price changes nothing realised
    h = account("H")
    SimBroker(h).execute_fill("RTYH7", Side.BUY, 1)
    assert SimBroker(h).realized_pnl(LONG_AGO) == D(0)


@pytest.mark.parametrize("bad", [-5, 0, "nan", "Infinity", "abc", True, None])
def test_sim_refuses_a_bad_price_and_writes_nothing(bad):
    f = account("F")
    with pytest.raises(ValueError, match="finite number > 0"):
        SimBroker.price_set("MNQ", bad)
    if bad is not None:
        with pytest.raises(ValueError, match="finite number > 0"):
            SimBroker(f).execute_fill("MNQ", Side.BUY, 1, price=bad)
    assert SimBroker(f).positions() == {}
