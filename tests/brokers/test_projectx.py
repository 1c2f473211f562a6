"""The ProjectX adapter against the local ProjectX Gateway, over loopback (no patching)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import Iterator

import pytest

from accounts.models import TradingAccount
from brokers.base import (
    BrokerEvent,
    Fill,
    OrderOutcomeUnknown,
    OrderRequest,
    OrderUpdate,
    PermanentBrokerError,
    PositionUpdate,
    Session,
    SessionRefused,
    TransientBrokerError,
)
from brokers.projectx import ProjectXBroker, ProjectXStream, token_expiry
from brokers.registry import adapter_class, broker_choices
from brokers.sessions import session_load, session_save
from core.trading import Side
from devkit.localvenue.projectx import ProjectXVenue

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def venue() -> Iterator[ProjectXVenue]:
    v = ProjectXVenue().start()
    assert isinstance(v, ProjectXVenue)
    yield v
    v.stop()


def _account(venue: ProjectXVenue, name: str, **creds: str) -> TradingAccount:
    external = venue.account_add(name)
    return TradingAccount.objects.create(
        name=name, broker="projectx", external_id=external,
        credentials=json.dumps({**venue.credentials(external), **creds}))


@pytest.fixture
def px(venue: ProjectXVenue, request: pytest.FixtureRequest) -> ProjectXBroker:
    """An account at the venue whose listener has logged in (its session stored)."""
    acct = _account(venue, f"px-{request.node.name}"[:64])
    adapter = ProjectXBroker(acct)
    session = adapter.session_obtain(None)
    assert session is not None
    session_save(acct.pk, session, obtained_by="test listener")
    return adapter


def order(cid: str, side: str = "buy", qty: int = 2, symbol: str = "ESZ6") -> OrderRequest:
    return OrderRequest(cid, symbol, Side(side), qty)


def ext(px: ProjectXBroker) -> str:
    return px.account.external_id


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def events_take(stream: ProjectXStream, n: int, timeout: float = 5.0) -> list[BrokerEvent]:
    got: list[BrokerEvent] = []
    async with asyncio.timeout(timeout):
        while len(got) < n:
            got += await stream.receive()
    return got


# --- registry and credentials ----------------------------------------------------------------
def test_projectx_is_a_registered_kind():
    assert adapter_class("projectx") is ProjectXBroker
    assert ("projectx", ProjectXBroker.label) in broker_choices()


def test_credentials_clean_defaults_and_normalises_urls():
    cleaned = ProjectXBroker.credentials_clean(
        {"username": " me ", "api_key": "k", "api_url": "https://gw.example.com/api/"})
    assert cleaned == {"username": "me", "api_key": "k", "api_url": "https://gw.example.com",
                       "rtc_url": "https://rtc.topstepx.com"}


@pytest.mark.parametrize(("values", "error"), [
    ({"api_key": "k"}, "missing: User name"),
    ({"username": "me", "api_key": ""}, "missing: API key"),
    ({"username": "me", "api_key": "k", "api_url": "ftp://x"}, "api_url: not an http"),
    ({"username": "me", "api_key": "k", "rtc_url": "rtc.example.com"}, "rtc_url: not an http"),
])
def test_bad_credentials_are_refused_with_what_is_wrong(values, error):
    with pytest.raises(ValueError, match=error):
        ProjectXBroker.credentials_clean(values)


def test_external_id_must_be_the_integer_account_id(venue):
    acct = _account(venue, "bad-ext")
    acct.external_id = "TOPSTEP-1"
    with pytest.raises(PermanentBrokerError, match="'TOPSTEP-1' is not a ProjectX account id"):
        ProjectXBroker(acct).place_order(order("x1"))


def test_credentials_that_are_not_json_are_a_clear_permanent_error(venue):
    acct = _account(venue, "bad-json")
    acct.credentials = "user:key"
    with pytest.raises(PermanentBrokerError, match="credentials are not JSON"):
        ProjectXBroker(acct).session_obtain(None)


# --- sessions ---------------------------------------------------------------------------------
def test_login_reads_the_expiry_from_the_token(venue):
    session = ProjectXBroker(_account(venue, "login")).session_obtain(None)
    assert session is not None
    left = session.expires_at - dt.datetime.now(dt.UTC)
    assert dt.timedelta(hours=23) < left <= dt.timedelta(hours=24)
    assert token_expiry("not-a-jwt") > dt.datetime.now(dt.UTC) + dt.timedelta(hours=23)


def test_a_good_session_is_kept_and_one_running_out_renewed_by_validate(venue):
    adapter = ProjectXBroker(_account(venue, "renew"))
    fresh = adapter.session_obtain(None)
    logins = venue.calls.get("/api/Auth/loginKey", 0)
    assert adapter.session_obtain(fresh) is fresh
    venue.token_ttl = 120.0  # tokens now last two minutes: inside the renewal window
    try:
        short = adapter.session_obtain(None)
        assert short is not None
        validates = venue.calls.get("/api/Auth/validate", 0)
        renewed = adapter.session_obtain(short)
    finally:
        venue.token_ttl = 24 * 3600.0
    assert renewed is not None
    assert renewed.token != short.token
    assert venue.calls["/api/Auth/validate"] == validates + 1
    assert venue.calls["/api/Auth/loginKey"] == logins + 1  # only the short session's login


def test_a_revoked_session_is_replaced_by_a_new_login(venue):
    adapter = ProjectXBroker(_account(venue, "revoked"))
    venue.token_ttl = 120.0
    try:
        current = adapter.session_obtain(None)
    finally:
        venue.token_ttl = 24 * 3600.0
    venue.tokens_expire()
    again = adapter.session_obtain(current)
    assert again is not None
    assert again.token != current.token
    assert again.expires_at - dt.datetime.now(dt.UTC) > dt.timedelta(hours=23)


def test_refused_login_is_permanent_and_says_why(venue):
    adapter = ProjectXBroker(_account(venue, "wrongkey", api_key="nope"))
    with pytest.raises(PermanentBrokerError, match="refused: InvalidCredentials"):
        adapter.session_obtain(None)


def test_no_stored_session_is_transient_and_place_never_logs_in(venue):
    adapter = ProjectXBroker(_account(venue, "nosession"))
    logins = venue.calls.get("/api/Auth/loginKey", 0)
    with pytest.raises(TransientBrokerError, match="no session: the listener has not logged in"):
        adapter.place_order(order("ns1"))
    assert venue.calls.get("/api/Auth/loginKey", 0) == logins
    assert venue.orders(adapter.account.external_id) == []


def test_a_placement_says_when_the_venue_acknowledged_it_before_its_fill_was_read_back(
        venue, px):
    """Order/place's answer is the acknowledgement (the latency a trader compares); the
    read-back that learns the fill comes after it. A look-up acknowledges nothing."""
    from core import clock

    before = clock.now()
    result = px.place_order(order("ack1"))
    after = clock.now()
    assert result.status == "filled"
    assert result.acknowledged_at is not None
    assert before <= result.acknowledged_at <= after
    found = px.find_order("ack1")
    assert found is not None
    assert found.acknowledged_at is None


def test_a_401_reloads_the_session_the_listener_renewed(venue, px):
    """The listener stored a new token; the worker's cached one is stale until the 401,
    which reads the store again and sends once more, with the new one."""
    from brokers.models import BrokerSession

    assert px.place_order(order("r1")).status == "filled"
    stale = _session(px)
    venue.tokens_revoke()  # the cached token is refused from now on
    fresh = px.session_obtain(None)  # the listener logged in again meanwhile
    assert fresh is not None
    BrokerSession.objects.filter(account=px.account).update(token=fresh.token)
    assert session_load(px.account.pk) == stale  # this worker's cache
    assert px.place_order(order("r2")).status == "filled"
    assert venue.positions(ext(px)) == {"ESZ6": 4}
    assert session_load(px.account.pk, fresh=True).token == fresh.token  # type: ignore[union-attr]


def test_a_session_the_venue_refuses_before_its_expiry_is_dropped_not_kept(venue, px):
    """Revoked (a key reset, a session limit): the order fails transiently without
    running, and the stored session is dropped, so that the listener logs in again at
    once instead of at the token's expiry, up to a day later."""
    assert px.place_order(order("v1")).status == "filled"
    venue.tokens_revoke()
    with pytest.raises(SessionRefused, match=r"401.*logs in again") as caught:
        px.place_order(order("v2"))
    assert not isinstance(caught.value, OrderOutcomeUnknown)  # refused: it did not run
    assert len(venue.orders(ext(px))) == 1
    assert session_load(px.account.pk, fresh=True) is None
    with pytest.raises(TransientBrokerError, match="no session"):
        px.place_order(order("v2"))
    session = px.session_obtain(None)  # what the listener does next
    assert session is not None
    session_save(px.account.pk, session)
    assert px.place_order(order("v2")).status == "filled"


def test_a_worker_never_drops_the_session_the_listener_has_just_stored(venue, px):
    """The refused token is compared with the stored one first: a new one stays."""
    from brokers.sessions import session_drop

    refused = _session(px)
    venue.tokens_revoke()
    replacement = px.session_obtain(None)
    assert replacement is not None
    session_save(px.account.pk, replacement)
    assert session_drop(px.account.pk, token=refused.token) is False
    assert session_load(px.account.pk, fresh=True) == replacement


# --- orders -----------------------------------------------------------------------------------
def test_market_order_fills_and_carries_the_client_id_as_custom_tag(venue, px):
    result = px.place_order(order("cp1-1-0", "sell", 3))
    assert (result.status, result.filled_qty, result.client_order_id) == ("filled", 3, "cp1-1-0")
    assert (result.symbol, result.side, result.qty) == ("ESZ6", Side.SELL, 3)
    [sent] = venue.orders(ext(px))
    assert (sent["customTag"], sent["type"], sent["side"], sent["size"]) == ("cp1-1-0", 2, 1, 3)
    assert sent["contractId"] == "CON.F.US.EP.Z26"
    assert str(sent["id"]) == result.broker_order_id
    assert px.positions() == {"ESZ6": -3}


def test_the_same_client_id_twice_never_makes_a_second_order(venue, px):
    first = px.place_order(order("dup", "buy", 2))
    second = px.place_order(order("dup", "buy", 2))
    assert second.broker_order_id == first.broker_order_id
    assert (second.status, second.filled_qty) == ("filled", 2)
    assert len(venue.orders(ext(px))) == 1
    assert venue.positions(ext(px)) == {"ESZ6": 2}


def test_lost_response_is_unknown_then_found_filled_and_nothing_doubles(venue, px):
    venue.inject("lose_response")
    with pytest.raises(OrderOutcomeUnknown):
        px.place_order(order("lost", "buy", 2))
    found = px.find_order("lost")
    assert found is not None
    assert (found.status, found.filled_qty, found.symbol, found.side, found.qty) == (
        "filled", 2, "ESZ6", Side.BUY, 2)
    again = px.place_order(order("lost", "buy", 2))  # what a blind resend would get
    assert again.broker_order_id == found.broker_order_id
    assert len(venue.orders(ext(px))) == 1
    assert venue.positions(ext(px)) == {"ESZ6": 2}


def test_find_order_of_an_id_never_sent_is_none_and_a_failed_lookup_transient(venue, px):
    assert px.find_order("never") is None
    venue.inject("lookup_fail")
    with pytest.raises(TransientBrokerError, match="503"):
        px.find_order("never")


def test_rejection_is_permanent_and_burns_the_tag(venue, px):
    venue.inject("reject")
    with pytest.raises(PermanentBrokerError, match="OrderRejected"):
        px.place_order(order("rej"))
    with pytest.raises(PermanentBrokerError, match="rejected"):
        px.place_order(order("rej"))  # the tag is taken by the rejected order
    assert [o["status"] for o in venue.orders(ext(px))] == [5]
    found = px.find_order("rej")
    assert found is not None
    assert (found.status, found.filled_qty) == ("rejected", 0)
    assert px.place_order(order("rej-2")).status == "filled"  # a new tag goes through


def test_a_rate_limit_is_a_refusal_nothing_executes(venue, px):
    venue.inject("rate_limit")
    with pytest.raises(TransientBrokerError) as caught:
        px.place_order(order("t1"))
    assert not isinstance(caught.value, OrderOutcomeUnknown)  # refused before it ran
    assert caught.value.retry_after == 1.0
    assert venue.orders(ext(px)) == []
    assert px.find_order("t1") is None
    assert px.place_order(order("t1")).status == "filled"


def test_a_5xx_on_a_placement_is_an_unknown_outcome_whether_or_not_it_ran(venue, px):
    """The Gateway does not document a 5xx as "nothing ran" (project-x-py calls it an
    uncertain submission): the adapter cannot tell the two faults apart, the look-up can."""
    venue.inject("http_5xx")  # refused before executing
    with pytest.raises(OrderOutcomeUnknown, match="HTTP 503"):
        px.place_order(order("t5"))
    assert venue.orders(ext(px)) == []
    assert px.find_order("t5") is None
    assert px.place_order(order("t5")).status == "filled"
    venue.inject("http_5xx_after")  # executed, then the error
    with pytest.raises(OrderOutcomeUnknown, match="HTTP 503"):
        px.place_order(order("t6", "sell", 1))
    found = px.find_order("t6")
    assert found is not None
    assert (found.status, found.filled_qty, found.side, found.qty) == (
        "filled", 1, Side.SELL, 1)
    again = px.place_order(order("t6", "sell", 1))  # a blind resend: the same order
    assert again.broker_order_id == found.broker_order_id
    assert venue.positions(ext(px)) == {"ESZ6": 1}
    assert len(venue.orders(ext(px))) == 2


def test_partial_fills_are_summed(venue, px):
    venue.inject("partial")
    result = px.place_order(order("part", "buy", 5))
    assert (result.status, result.filled_qty) == ("filled", 5)
    assert [t["size"] for t in venue.trades(ext(px))] == [2, 3]
    found = px.find_order("part")
    assert found is not None
    assert found.filled_qty == 5


def test_unknown_contract_is_permanent_and_sends_nothing(venue, px):
    with pytest.raises(PermanentBrokerError, match="no contract named 'ZZZ9'"):
        px.place_order(order("u1", symbol="ZZZ9"))
    assert venue.orders(ext(px)) == []
    assert px.contract_id("MNQZ6") == "CON.F.US.MNQ.Z26"
    assert px.contract_name("CON.F.US.ENQ.Z26") == "NQZ6"
    with pytest.raises(PermanentBrokerError, match="unknown contract id"):
        px.contract_name("CON.F.US.XX.Z26")


# --- positions --------------------------------------------------------------------------------
def test_positions_are_signed_and_flat_is_omitted(venue, px):
    venue.trade(ext(px), "ESZ6", "buy", 2)
    venue.trade(ext(px), "NQZ6", "sell", 3)
    venue.trade(ext(px), "MESZ6", "buy", 1)
    venue.trade(ext(px), "MESZ6", "sell", 1)
    assert px.positions() == {"ESZ6": 2, "NQZ6": -3}


def test_fills_cursor_is_the_newest_trade_in_the_positions_read(venue, px):
    assert px.positions() == {}
    assert px.fills_cursor() == 0
    first = int(venue.trade(ext(px), "ESZ6", "buy", 1))
    assert px.positions() == {"ESZ6": 1}
    assert px.fills_cursor() == first
    later = int(venue.trade(ext(px), "ESZ6", "buy", 1))
    assert later > first  # a fill after the read is numbered above the cursor


def test_flatten_closes_the_symbol(venue, px):
    venue.trade(ext(px), "MNQZ6", "sell", 4)
    px.flatten("MNQZ6")
    assert venue.positions(ext(px)) == {}
    with pytest.raises(PermanentBrokerError, match="closing MNQZ6 refused"):
        px.flatten("MNQZ6")


def _open_orders(venue: ProjectXVenue, external: str) -> list[int]:
    return [o["id"] for o in venue.orders(external) if o["status"] == 1]


def test_orders_cancel_all_cancels_the_working_orders_of_this_account_only(venue, px):
    other = _account(venue, "px-cancel-other")
    venue.trade(ext(px), "ESZ6", "buy", 1)
    mine = {int(venue.working_order_add(ext(px), "ESZ6", "sell", 1)),
            int(venue.working_order_add(ext(px), "NQZ6", "buy", 2))}
    theirs = int(venue.working_order_add(other.external_id, "ESZ6", "buy", 1))
    assert set(_open_orders(venue, ext(px))) == mine

    assert px.orders_cancel_all() == 2
    assert _open_orders(venue, ext(px)) == []
    assert {o["id"]: o["status"] for o in venue.orders(ext(px))
            if o["id"] in mine} == dict.fromkeys(mine, 3)  # cancelled, never filled
    assert _open_orders(venue, other.external_id) == [theirs]
    assert venue.positions(ext(px)) == {"ESZ6": 1}  # cancelling closes nothing


def test_orders_cancel_all_of_many_accounts_asks_each_and_keeps_each_error_in_place(venue, px):
    """The adapters' default `orders_cancel_all_many` (a flatten of many followers): each
    account asked on its own thread, an unreachable one's error returned in its place."""
    other, away = _account(venue, "px-many-other"), _account(venue, "px-many-away")
    for acct in (other, away):
        session_save(acct.pk, ProjectXBroker(acct).session_obtain(None),  # type: ignore[arg-type]
                     obtained_by="test listener")
    venue.working_order_add(ext(px), "ESZ6", "sell", 1)
    venue.working_order_add(other.external_id, "ESZ6", "buy", 1)
    venue.working_order_add(other.external_id, "NQZ6", "buy", 1)
    kept = int(venue.working_order_add(away.external_id, "ESZ6", "buy", 1))
    venue.set_reachable(False, account_external_id=away.external_id)
    try:
        counts = ProjectXBroker.orders_cancel_all_many([px.account, other, away])
    finally:
        venue.set_reachable(True, account_external_id=away.external_id)
    assert counts[:2] == [1, 2]
    assert isinstance(counts[2], TransientBrokerError)
    assert (_open_orders(venue, ext(px)), _open_orders(venue, other.external_id)) == ([], [])
    assert _open_orders(venue, away.external_id) == [kept]


def test_orders_cancel_all_with_nothing_working_is_zero(venue, px):
    venue.trade(ext(px), "ESZ6", "buy", 1)
    assert px.orders_cancel_all() == 0


def test_orders_cancel_all_of_an_unreachable_account_is_transient(venue, px):
    order_id = int(venue.working_order_add(ext(px), "ESZ6", "buy", 1))
    venue.set_reachable(False, account_external_id=ext(px))
    try:
        with pytest.raises(TransientBrokerError):
            px.orders_cancel_all()
    finally:
        venue.set_reachable(True, account_external_id=ext(px))
    assert _open_orders(venue, ext(px)) == [order_id]
    assert px.orders_cancel_all() == 1


# --- the stream -----------------------------------------------------------------------------
def _session(px: ProjectXBroker) -> Session:
    session = session_load(px.account.pk)
    assert session is not None
    return session


def test_stream_subscribes_and_maps_trades_and_positions(venue, px):
    async def scenario() -> list[BrokerEvent]:
        stream = px.stream(_session(px))
        assert isinstance(stream, ProjectXStream)
        await stream.open()
        try:
            await asyncio.to_thread(venue.trade, ext(px), "NQZ6", "sell", 2)
            return await events_take(stream, 3)
        finally:
            await stream.close()
            await stream.close()  # twice is fine

    events = run(scenario())
    account_id = int(ext(px))
    mine = [(t, a) for _c, t, a in venue.hub_invocations if a in ([], [account_id])]
    assert [t for t, _a in mine[-4:]] == ["SubscribeAccounts", "SubscribeOrders",
                                          "SubscribePositions", "SubscribeTrades"]
    [trade] = venue.trades(ext(px))
    update, fill, position = events  # type: ignore[misc]
    # the order's push comes first here (the venue's order of pushes is not documented)
    assert update == OrderUpdate(None, str(trade["orderId"]), "NQZ6", "filled", 2, 2)
    assert isinstance(fill, Fill)
    assert isinstance(position, PositionUpdate)
    assert (fill.fill_id, fill.seq, fill.symbol, fill.side, fill.qty, fill.client_order_id) == (
        str(trade["id"]), trade["id"], "NQZ6", Side.SELL, 2, None)
    assert fill.time.tzinfo is not None
    assert position == PositionUpdate("NQZ6", -2)


def test_late_fill_comes_on_the_stream_with_the_client_id(venue, px):
    async def scenario() -> tuple[object, list[BrokerEvent]]:
        stream = px.stream(_session(px))
        await stream.open()
        try:
            venue.inject("late_fill")
            result = await asyncio.to_thread(px.place_order, order("cp7-1-0", "buy", 2))
            return result, await events_take(stream, 3)
        finally:
            await stream.close()

    result, events = run(scenario())  # type: ignore[misc]
    assert (result.status, result.filled_qty) == ("accepted", 0)
    fill = next(e for e in events if isinstance(e, Fill))
    assert (fill.client_order_id, fill.qty, fill.symbol) == ("cp7-1-0", 2, "ESZ6")
    assert PositionUpdate("ESZ6", 2) in events
    found = px.find_order("cp7-1-0")
    assert found is not None
    assert (found.status, found.filled_qty) == ("filled", 2)


def test_dropped_stream_raises_and_a_new_one_resubscribes_without_replay(venue, px):
    async def scenario() -> list[BrokerEvent]:
        stream = px.stream(_session(px))
        await stream.open()
        await asyncio.to_thread(venue.trade, ext(px), "ESZ6", "buy", 1)
        await events_take(stream, 4)  # the order's settlement, the fill, the position,
        await asyncio.to_thread(venue.streams_drop)  # the account (its balance less fees)
        with pytest.raises(TransientBrokerError, match="closed"):
            await events_take(stream, 1)
        await stream.close()
        subscribed = len(venue.hub_invocations)
        again = px.stream(_session(px))
        await again.open()
        assert len(venue.hub_invocations) == subscribed + 4
        try:
            await asyncio.to_thread(venue.trade, ext(px), "ESZ6", "sell", 1)
            return await events_take(again, 3)
        finally:
            await again.close()

    events = run(scenario())
    fills = [e for e in events if isinstance(e, Fill)]
    assert [(f.side, f.qty) for f in fills] == [(Side.SELL, 1)]  # the first trade not replayed
    assert PositionUpdate("ESZ6", 0) in events


def test_a_close_record_from_the_hub_is_transient(venue, px):
    async def scenario() -> None:
        stream = px.stream(_session(px))
        await stream.open()
        try:
            await asyncio.to_thread(venue.streams_drop, close_message=True)
            with pytest.raises(TransientBrokerError, match="Server restarting"):
                await events_take(stream, 1)
        finally:
            await stream.close()

    run(scenario())


# --- the hub's connection forms (SignalR): negotiate v1, the older v0, skipNegotiation -----
async def _raw_hub_handshake(venue: ProjectXVenue, token: str, *, negotiate: str | None
                             ) -> tuple[dict[str, object] | None, str]:
    """A bare SignalR client: negotiate as asked (None: skip it), open the socket, shake
    hands; the negotiate answer and the handshake's reply."""
    import httpx
    from websockets.asyncio.client import connect

    answer: dict[str, object] | None = None
    query = f"access_token={token}"
    if negotiate is not None:
        async with httpx.AsyncClient() as client:
            reply = await client.post(f"{venue.url}/hubs/user/negotiate",
                                      params={**dict([negotiate.split("=")] if negotiate
                                                     else []), "access_token": token})
        assert reply.status_code == 200, reply.text
        answer = reply.json()
        key = "connectionToken" if answer.get("negotiateVersion") == 1 else "connectionId"
        query += f"&id={answer[key]}"
    async with connect(f"ws://127.0.0.1:{venue.port}/hubs/user?{query}") as ws:
        await ws.send(json.dumps({"protocol": "json", "version": 1}) + "\x1e")
        handshake = await asyncio.wait_for(ws.recv(), 5)
    return answer, str(handshake)


def test_the_local_hub_takes_every_signalr_connection_form(venue, px):
    """As the Gateway's does: negotiate version 1 (a connectionToken), the older
    version 0 (asked for by sending no version: a connectionId only), and no negotiate at
    all (skipNegotiation, straight to the WebSocket)."""
    token = _session(px).token
    v1, shook = run(_raw_hub_handshake(venue, token, negotiate="negotiateVersion=1"))
    assert shook == "{}\x1e"
    assert v1 is not None
    assert (v1["negotiateVersion"], "connectionToken" in v1) == (1, True)
    v0, shook = run(_raw_hub_handshake(venue, token, negotiate=""))
    assert shook == "{}\x1e"
    assert v0 is not None
    assert (v0["negotiateVersion"], "connectionToken" in v0) == (0, False)
    _none, shook = run(_raw_hub_handshake(venue, token, negotiate=None))
    assert shook == "{}\x1e"
    assert venue.hub_forms[-3:] == ["negotiate-v1", "negotiate-v0", "skip-negotiation"]


def _stream_delivers_a_trade(venue: ProjectXVenue, px: ProjectXBroker) -> list[BrokerEvent]:
    async def scenario() -> list[BrokerEvent]:
        stream = px.stream(_session(px))
        await stream.open()
        try:
            await asyncio.to_thread(venue.trade, ext(px), "ESZ6", "buy", 1)
            got: list[BrokerEvent] = []
            async with asyncio.timeout(5):  # until the trade's position (the last push)
                while not any(isinstance(e, PositionUpdate) for e in got):
                    got += await stream.receive()
            return got
        finally:
            await stream.close()
    return run(scenario())  # type: ignore[return-value]


@pytest.mark.parametrize(("version", "available", "form"), [
    (1, True, "negotiate-v1"), (0, True, "negotiate-v0"), (1, False, "skip-negotiation"),
], ids=["negotiate-v1", "negotiate-v0", "no-negotiate-endpoint"])
def test_the_stream_connects_to_a_hub_of_each_form(venue, px, version, available, form):
    """An older server answers negotiate with version 0 (no connectionToken: the
    connectionId opens the socket); a hub without the endpoint is connected to directly."""
    venue.negotiate_version, venue.negotiate_available = version, available
    try:
        events = _stream_delivers_a_trade(venue, px)
    finally:
        venue.negotiate_version, venue.negotiate_available = 1, True
    assert [type(e) for e in events if isinstance(e, Fill | PositionUpdate)] == [
        Fill, PositionUpdate]
    assert venue.hub_forms[-1] == form


def test_a_hub_without_negotiate_refusing_the_token_is_a_refused_session(venue, px):
    stale = _session(px)
    venue.tokens_revoke()
    venue.negotiate_available = False

    async def scenario() -> None:
        stream = px.stream(stale)
        try:
            with pytest.raises(SessionRefused, match="401"):
                await stream.open()
        finally:
            await stream.close()

    try:
        run(scenario())
    finally:
        venue.negotiate_available = True


def test_stream_with_a_refused_token_fails_open_transiently(venue, px):
    stale = _session(px)
    venue.tokens_expire()

    async def scenario() -> None:
        stream = px.stream(stale)
        with pytest.raises(TransientBrokerError, match="401"):
            await stream.open()
        await stream.close()
        with pytest.raises(TransientBrokerError, match="no session"):
            await px.stream(None).open()

    run(scenario())


# --- connection test and secrets ------------------------------------------------------------
def test_connection_test_reports_the_account_and_its_positions(venue, px):
    venue.trade(ext(px), "ESZ6", "buy", 1)
    summary = px.connection_test()
    assert f"account {ext(px)}" in summary
    assert "ESZ6 +1" in summary


def test_connection_test_says_what_failed(venue):
    wrong = _account(venue, "ct-wrong", api_key="not-the-key")
    with pytest.raises(PermanentBrokerError, match="login of 'trader' refused"):
        ProjectXBroker(wrong).connection_test()
    other = _account(venue, "ct-other")
    other.external_id = "999999"
    with pytest.raises(PermanentBrokerError, match="account 999999 is not among"):
        ProjectXBroker(other).connection_test()


def test_secrets_never_reach_logs_reprs_or_errors(venue, px, caplog):
    caplog.set_level(logging.DEBUG)
    stored = _session(px)
    token = stored.token
    errors: list[str] = []
    venue.inject("lose_response")
    for call in (lambda: px.place_order(order("s1")),
                 lambda: ProjectXBroker(_account(venue, "s-wrong", api_key="bad-key-123"))
                 .connection_test()):
        try:
            call()
        except Exception as exc:
            errors.append(f"{exc!r} {exc}")
    venue.tokens_expire()
    try:
        px.place_order(order("s2"))
    except TransientBrokerError as exc:
        errors.append(f"{exc!r} {exc}")
    text = caplog.text + " ".join(errors) + repr(stored) + repr(px.stream(stored))
    assert len(errors) == 3
    for secret in (venue.api_key, token, "bad-key-123"):
        assert secret not in text


def test_a_fill_of_an_order_the_stream_never_saw_gets_its_tag_from_rest(venue, px):
    venue.late_fill_delay = 1.0
    venue.order_event_first = False  # the trade comes before any word of its order
    lookups = venue.calls.get("/api/Order/searchById", 0)
    try:
        venue.inject("late_fill")
        result = px.place_order(order("cp9-1-0", "sell", 1))  # before the stream opens

        async def scenario() -> list[BrokerEvent]:
            stream = px.stream(_session(px))
            await stream.open()
            try:
                return await events_take(stream, 1)
            finally:
                await stream.close()

        events = run(scenario())
    finally:
        venue.late_fill_delay = 0.3
        venue.order_event_first = True
    assert result.status == "accepted"
    assert venue.calls["/api/Order/searchById"] == lookups + 2  # place's read-back, the stream's
    fill = events[0]  # type: ignore[index]
    assert isinstance(fill, Fill)
    assert (fill.client_order_id, fill.side, fill.qty) == ("cp9-1-0", Side.SELL, 1)


def test_hub_pings_are_answered_and_never_delivered_as_events():
    chatty = ProjectXVenue(ping_interval=0.02).start()
    try:
        assert isinstance(chatty, ProjectXVenue)
        external = chatty.account_add("pinged")
        acct = TradingAccount(pk=10**9, name="pinged", broker="projectx", external_id=external,
                              credentials=json.dumps(chatty.credentials(external)))
        adapter = ProjectXBroker(acct)
        session = adapter.session_obtain(None)

        async def scenario() -> list[BrokerEvent]:
            stream = adapter.stream(session)
            await stream.open()
            try:
                await asyncio.sleep(0.2)  # ten pings arrive meanwhile
                await asyncio.to_thread(chatty.trade, external, "ESZ6", "buy", 3)
                return await events_take(stream, 3)
            finally:
                await stream.close()

        events = run(scenario())
        deadline = time.monotonic() + 2
        while chatty.hub_pings_received < 3 and time.monotonic() < deadline:
            time.sleep(0.01)  # the answers are on their way
        answered = chatty.hub_pings_received
    finally:
        chatty.stop()
    assert [type(e) for e in events] == [  # type: ignore[union-attr]
        OrderUpdate, Fill, PositionUpdate]
    assert answered >= 3


def test_outage_is_transient_and_nothing_executes(venue, px):
    assert px.place_order(order("o0")).status == "filled"  # a kept-alive connection exists
    venue.set_reachable(False)
    try:
        with pytest.raises(TransientBrokerError, match="unreachable") as caught:
            px.place_order(order("o1"))
        assert not isinstance(caught.value, OrderOutcomeUnknown)
        with pytest.raises(TransientBrokerError, match="unreachable"):
            run(px.stream(_session(px)).open())
    finally:
        venue.set_reachable(True)
    assert len(venue.orders(ext(px))) == 1
    assert px.place_order(order("o1")).status == "filled"


# --- what the replay drives: one account's faults and outage, contracts, redeliveries --------
def test_a_fault_aimed_at_one_account_is_spent_by_that_account_only(venue, px):
    other = ProjectXBroker(_account(venue, "px-other-fault"))
    session_save(other.account.pk, other.session_obtain(None) or _session(px))
    venue.inject("http_5xx", 2, account_external_id=ext(px))
    assert other.place_order(order("f-other-1")).status == "filled"
    for cid in ("f-mine-1", "f-mine-2"):
        with pytest.raises(TransientBrokerError, match="HTTP 503"):
            px.place_order(order(cid))
    assert px.place_order(order("f-mine-3")).status == "filled"
    assert venue.faults.left("http_5xx") == 0


def test_one_accounts_outage_leaves_the_others_trading(venue, px):
    other = ProjectXBroker(_account(venue, "px-other-outage"))
    session_save(other.account.pk, other.session_obtain(None) or _session(px))

    async def stream_opened() -> None:
        stream = px.stream(_session(px))
        try:
            await stream.open()
            await events_take(stream, 1, timeout=2)
        finally:
            await stream.close()

    venue.set_reachable(False, account_external_id=ext(px))
    try:
        # The gateway answers the account's requests 503: whether an order ran cannot
        # be told from that, so it is an unknown outcome (and the look-up fails too).
        with pytest.raises(OrderOutcomeUnknown, match="503"):
            px.place_order(order("out-1"))
        with pytest.raises(TransientBrokerError, match="503"):
            px.find_order("out-1")
        with pytest.raises(TransientBrokerError):
            px.positions()
        with pytest.raises(TransientBrokerError):
            run(stream_opened())
        assert other.place_order(order("out-other")).status == "filled"
    finally:
        venue.set_reachable(True, account_external_id=ext(px))
    assert venue.orders(ext(px)) == []
    assert px.find_order("out-1") is None  # what the copier asks once it is back
    assert px.place_order(order("out-1")).status == "filled"


def test_an_outage_drops_the_accounts_open_stream(venue, px):
    async def scenario() -> None:
        stream = px.stream(_session(px))
        await stream.open()
        try:
            await asyncio.to_thread(venue.set_reachable, False, account_external_id=ext(px))
            with pytest.raises(TransientBrokerError, match="closed"):
                await events_take(stream, 1, timeout=3)
        finally:
            await stream.close()
            await asyncio.to_thread(venue.set_reachable, True, account_external_id=ext(px))

    run(scenario())


def test_a_contract_listed_by_name_is_found_and_traded(venue, px):
    venue.contract_add("MNQ")
    venue.contract_add("MNQ")  # idempotent
    assert px.place_order(order("root-1", symbol="MNQ", qty=3)).status == "filled"
    assert venue.positions(ext(px)) == {"MNQ": 3}
    with pytest.raises(ValueError, match="letters and digits"):
        venue.contract_add("M$Q")


def test_a_trade_given_its_fill_id_again_is_delivered_again_and_moves_nothing(venue, px):
    async def scenario() -> list[BrokerEvent]:
        stream = px.stream(_session(px))
        await stream.open()
        try:
            first = await asyncio.to_thread(venue.trade, ext(px), "ESZ6", "buy", 1)
            got = await events_take(stream, 3)
            again = await asyncio.to_thread(venue.trade, ext(px), "ESZ6", "buy", 1, first)
            assert again == first
            await asyncio.to_thread(venue.trade, ext(px), "NQZ6", "sell", 1)
            return got + await events_take(stream, 3)
        finally:
            await stream.close()

    events = run(scenario())
    assert [f.symbol for f in events if isinstance(f, Fill)] == ["ESZ6", "NQZ6"]  # once each
    assert venue.positions(ext(px)) == {"ESZ6": 1, "NQZ6": -1}
    assert len(venue.trades(ext(px))) == 2
    with pytest.raises(ValueError, match="no trade"):
        venue.trade(ext(px), "ESZ6", "buy", 1, "999999")


# --- working orders: held, filled in parts, cancelled ---------------------------------------
def test_an_order_cancelled_after_a_part_filled_is_cancelled_with_what_filled(venue, px):
    venue.inject("hold", account_external_id=ext(px))
    placed = px.place_order(order("cp-h1", "sell", 3))
    assert (placed.status, placed.filled_qty, placed.qty) == ("accepted", 0, 3)
    assert venue.positions(ext(px)) == {}
    venue.held_fill(ext(px), 1)
    working = px.find_order("cp-h1")
    assert working is not None
    assert (working.status, working.filled_qty) == ("accepted", 1)
    venue.held_cancel(ext(px))
    found = px.find_order("cp-h1")
    assert found is not None
    assert (found.status, found.filled_qty, found.qty) == ("cancelled", 1, 3)
    assert venue.positions(ext(px)) == {"ESZ6": -1}


def test_a_placement_the_venue_fills_in_part_and_cancels_reads_back_cancelled(venue, px):
    venue.inject("cancel_rest", account_external_id=ext(px))
    placed = px.place_order(order("cp-c1", "sell", 3))
    assert (placed.status, placed.filled_qty, placed.qty) == ("cancelled", 1, 3)
    assert venue.positions(ext(px)) == {"ESZ6": -1}


def test_an_order_cancelled_with_nothing_filled_is_cancelled_not_rejected(venue, px):
    venue.inject("hold", account_external_id=ext(px))
    px.place_order(order("cp-h0", "buy", 2))
    venue.held_cancel(ext(px))
    found = px.find_order("cp-h0")
    assert found is not None
    assert (found.status, found.filled_qty) == ("cancelled", 0)


def test_order_cancel_cancels_a_working_order_and_answers_a_settled_one(venue, px):
    assert px.order_cancel("never-sent") is None
    venue.inject("hold", count=2, account_external_id=ext(px))
    px.place_order(order("cp-w1", "buy", 3))
    px.place_order(order("cp-w2", "buy", 2))
    venue.held_fill(ext(px), 2)
    cancelled = px.order_cancel("cp-w1")
    assert cancelled is not None
    assert (cancelled.status, cancelled.filled_qty, cancelled.qty) == ("cancelled", 2, 3)
    assert venue.held_left(ext(px)) == 1
    assert px.order_cancel("cp-w1") == cancelled  # again: the same answer, nothing sent
    venue.held_fill(ext(px))  # cp-w2 fills before the cancel reaches it
    filled = px.order_cancel("cp-w2")
    assert filled is not None
    assert (filled.status, filled.filled_qty) == ("filled", 2)
    assert venue.positions(ext(px)) == {"ESZ6": 4}


def test_order_cancel_of_an_unreachable_account_is_transient(venue, px):
    venue.inject("hold", account_external_id=ext(px))
    px.place_order(order("cp-u1", "buy", 1))
    venue.set_reachable(False, account_external_id=ext(px))
    try:
        with pytest.raises(TransientBrokerError):
            px.order_cancel("cp-u1")
    finally:
        venue.set_reachable(True, account_external_id=ext(px))
    assert venue.held_left(ext(px)) == 1


def test_held_fill_refuses_what_is_not_there_and_a_hold_is_the_accounts_own(venue, px):
    with pytest.raises(ValueError, match="no held order"):
        venue.held_fill(ext(px))
    venue.inject("hold", account_external_id=ext(px))
    other = ProjectXBroker(_account(venue, "px-other-hold"))
    session_save(other.account.pk, other.session_obtain(None), obtained_by="test")  # type: ignore[arg-type]
    assert other.place_order(order("cp-o1", "buy", 1)).status == "filled"
    px.place_order(order("cp-m1", "buy", 2))
    for bad in (0, 3):
        with pytest.raises(ValueError, match="from 1 to 2"):
            venue.held_fill(ext(px), bad)
    with pytest.raises(ValueError, match="no held order"):
        venue.held_cancel(ext(other))
    venue.held_fill(ext(px))
    assert venue.held_left(ext(px)) == 0


def test_the_stream_says_when_an_order_settles_once_after_its_fills(venue, px):
    async def scenario() -> list[BrokerEvent]:
        stream = px.stream(_session(px))
        await stream.open()
        try:
            venue.inject("hold", account_external_id=ext(px))
            await asyncio.to_thread(px.place_order, order("cp-s1", "sell", 3))
            await asyncio.to_thread(venue.held_fill, ext(px), 1)
            got = await events_take(stream, 2)
            await asyncio.to_thread(venue.held_cancel, ext(px))
            got += await events_take(stream, 1)
            await asyncio.to_thread(px.place_order, order("cp-s2", "buy", 1))
            return got + await events_take(stream, 3)
        finally:
            await stream.close()

    events = run(scenario())
    updates = [e for e in events if isinstance(e, OrderUpdate)]  # type: ignore[union-attr]
    [held] = [o for o in venue.orders(ext(px)) if o["customTag"] == "cp-s1"]
    [plain] = [o for o in venue.orders(ext(px)) if o["customTag"] == "cp-s2"]
    assert updates == [OrderUpdate("cp-s1", str(held["id"]), "ESZ6", "cancelled", 1, 3),
                       OrderUpdate("cp-s2", str(plain["id"]), "ESZ6", "filled", 1, 1)]
    fills = [e for e in events if isinstance(e, Fill)]  # type: ignore[union-attr]
    assert [(f.client_order_id, f.qty) for f in fills] == [("cp-s1", 1), ("cp-s2", 1)]
    assert events.index(updates[0]) > events.index(fills[0])  # type: ignore[union-attr]


def test_a_placement_answered_part_filled_and_working_counts_none_of_it(venue, px):
    """Its part's fill comes on the stream: counted there, once (a look-up says it)."""
    venue.inject("part_hold", account_external_id=ext(px))
    placed = px.place_order(order("cp-p1", "buy", 3))
    assert (placed.status, placed.filled_qty) == ("accepted", 0)
    assert "filled 1 of 3 so far" in placed.message
    found = px.find_order("cp-p1")
    assert found is not None
    assert (found.status, found.filled_qty) == ("accepted", 1)
