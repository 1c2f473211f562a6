"""One login's ORDER session (brokers.rithmic.session) against the loopback gateway of
test_rithmic_plant: readied as R|Protocol asks (login info, the default trade route, the
account list, a subscription per account), an order sent AUTO with its user tag and its
fill read back by its basket, an account the login may not trade refused for good."""

from __future__ import annotations

from decimal import Decimal

import pytest

from brokers.base import OrderOutcomeUnknown, OrderRequest, PermanentBrokerError
from brokers.rithmic import records
from brokers.rithmic.protocol import TemplateId as T
from brokers.rithmic.session import LoginSession
from core.trading import Side
from tests.brokers.test_rithmic_plant import anyio_backend, gateway  # noqa: F401 (fixtures)

pytestmark = pytest.mark.anyio


async def test_the_session_is_readied_for_its_accounts(gateway):  # noqa: F811
    session = LoginSession(gateway.login(), ["APEX-1-02"], label="F1")
    await session.open()
    try:
        assert (session.fcm_id, session.ib_id, session.user_type) == ("FCM1", "IB1", 3)
        assert session.listed == ["APEX-1-01", "APEX-1-02"]
        asked = [m.template_id for m in gateway.received
                 if m.template_id not in (T.REQUEST_HEARTBEAT,)]
        assert asked == [T.REQUEST_LOGIN, T.REQUEST_LOGIN_INFO, T.REQUEST_TRADE_ROUTES,
                         T.REQUEST_ACCOUNT_LIST, T.REQUEST_SUBSCRIBE_FOR_ORDER_UPDATES,
                         T.REQUEST_LOGIN, T.REQUEST_PNL_POSITION_UPDATES]
        logins = [m for m in gateway.received if m.template_id == T.REQUEST_LOGIN]
        assert [m.infra_type for m in logins] == [2, 4]  # ORDER first, then PNL; no ticker
        updates = next(m for m in gateway.received
                       if m.template_id == T.REQUEST_PNL_POSITION_UPDATES)
        assert (updates.request, updates.account_id) == (1, "APEX-1-02")
        subscribe = gateway.received[asked.index(T.REQUEST_SUBSCRIBE_FOR_ORDER_UPDATES)]
        assert (subscribe.account_id, subscribe.fcm_id, subscribe.ib_id) == (
            "APEX-1-02", "FCM1", "IB1")
        assert records.route_pick(session.routes, "CME") == "Firm Route"
    finally:
        await session.close()


async def test_an_order_goes_out_auto_with_its_tag_and_its_fill_is_read_by_its_basket(
        gateway):  # noqa: F811
    session = LoginSession(gateway.login(), ["APEX-1-01"], label="F1")
    await session.open()
    try:
        result = await session.place(OrderRequest("cp1-4-1", "MNQZ6", Side.SELL, 2),
                                     "APEX-1-01")
        assert (result.status, result.filled_qty, result.broker_order_id) == (
            "filled", 2, "B-cp1-4-1")
        sent = next(m for m in gateway.received if m.template_id == T.REQUEST_NEW_ORDER)
        assert (sent.user_tag, sent.manual_or_auto, sent.price_type, sent.transaction_type,
                sent.trade_route, sent.exchange, sent.account_id) == (
            "cp1-4-1", records.AUTO, records.MARKET, records.SELL, "Firm Route", "CME",
            "APEX-1-01")
        resting = await session.place(OrderRequest("cp1-4-2", "MNQZ6", Side.BUY, 7),
                                      "APEX-1-01")
        assert (resting.status, resting.filled_qty) == ("accepted", 0)
        fill = await session.unasked.get()
        assert (fill.template_id, fill.user_tag) == (T.EXCHANGE_ORDER_NOTIFICATION, "cp1-4-1")
    finally:
        await session.close()


async def test_an_account_the_login_may_not_trade_is_refused_for_good(gateway):  # noqa: F811
    session = LoginSession(gateway.login(), ["APEX-9-99"], label="F1")
    with pytest.raises(PermanentBrokerError, match="may not trade APEX-9-99"):
        await session.open()
    await session.close()


async def test_positions_and_equity_are_the_pnl_plants_snapshot(gateway):  # noqa: F811
    session = LoginSession(gateway.login(), ["APEX-1-01"], label="F1")
    await session.open()
    try:
        assert await session.positions("APEX-1-01") == {"MNQZ6": 2}  # flat ESZ6 left out
        gateway.book["APEX-1-01"] = {"MNQZ6": 0, "ESZ6": -3}
        gateway.balance = "49900.00"
        eq = await session.equity("APEX-1-01")
        assert (eq.balance, eq.open_pnl, eq.contracts) == (
            Decimal("49900.00"), Decimal("-40.00"), 3)
        assert await session.positions("APEX-1-01") == {"ESZ6": -3}
    finally:
        await session.close()


async def test_a_lost_answer_is_in_doubt_and_the_look_up_finds_the_order_once(gateway):  # noqa: F811
    """The venue executed the order and its answer never came: `place` says it is in doubt
    (never resent), and `find` by its user tag finds it filled; a tag never sent is None."""
    session = LoginSession(gateway.login(), ["APEX-1-01"], label="F1")
    await session.open()
    session.order.request_timeout = 0.3
    try:
        gateway.lose_next = True
        with pytest.raises(OrderOutcomeUnknown, match="no answer to RequestNewOrder"):
            await session.place(OrderRequest("cp1-5-1", "MNQZ6", Side.BUY, 3), "APEX-1-01")
        found = await session.find("cp1-5-1", "APEX-1-01")
        assert found is not None
        assert (found.status, found.filled_qty, found.broker_order_id, found.symbol,
                found.side, found.qty) == ("filled", 3, "B-cp1-5-1", "MNQZ6", Side.BUY, 3)
        assert [o.user_tag for o in gateway.orders] == ["cp1-5-1"]  # nothing doubled
        assert await session.find("cp1-5-9", "APEX-1-01") is None
        await session.place(OrderRequest("cp1-5-2", "MNQZ6", Side.SELL, 7), "APEX-1-01")
        resting = await session.find("cp1-5-2", "APEX-1-01")
        assert resting is not None
        assert (resting.status, resting.filled_qty, resting.side) == ("accepted", 0, Side.SELL)
    finally:
        await session.close()


async def test_cancel_all_counts_the_working_orders_and_a_replay_counts_each_fill_once(
        gateway):  # noqa: F811
    session = LoginSession(gateway.login(), ["APEX-1-01"], label="F1")
    await session.open()
    try:
        for tag, qty in (("cp1-6-1", 2), ("cp1-6-2", 7), ("cp1-6-3", 7)):
            await session.place(OrderRequest(tag, "MNQZ6", Side.BUY, qty), "APEX-1-01")
        assert await session.cancel_all("APEX-1-01") == 2  # the two resting ones
        assert await session.cancel_all("APEX-1-01") == 0  # nothing works any more
        fills = await session.replay("APEX-1-01", 0, 2**31 - 1)
        assert [(f.fill_id, f.qty, f.client_order_id) for f in fills] == [
            ("F-cp1-6-1", 2, "cp1-6-1")]
        again = await session.replay("APEX-1-01", 0, 2**31 - 1)
        assert [f.fill_id for f in again] == ["F-cp1-6-1"]  # the same fill, once each time
    finally:
        await session.close()
