"""`BrokerAdapter.equity_read`, the account guard's number, read from the wire: the local
ProjectX Gateway's Account/search, open positions and bars, and the local Tradovate's cash
balance snapshot and risk status. No adapter is patched: prices are moved at the venue
(`price_set`), trades made there, and the firm's stop and the failures are the venue's own
switches (`account_lock`, `inject`)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal

import pytest

from accounts.models import TradingAccount
from brokers.base import (
    OrderRequest,
    PermanentBrokerError,
    SessionRefused,
    TransientBrokerError,
)
from brokers.projectx import ProjectXBroker
from brokers.registry import adapter_for, adapters_forget
from brokers.sessions import session_save
from brokers.tradovate import TradovateBroker
from core.trading import Side
from devkit.localvenue.projectx import ProjectXVenue
from devkit.localvenue.tradovate import TradovateVenue

pytestmark = pytest.mark.django_db(transaction=True)
D = Decimal
LONG_AGO = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)


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


def test_projectx_equity_is_the_balance_and_the_positions_at_their_last_prices(px_venue):
    px = _px(px_venue, "px-eq")
    ext = px.account.external_id
    flat = px.equity_read()
    assert (flat.balance, flat.open_pnl, flat.contracts, flat.can_trade) == (
        D(50000), D(0), 0, True)
    assert flat.source == "ProjectX: balance, positions at last bar"
    px_venue.price_set("MNQZ6", 20000)
    px.place_order(OrderRequest("eq-1", "MNQZ6", Side.BUY, 2))
    px_venue.price_set("MNQZ6", 19900.5)
    px_venue.trade(ext, "MNQZ6", "sell", 1)  # realises -99.5 x $2; 1 long left at 20000
    px_venue.price_set("ESZ6", 5000.25)
    px_venue.trade(ext, "ESZ6", "sell", 1)  # 1 short at 5000.25
    px_venue.price_set("MNQZ6", 20100)
    px_venue.price_set("ESZ6", 5010.25)
    eq = px.equity_read()
    # the venue's balance: the start, less the realised loss and every trade's fees
    assert eq.balance == D(str(px_venue.balance(ext))) == D("49799.52")
    assert eq.open_pnl == D(200) + D(-500)  # MNQ +100 x $2, ES short -10 x $50
    assert eq.contracts == 2


def test_projectx_reads_the_price_of_the_newest_bar_and_the_venue_builds_its_bars(px_venue):
    px = _px(px_venue, "px-bars")
    px_venue.contract_add("MYMZ6")
    px_venue.price_set("MYMZ6", 42000)
    px_venue.trade(px.account.external_id, "MYMZ6", "buy", 1)
    px_venue.price_set("MYMZ6", 42100)
    px_venue.price_set("MYMZ6", 41950)
    assert px.equity_read().open_pnl == D(-50) * D("0.5")  # $0.50 a point, the venue's
    cid = px.contract_id("MYMZ6")
    bars = px._call("/api/History/retrieveBars", {
        "contractId": cid, "live": False, "startTime": "2020-01-01T00:00:00Z",
        "endTime": "2100-01-01T00:00:00Z", "unit": 4, "unitNumber": 1, "limit": 5,
        "includePartialBar": True})["bars"]
    today = bars[0]
    assert (today["o"], today["h"], today["l"], today["c"], today["v"]) == (
        100.25, 42100, 100.25, 41950, 1)  # listed at 100.25 today, then moved
    closed = px._call("/api/History/retrieveBars", {
        "contractId": cid, "live": False, "startTime": "2020-01-01T00:00:00Z",
        "endTime": "2100-01-01T00:00:00Z", "unit": 4, "unitNumber": 1, "limit": 5,
        "includePartialBar": False})["bars"]
    assert closed == []  # every tick is today's: the only bar is still forming


def test_projectx_an_account_the_firm_stopped_cannot_trade_and_says_so(px_venue):
    px = _px(px_venue, "px-lock")
    px_venue.account_lock(px.account.external_id)
    eq = px.equity_read()
    assert (eq.can_trade, eq.balance) == (False, D(50000))
    assert "canTrade false" in eq.why
    px_venue.account_lock(px.account.external_id, locked=False)
    assert px.equity_read().can_trade is True


def test_projectx_refuses_every_order_of_an_account_the_firm_stopped(px_venue):
    """The venue's own stop is enforced by the venue: the copier's orders (a guard's
    flatten among them) are refused for good while `canTrade` is false."""
    px = _px(px_venue, "px-lock-orders")
    ext = px.account.external_id
    px.place_order(OrderRequest("px-lock-1", "MNQZ6", Side.BUY, 2))
    px_venue.account_lock(ext)
    with pytest.raises(PermanentBrokerError, match=r"AccountViolation \(errorCode 4\)"):
        px.place_order(OrderRequest("px-lock-2", "MNQZ6", Side.SELL, 2))
    assert px_venue.positions(ext) == {"MNQZ6": 2}
    px_venue.account_lock(ext, locked=False)
    px.place_order(OrderRequest("px-lock-3", "MNQZ6", Side.SELL, 2))
    assert px_venue.positions(ext) == {}


def test_projectx_a_5xx_is_transient_and_nothing_is_guessed(px_venue):
    px = _px(px_venue, "px-5xx")
    px_venue.inject("equity_5xx", 1, account_external_id=px.account.external_id)
    with pytest.raises(TransientBrokerError, match="Account/search: HTTP 503"):
        px.equity_read()
    assert px_venue.faults.left("equity_5xx") == 0
    assert px.equity_read().balance == D(50000)


def test_projectx_a_position_without_a_price_is_not_valued(px_venue):
    px = _px(px_venue, "px-noprice")
    px_venue.trade(px.account.external_id, "NQZ6", "buy", 1)
    px_venue.inject("no_prices", 1)
    with pytest.raises(PermanentBrokerError,
                       match="open P&L of NQZ6 cannot be valued: no price in the last 7 days"):
        px.equity_read()
    assert px_venue.faults.left("no_prices") == 0


def test_projectx_a_position_in_a_contract_the_venue_cannot_name_is_not_valued(px_venue):
    px = _px(px_venue, "px-hidden")
    px_venue.contract_add("M2KZ6")
    px_venue.trade(px.account.external_id, "M2KZ6", "sell", 2)
    px_venue.contract_hide("M2KZ6")
    with pytest.raises(PermanentBrokerError, match=r"cannot be valued: .*unknown contract id"):
        px.equity_read()


def test_projectx_a_contract_without_a_stated_tick_value_is_valued_by_its_root_or_not(
        px_venue):
    px = _px(px_venue, "px-ticks")
    px_venue.contract_add("MCLZ6", ticks_stated=False)  # micro crude: $100 a point, known
    px_venue.price_set("MCLZ6", 70)
    px_venue.trade(px.account.external_id, "MCLZ6", "buy", 1)
    px_venue.price_set("MCLZ6", 70.5)
    assert px.equity_read().open_pnl == D(50)
    px_venue.contract_add("QQZ6", ticks_stated=False)  # a root the copier does not know
    px_venue.trade(px.account.external_id, "QQZ6", "buy", 1)
    with pytest.raises(PermanentBrokerError,
                       match="open P&L of QQZ6 cannot be valued: no point value is known"):
        px.equity_read()


def test_projectx_a_refused_session_is_the_session_refused_path(px_venue):
    px = _px(px_venue, "px-401")
    px_venue.tokens_revoke()
    with pytest.raises(SessionRefused):
        px.equity_read()


# --- Tradovate -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tv_venue() -> Iterator[TradovateVenue]:
    v = TradovateVenue().start()
    assert isinstance(v, TradovateVenue)
    yield v
    v.stop()


def _tv(venue: TradovateVenue, name: str) -> TradovateBroker:
    external = venue.account_add(f"DEMO-{name}")
    acct = TradingAccount.objects.create(name=name, broker="tradovate", external_id=external,
                                         credentials=json.dumps(venue.credentials(external)))
    adapters_forget()
    adapter = adapter_for(acct)
    assert isinstance(adapter, TradovateBroker)
    session = adapter.session_obtain(None)
    assert session is not None
    session_save(acct.pk, session)
    return adapter


def test_tradovate_equity_is_the_snapshots_net_liq_and_open_pnl(tv_venue):
    tv = _tv(tv_venue, "tv-eq")
    flat = tv.equity_read()
    assert (flat.balance, flat.open_pnl, flat.contracts, flat.can_trade) == (
        D(50000), D(0), 0, True)
    assert flat.source == "Tradovate: cashBalance snapshot (netLiq)"
    tv_venue.price_set("MESZ6", 6000)
    tv.place_order(OrderRequest("tv-eq-1", "MESZ6", Side.BUY, 2))
    tv_venue.price_set("MESZ6", 6010)
    tv_venue.trade(tv.account.external_id, "MESZ6", "sell", 1)  # realises +10 x $5
    tv_venue.price_set("NQZ6", 21000)
    tv_venue.trade(tv.account.external_id, "NQZ6", "sell", 1)
    tv_venue.price_set("MESZ6", 6020)
    tv_venue.price_set("NQZ6", 21001.5)
    eq = tv.equity_read()
    assert eq.balance == D(50050)
    assert eq.open_pnl == D(100) - D(30)  # MES +20 x $5, NQ short -1.5 x $20
    assert eq.contracts == 2
    assert tv.realized_pnl(LONG_AGO) == D(50)  # the same snapshot's realised P&L


def test_tradovate_publishes_no_line_the_guard_may_act_at(tv_venue):
    """userAccountAutoLiq holds the drawdown's size and where its trail stops, not where the
    account is liquidated now (brokers.tradovate.adapter): no line is read, none invented."""
    tv = _tv(tv_venue, "tv-line")
    assert tv.equity_read().line is None
    tv_venue.price_set("MESZ6", 6000)
    tv.place_order(OrderRequest("tv-line-1", "MESZ6", Side.BUY, 1))
    tv_venue.price_set("MESZ6", 5990)
    assert tv.equity_read().line is None


@pytest.mark.parametrize("action", ["LiquidateOnlyModeImmediately", "LockTradingImmediately"])
def test_tradovate_an_account_the_firm_stopped_cannot_trade_and_says_why(tv_venue, action):
    tv = _tv(tv_venue, f"tv-lock-{action[:8]}")
    tv_venue.account_lock(tv.account.external_id, action=action)
    eq = tv.equity_read()
    assert (eq.can_trade, eq.why) == (False, f"adminAction {action}")
    tv_venue.account_lock(tv.account.external_id, locked=False)
    assert tv.equity_read().can_trade is True


def test_tradovate_in_liquidate_only_takes_orders_that_reduce_and_refuses_the_rest(tv_venue):
    tv = _tv(tv_venue, "tv-liq-orders")
    ext = tv.account.external_id
    tv.place_order(OrderRequest("tv-liq-1", "MESZ6", Side.BUY, 3))
    tv_venue.account_lock(ext)
    for cid, side, qty in (("tv-liq-2", Side.BUY, 1), ("tv-liq-3", Side.SELL, 5)):
        with pytest.raises(PermanentBrokerError, match=r"RiskCheck: .*liquidate-only"):
            tv.place_order(OrderRequest(cid, "MESZ6", side, qty))  # adds, or reverses
    assert tv.place_order(OrderRequest("tv-liq-4", "MESZ6", Side.SELL, 2)).filled_qty == 2
    assert tv.place_order(OrderRequest("tv-liq-5", "MESZ6", Side.SELL, 1)).filled_qty == 1
    assert tv_venue.positions(ext) == {}
    tv_venue.account_lock(ext, locked=False)


def test_tradovate_a_risk_status_it_may_not_read_says_nothing(tv_venue):
    tv = _tv(tv_venue, "tv-risk403")
    tv_venue.inject("risk_forbidden", 1, account_external_id=tv.account.external_id)
    eq = tv.equity_read()
    assert (eq.can_trade, eq.why, eq.balance) == (None, "", D(50000))


def test_tradovate_a_5xx_is_transient_and_nothing_is_guessed(tv_venue):
    tv = _tv(tv_venue, "tv-5xx")
    tv_venue.inject("equity_5xx", 1, account_external_id=tv.account.external_id)
    with pytest.raises(TransientBrokerError, match="getCashBalanceSnapshot: HTTP 503"):
        tv.equity_read()
    assert tv.equity_read().balance == D(50000)


def test_tradovate_a_snapshot_without_an_open_pnl_is_not_valued(tv_venue):
    tv = _tv(tv_venue, "tv-noprice")
    tv_venue.trade(tv.account.external_id, "ESZ6", "buy", 1)
    tv_venue.inject("no_prices", 1, account_external_id=tv.account.external_id)
    with pytest.raises(PermanentBrokerError, match=r"has no netLiq .*cannot be valued"):
        tv.equity_read()
