"""One R|Protocol plant session (brokers.rithmic.plant) against a WebSocket server on
loopback that speaks the framing and the session's messages: login with the venue's
refusals, answers matched to their requests by `user_msg` (also when they come in the
other order), answers of many parts, notifications kept in order, heartbeats on half
the interval, a template nobody knows skipped, a ForcedLogout ending the session and
failing what waited, a request with no answer in time said so, never resent."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from brokers.base import PermanentBrokerError, TransientBrokerError
from brokers.rithmic import protocol
from brokers.rithmic.plant import ForcedOut, Login, Plant, PlantClosed, PlantTimeout
from brokers.rithmic.protocol import TemplateId as T

pytestmark = pytest.mark.anyio
PASSWORD = "s3cret-pw"


class Gateway:
    """The session's side of a Rithmic gateway; what each test needs is switched on it."""

    def __init__(self) -> None:
        self.received: list[Any] = []
        self.heartbeat_interval = 0.2
        self.silent: set[int] = set()  # templates it never answers
        self.swap_next = False  # answer the next two requests in the other order
        self.connections: list[ServerConnection] = []
        # the PNL plant's book: account -> symbol -> net position, and its balance
        self.book: dict[str, dict[str, int]] = {"APEX-1-01": {"MNQZ6": 2, "ESZ6": 0}}
        self.balance = "50125.50"
        self.orders: list[Any] = []  # every new order taken, as sent
        self.lose_next = False  # execute the next order and never answer it
        self.cancelled: set[str] = set()  # the user tags of orders cancelled
        self._held: list[tuple[ServerConnection, Any]] = []
        self.url = ""

    async def handle(self, ws: ServerConnection) -> None:
        self.connections.append(ws)
        with contextlib.suppress(Exception):
            async for frame in ws:
                assert isinstance(frame, bytes)
                message = protocol.decode(frame)
                self.received.append(message)
                await self.answer(ws, message)

    async def send(self, ws: ServerConnection, template: int, **fields: Any) -> None:
        await ws.send(protocol.encode(protocol.request(template, **fields)))

    async def answer(self, ws: ServerConnection, m: Any) -> None:
        t, ids = m.template_id, list(getattr(m, "user_msg", []))
        if t in self.silent or t in (T.REQUEST_HEARTBEAT, T.REQUEST_LOGOUT):
            return
        if t == T.REQUEST_LOGIN:
            if m.password != PASSWORD:
                await self.send(ws, T.RESPONSE_LOGIN, user_msg=ids,
                                rp_code=["1033", "password is invalid"])
            elif m.app_name != "abcd:copier":
                await self.send(ws, T.RESPONSE_LOGIN, user_msg=ids,
                                rp_code=["13", "permission denied"])
            else:
                await self.send(ws, T.RESPONSE_LOGIN, user_msg=ids, rp_code=["0"],
                                fcm_id="FCM1", ib_id="IB1",
                                heartbeat_interval=self.heartbeat_interval)
        elif t == T.REQUEST_ACCOUNT_LIST:  # two parts, then the end
            for account in ("APEX-1-01", "APEX-1-02"):
                await self.send(ws, T.RESPONSE_ACCOUNT_LIST, user_msg=ids,
                                rq_handler_rp_code=["0"], account_id=account)
            await self.send(ws, T.RESPONSE_ACCOUNT_LIST, user_msg=ids, rp_code=["0"])
        elif t == T.REQUEST_NEW_ORDER:
            self.orders.append(m)
            if self.lose_next:  # executed at the venue; the answer is lost
                self.lose_next = False
                return
            if self.swap_next:
                self._held.append((ws, m))
                if len(self._held) == 2:
                    self.swap_next = False
                    for held_ws, held in reversed(self._held):
                        await self.order_answer(held_ws, held)
                return
            await self.order_answer(ws, m)
        elif t == T.REQUEST_LOGIN_INFO:
            await self.send(ws, T.RESPONSE_LOGIN_INFO, user_msg=ids, rp_code=["0"],
                            fcm_id="FCM1", ib_id="IB1", user_type=3)
        elif t == T.REQUEST_TRADE_ROUTES:
            for name, default in (("First Route", False), ("Firm Route", True)):
                await self.send(ws, T.RESPONSE_TRADE_ROUTES, user_msg=ids,
                                rq_handler_rp_code=["0"], exchange="CME", trade_route=name,
                                is_default=default)
            await self.send(ws, T.RESPONSE_TRADE_ROUTES, user_msg=ids, rp_code=["0"])
        elif t == T.REQUEST_SUBSCRIBE_FOR_ORDER_UPDATES:
            await self.send(ws, T.RESPONSE_SUBSCRIBE_FOR_ORDER_UPDATES, user_msg=ids,
                            rp_code=["0"])
        elif t == T.REQUEST_PNL_POSITION_SNAPSHOT:  # the book as notices, then the end
            for symbol, qty in self.book.get(m.account_id, {}).items():
                await self.send(ws, T.INSTRUMENT_PNL_POSITION_UPDATE, is_snapshot=True,
                                account_id=m.account_id, symbol=symbol, exchange="CME",
                                net_quantity=qty)
            await self.send(ws, T.ACCOUNT_PNL_POSITION_UPDATE, is_snapshot=True,
                            account_id=m.account_id, account_balance=self.balance,
                            open_position_pnl="-40.00")
            await self.send(ws, T.RESPONSE_PNL_POSITION_SNAPSHOT, user_msg=ids, rp_code=["0"])
        elif t == T.REQUEST_PNL_POSITION_UPDATES:
            await self.send(ws, T.RESPONSE_PNL_POSITION_UPDATES, user_msg=ids, rp_code=["0"])
        elif t == T.REQUEST_CANCEL_ALL_ORDERS:
            for o in [o for o in self.orders if o.account_id == m.account_id
                      and o.quantity == 7 and o.user_tag not in self.cancelled]:
                self.cancelled.add(o.user_tag)
                await self.send(ws, T.EXCHANGE_ORDER_NOTIFICATION, notify_type=3,
                                user_tag=o.user_tag, basket_id=f"B-{o.user_tag}",
                                account_id=o.account_id, symbol=o.symbol, quantity=o.quantity)
            await self.send(ws, T.RESPONSE_CANCEL_ALL_ORDERS, user_msg=ids, rp_code=["0"])
        elif t == T.REQUEST_REPLAY_EXECUTIONS:  # every fill of the account, then the end
            for o in self.orders:
                if o.account_id == m.account_id and o.quantity != 7:
                    await self.send(ws, T.EXCHANGE_ORDER_NOTIFICATION, notify_type=5,
                                    user_tag=o.user_tag, basket_id=f"B-{o.user_tag}",
                                    account_id=o.account_id, symbol=o.symbol,
                                    transaction_type=o.transaction_type, quantity=o.quantity,
                                    fill_id=f"F-{o.user_tag}", fill_size=o.quantity)
            await self.send(ws, T.RESPONSE_REPLAY_EXECUTIONS, user_msg=ids, rp_code=["0"])
        elif t == T.REQUEST_SHOW_ORDERS:  # each order of the account as a snapshot, the end
            mine = [o for o in self.orders if o.account_id == m.account_id]
            for o in mine:
                filled = 0 if o.quantity == 7 else o.quantity
                kind = 5 if filled else 3 if o.user_tag in self.cancelled else 1
                await self.send(ws, T.EXCHANGE_ORDER_NOTIFICATION, is_snapshot=True,
                                notify_type=kind, user_tag=o.user_tag,
                                basket_id=f"B-{o.user_tag}", account_id=o.account_id,
                                symbol=o.symbol, quantity=o.quantity,
                                transaction_type=o.transaction_type,
                                fill_id=f"F-{o.user_tag}" if filled else "",
                                fill_size=filled, total_fill_size=filled)
            await self.send(ws, T.RESPONSE_SHOW_ORDERS, user_msg=ids,
                            rp_code=["0"] if mine else ["7", "no data"])
        else:
            await self.send(ws, T.REJECT, user_msg=ids, rp_code=["1034", "not supported"])

    async def order_answer(self, ws: ServerConnection, m: Any) -> None:
        await self.send(ws, T.RESPONSE_NEW_ORDER, user_msg=list(m.user_msg),
                        user_tag=m.user_tag, basket_id=f"B-{m.user_tag}", rp_code=["0"])
        if m.quantity == 7:  # rests: no fill
            return
        await self.send(ws, T.EXCHANGE_ORDER_NOTIFICATION, user_tag=m.user_tag, notify_type=5,
                        fill_id=f"F-{m.user_tag}", fill_size=m.quantity,
                        basket_id=f"B-{m.user_tag}", transaction_type=m.transaction_type or 1,
                        symbol=m.symbol)

    def login(self, **changed: str) -> Login:
        fields = {"gateway": self.url, "system_name": "Rithmic Test", "user": "trader1",
                  "password": PASSWORD, "app_name": "abcd:copier", "app_version": "1.0",
                  **changed}
        return Login(**fields)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    gw = Gateway()
    async with serve(gw.handle, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        gw.url = f"ws://127.0.0.1:{port}"
        yield gw


async def _plant(gw: Gateway, **changed: str) -> Plant:
    plant = Plant(gw.login(**changed), protocol.ORDER_PLANT, label="F1", request_timeout=1.0)
    await plant.open()
    return plant


async def test_a_login_says_who_it_is_and_keeps_what_the_gateway_answered(gateway):
    plant = await _plant(gateway)
    try:
        login = gateway.received[0]
        assert (login.template_id, login.user, login.system_name, login.infra_type,
                login.app_name, login.template_version) == (
            T.REQUEST_LOGIN, "trader1", "Rithmic Test", 2, "abcd:copier", "3.9")
        assert (plant.fcm_id, plant.ib_id, plant.heartbeat_interval) == ("FCM1", "IB1", 0.2)
        assert PASSWORD not in repr(plant.login)
    finally:
        await plant.close()
    assert gateway.received[-1].template_id == T.REQUEST_LOGOUT


@pytest.mark.parametrize(("changed", "words"), [
    ({"password": "wrong"}, "rp_code 1033 (password is invalid)"),
    ({"app_name": "zzzz:other"}, "rp_code 13 (permission denied)"),
])
async def test_a_login_only_a_person_can_mend_is_permanent_with_the_venues_words(
        gateway, changed, words):
    with pytest.raises(PermanentBrokerError, match=re.escape(words)):
        await _plant(gateway, **changed)


async def test_the_ticker_and_history_plants_are_never_opened(gateway):
    for infra in (protocol.TICKER_PLANT, protocol.HISTORY_PLANT):
        with pytest.raises(ValueError, match="only the ORDER and PNL plants"):
            Plant(gateway.login(), infra, label="F1")


async def test_an_unreachable_gateway_is_transient():
    plant = Plant(Login("ws://127.0.0.1:9", "Rithmic Test", "u", "p", "a", "1"),
                  protocol.ORDER_PLANT, label="F1")
    with pytest.raises(TransientBrokerError, match="cannot reach the gateway"):
        await plant.open()


async def test_an_answer_of_many_parts_is_every_part_and_its_end(gateway):
    plant = await _plant(gateway)
    try:
        parts = await plant.ask(T.REQUEST_ACCOUNT_LIST, fcm_id="FCM1", ib_id="IB1")
        assert [p.account_id for p in parts] == ["APEX-1-01", "APEX-1-02", ""]
        assert protocol.rp_code(parts[-1]).ok
        none = await plant.ask(T.REQUEST_SHOW_ORDERS, account_id="APEX-1-01")
        assert protocol.rp_code(none[-1]).no_data  # "no data" is an answer, not an error
    finally:
        await plant.close()


async def test_answers_find_their_requests_in_whatever_order_they_come(gateway):
    plant = await _plant(gateway)
    gateway.swap_next = True
    try:
        first, second = await asyncio.gather(
            plant.ask(T.REQUEST_NEW_ORDER, user_tag="cp-1", quantity=1),
            plant.ask(T.REQUEST_NEW_ORDER, user_tag="cp-2", quantity=2))
        assert (first[-1].user_tag, second[-1].user_tag) == ("cp-1", "cp-2")
        notices = [await plant.notices.get(), await plant.notices.get()]
        assert [(n.user_tag, n.fill_size) for n in notices] == [("cp-2", 2), ("cp-1", 1)]
    finally:
        await plant.close()


async def test_a_refusal_is_an_error_with_the_venues_words(gateway):
    plant = await _plant(gateway)
    try:
        with pytest.raises(TransientBrokerError, match=r"rp_code 1034 \(not supported\)"):
            await plant.ask(T.REQUEST_ACCOUNT_RMS_INFO, fcm_id="FCM1", ib_id="IB1")
        assert plant.is_open  # the session goes on
    finally:
        await plant.close()


async def test_heartbeats_go_out_on_half_the_interval(gateway):
    plant = await _plant(gateway)
    try:
        await asyncio.sleep(0.55)
        beats = [m for m in gateway.received if m.template_id == T.REQUEST_HEARTBEAT]
        assert 4 <= len(beats) <= 6  # every 0.1 s for an interval of 0.2 s
    finally:
        await plant.close()


async def test_a_template_nobody_knows_is_skipped_and_the_session_goes_on(gateway):
    plant = await _plant(gateway)
    try:
        odd = protocol.request(T.REJECT)
        odd.template_id = 358
        await gateway.connections[-1].send(protocol.encode(odd))
        await gateway.connections[-1].send(b"\x00\x00\x00\x05xx")  # a broken frame too
        parts = await plant.ask(T.REQUEST_NEW_ORDER, user_tag="cp-3", quantity=1)
        assert parts[-1].user_tag == "cp-3"
        assert (await plant.notices.get()).user_tag == "cp-3"  # nothing else was kept
    finally:
        await plant.close()


async def test_a_forced_logout_ends_the_session_and_fails_what_waited(gateway):
    plant = await _plant(gateway)
    gateway.silent.add(T.REQUEST_NEW_ORDER)
    try:
        waiting = asyncio.create_task(plant.ask(T.REQUEST_NEW_ORDER, user_tag="cp-4"))
        await asyncio.sleep(0.05)
        await gateway.send(gateway.connections[-1], T.FORCED_LOGOUT)
        with pytest.raises(ForcedOut, match="ForcedLogout"):
            await waiting
        assert isinstance(await plant.notices.get(), ForcedOut)
        with pytest.raises(ForcedOut):
            await plant.ask(T.REQUEST_SHOW_ORDERS)
        assert not plant.is_open
    finally:
        await plant.close()


async def test_a_request_with_no_answer_in_time_is_said_so_and_not_resent(gateway):
    plant = await _plant(gateway)
    gateway.silent.add(T.REQUEST_NEW_ORDER)
    try:
        with pytest.raises(PlantTimeout, match=r"no answer to RequestNewOrder \(312\)"):
            await plant.ask(T.REQUEST_NEW_ORDER, user_tag="cp-5", timeout=0.2)
        await asyncio.sleep(0.3)
        orders = [m for m in gateway.received if m.template_id == T.REQUEST_NEW_ORDER]
        assert [o.user_tag for o in orders] == ["cp-5"]
    finally:
        await plant.close()


async def test_a_socket_the_gateway_closes_fails_what_waited_and_says_so(gateway):
    plant = await _plant(gateway)
    gateway.silent.add(T.REQUEST_NEW_ORDER)
    try:
        waiting = asyncio.create_task(plant.ask(T.REQUEST_NEW_ORDER, user_tag="cp-6"))
        await asyncio.sleep(0.05)
        await gateway.connections[-1].close()
        with pytest.raises(PlantClosed, match="closed the socket"):
            await waiting
        assert isinstance(await plant.notices.get(), PlantClosed)
    finally:
        await plant.close()
