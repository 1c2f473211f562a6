"""A worker's calls on a Rithmic account (brokers.rithmic.ops) through the real Redis to the
holder of its login's session, and on to the loopback gateway of test_rithmic_plant: an
order placed and its fill read back, an order whose answer was lost found by its tag,
positions, equity and cancel-all; what crosses is the copier's records, as they were."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
import redis.asyncio as aioredis
from django.conf import settings

from brokers import gateway as gw
from brokers.base import OrderOutcomeUnknown, OrderRequest, PermanentBrokerError
from brokers.rithmic import ops
from brokers.rithmic.session import LoginSession
from core.trading import Side
from tests.brokers.test_rithmic_plant import anyio_backend, gateway  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("clean_redis")]
LOGIN = gw.login_key("ws://loopback", "Rithmic Test", "trader1")


async def test_a_workers_calls_reach_the_session_through_its_holder(gateway):  # noqa: F811
    session = LoginSession(gateway.login(), ["APEX-1-01"], label="F1")
    await session.open()
    client = aioredis.Redis.from_url(settings.REDIS_URL)
    holder = asyncio.create_task(gw.GatewayHolder(client, LOGIN, ops.handler(session),
                                                  name="listener").run())
    asker = ops.Asker(gw.Gateway.from_url(settings.REDIS_URL), LOGIN, "APEX-1-01", "F1")
    try:
        await asyncio.sleep(0.2)  # the holder takes the login
        placed = await asyncio.to_thread(asker.place,
                                         OrderRequest("cp1-8-1", "MNQZ6", Side.BUY, 2))
        assert (placed.status, placed.filled_qty, placed.broker_order_id) == (
            "filled", 2, "B-cp1-8-1")
        gateway.lose_next = True
        session.order.request_timeout = 0.3
        with pytest.raises(OrderOutcomeUnknown):
            await asyncio.to_thread(asker.place, OrderRequest("cp1-8-2", "MNQZ6", Side.SELL, 1))
        found = await asyncio.to_thread(asker.find, "cp1-8-2")
        assert found is not None
        assert (found.status, found.filled_qty, found.side, found.qty) == (
            "filled", 1, Side.SELL, 1)
        assert await asyncio.to_thread(asker.find, "cp1-8-9") is None
        assert await asyncio.to_thread(asker.positions) == {"MNQZ6": 2}
        eq = await asyncio.to_thread(asker.equity)
        assert (eq.balance, eq.open_pnl, eq.contracts) == (
            Decimal("50125.50"), Decimal("-40.00"), 2)
        assert await asyncio.to_thread(asker.cancel_all) == 0
        with pytest.raises(PermanentBrokerError, match="exchange of ZBZ6 is not known"):
            await asyncio.to_thread(asker.place, OrderRequest("cp1-8-3", "ZBZ6", Side.BUY, 1))
    finally:
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)
        await session.close()
        await client.aclose()
