"""R|Protocol's messages read as the copier's records and its orders written as R|Protocol's
fields (brokers.rithmic.records), on real messages: each fill counted once by its id, a
reject before a fill a refusal, a cancel keeping what filled, the default trade route
taken, AUTO on every order, the venue's amounts to the cent and never guessed."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from brokers.base import OrderRequest, PermanentBrokerError
from brokers.rithmic import protocol, records
from brokers.rithmic.protocol import TemplateId as T
from core.trading import Side

ORDER = OrderRequest("cp1-7-3", "MNQZ6", Side.BUY, 4)


def note(**fields: object):
    return protocol.decode(protocol.encode(protocol.request(
        T.EXCHANGE_ORDER_NOTIFICATION, **{"basket_id": "B1", "user_tag": "cp1-7-3",
                                          "symbol": "MNQZ6", "exchange": "CME",
                                          "transaction_type": 1, **fields})))


def test_an_order_goes_out_as_the_copiers_market_order_marked_auto():
    fields = records.new_order_fields(ORDER, account_id="APEX-1-01", fcm_id="F", ib_id="I",
                                      route="Rithmic Order Routing")
    assert fields == {"user_tag": "cp1-7-3", "account_id": "APEX-1-01", "fcm_id": "F",
                      "ib_id": "I", "symbol": "MNQZ6", "exchange": "CME", "quantity": 4,
                      "transaction_type": records.BUY, "price_type": records.MARKET,
                      "duration": records.DAY, "manual_or_auto": records.AUTO,
                      "trade_route": "Rithmic Order Routing"}
    protocol.request(T.REQUEST_NEW_ORDER, **fields)  # every field is the template's own
    sell = records.new_order_fields(OrderRequest("c", "GCG7", Side.SELL, 1), account_id="A",
                                    fcm_id="F", ib_id="I", route="r")
    assert (sell["transaction_type"], sell["exchange"]) == (records.SELL, "COMEX")


@pytest.mark.parametrize(("symbol", "error"), [("ZBZ6", "exchange of ZBZ6 is not known"),
                                              ("MNQZ6", "quantity must be positive")])
def test_an_order_the_copier_cannot_name_or_size_is_refused_for_good(symbol, error):
    with pytest.raises(PermanentBrokerError, match=error):
        records.new_order_fields(OrderRequest("c", symbol, Side.BUY, 0 if symbol == "MNQZ6"
                                              else 1), account_id="A", fcm_id="F", ib_id="I",
                                 route="r")


def _route(exchange: str, name: str, default: bool):
    return protocol.request(T.RESPONSE_TRADE_ROUTES, exchange=exchange, trade_route=name,
                            is_default=default)


def test_the_trade_route_marked_default_is_taken_not_the_first():
    routes = [_route("CME", "first", False), _route("CME", "firm's", True),
              _route("CBOT", "other", True)]
    assert records.route_pick(routes, "CME") == "firm's"
    assert records.route_pick([_route("CME", "only", False)], "CME") == "only"
    with pytest.raises(PermanentBrokerError, match="2 trade routes for CME and none marked"):
        records.route_pick(routes[:1] * 2, "CME")
    with pytest.raises(PermanentBrokerError, match="no trade route for NYMEX"):
        records.route_pick(routes, "NYMEX")


def test_fills_are_counted_once_by_their_id_and_settle_the_order():
    parts = [note(notify_type=5, fill_id="f1", fill_size=1),
             note(notify_type=5, fill_id="f1", fill_size=1, is_snapshot=True),  # said again
             note(notify_type=5, fill_id="f2", fill_size=2)]
    working = records.order_state(ORDER, "B1", parts)
    assert (working.status, working.filled_qty, working.broker_order_id) == ("accepted", 3, "B1")
    done = records.order_state(ORDER, "B1", [*parts, note(notify_type=5, fill_id="f3",
                                                          fill_size=1)])
    assert (done.status, done.filled_qty) == ("filled", 4)


def test_a_reject_before_a_fill_is_a_refusal_and_a_cancel_keeps_what_filled():
    refused = records.order_state(ORDER, "B1", [note(notify_type=6, text="margin")])
    assert (refused.status, refused.filled_qty, refused.message) == ("rejected", 0, "margin")
    rest = records.order_state(ORDER, "B1", [note(notify_type=5, fill_id="f1", fill_size=1),
                                             note(notify_type=3, text="venue cancelled")])
    assert (rest.status, rest.filled_qty, rest.message) == ("cancelled", 1, "venue cancelled")


def test_a_fill_notification_is_the_copiers_fill_with_its_ids():
    fill = records.fill_of(note(notify_type=5, fill_id="f9", fill_size=2, ssboe=1764700000,
                                usecs=250000, transaction_type=2))
    assert fill is not None
    assert (fill.fill_id, fill.symbol, fill.side, fill.qty, fill.client_order_id,
            fill.broker_order_id) == ("f9", "MNQZ6", Side.SELL, 2, "cp1-7-3", "B1")
    assert fill.time == dt.datetime(2025, 12, 2, 18, 26, 40, 250000, tzinfo=dt.UTC)
    assert records.fill_of(note(notify_type=1)) is None  # a status is no fill
    with pytest.raises(ValueError, match="without an id"):
        records.fill_of(note(notify_type=5, fill_size=1))


def test_positions_and_equity_from_the_pnl_plant():
    updates = [protocol.request(T.INSTRUMENT_PNL_POSITION_UPDATE, symbol=s, net_quantity=q)
               for s, q in (("MNQZ6", 2), ("ESZ6", -1), ("MNQZ6", 3), ("GCG7", 0))]
    held = records.positions_of(updates)
    assert held == {"ESZ6": -1, "MNQZ6": 3}
    account = protocol.request(T.ACCOUNT_PNL_POSITION_UPDATE, account_balance="49875.504",
                               open_position_pnl="-120.25")
    eq = records.equity_of(account, held)
    assert (eq.balance, eq.open_pnl, eq.contracts) == (Decimal("49875.50"), Decimal("-120.25"), 4)
    with pytest.raises(ValueError, match="account_balance is not a number"):
        records.equity_of(protocol.request(T.ACCOUNT_PNL_POSITION_UPDATE,
                                           account_balance="n/a"), held)
