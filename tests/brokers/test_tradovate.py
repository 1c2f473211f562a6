"""The Tradovate adapter against a local Tradovate over loopback: REST, sessions, the socket."""

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
    AccountChanged,
    BrokerError,
    Fill,
    OrderOutcomeUnknown,
    OrderRequest,
    OrderUpdate,
    PermanentBrokerError,
    PositionUpdate,
    TransientBrokerError,
)
from brokers.registry import adapter_for, adapters_forget
from brokers.sessions import session_load, session_save
from brokers.tradovate import TradovateBroker, TradovateStream
from brokers.tradovate import stream as tradovate_stream
from core.trading import Side
from devkit.localvenue.tradovate import CONTRACTS, PASSWORD, TradovateVenue

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def venue() -> Iterator[TradovateVenue]:
    v = TradovateVenue(ws_quota=3, penalty_seconds=0.2).start()
    yield v
    v.stop()


def _account(venue: TradovateVenue, name: str = "T1", *, login: str | None = None,
             **creds: str) -> TradingAccount:
    """An account with a user of its own, or under the user `login` (made if new)."""
    external = venue.account_add(f"DEMO-{name}", login=login)
    values = {**venue.credentials(external), **creds}
    return TradingAccount.objects.create(name=name, broker="tradovate", external_id=external,
                                         credentials=json.dumps(values))


@pytest.fixture
def acct(venue: TradovateVenue) -> TradingAccount:
    return _account(venue)


@pytest.fixture
def broker(acct: TradingAccount) -> TradovateBroker:
    """An adapter whose listener has logged in (the session is stored)."""
    adapters_forget()
    adapter = adapter_for(acct)
    assert isinstance(adapter, TradovateBroker)
    session = adapter.session_obtain(None)
    assert session is not None
    session_save(acct.pk, session)
    return adapter


def order(cid: str, side: str = "buy", qty: int = 2, symbol: str = "MESZ6") -> OrderRequest:
    return OrderRequest(cid, symbol, Side(side), qty)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


# --- credentials and sessions ---------------------------------------------------------------
def test_registry_and_bad_credentials_input_say_what_is_wrong(venue: TradovateVenue) -> None:
    good = venue.credentials(venue.account_add("DEMO-X"))
    assert TradovateBroker.credentials_clean(good)["environment"] == "demo"
    with pytest.raises(ValueError, match="missing: password"):
        TradovateBroker.credentials_clean({**good, "password": ""})
    with pytest.raises(ValueError, match="environment"):
        TradovateBroker.credentials_clean({**good, "environment": "paper"})
    with pytest.raises(ValueError, match="cid must be a number"):
        TradovateBroker.credentials_clean({**good, "cid": "abc"})
    with pytest.raises(ValueError, match="ws_url"):
        TradovateBroker.credentials_clean({**good, "ws_url": "http://x"})
    acct = TradingAccount.objects.create(name="bad", broker="tradovate", external_id="ACC-1",
                                         credentials=json.dumps(good))
    with pytest.raises(PermanentBrokerError, match="must be the Tradovate account id"):
        TradovateBroker(acct).session_obtain(None)


def test_login_stores_user_and_account_spec_and_renewal_opens_no_session(
        venue: TradovateVenue, acct: TradingAccount) -> None:
    adapter = TradovateBroker(acct)
    session = adapter.session_obtain(None)
    assert session is not None
    assert session.data["accountSpec"] == "DEMO-T1"
    assert session.data["userId"] == venue.user_id_of(acct.external_id)
    assert session.expires_at > dt.datetime.now(dt.UTC) + dt.timedelta(minutes=70)
    renewed = adapter.session_obtain(session)
    assert renewed is not None
    assert renewed.token != session.token
    assert renewed.data == session.data
    assert (venue.sessions_opened, venue.renewals) == (1, 1)
    login = [body for method, path, body in venue.requests if path == "/auth/accesstokenrequest"]
    assert login[0]["deviceId"]
    assert login[0]["cid"] == 8


def test_refused_credentials_are_permanent_with_the_venue_text(acct: TradingAccount) -> None:
    creds = json.loads(str(acct.credentials))
    acct.credentials = json.dumps({**creds, "password": "wrong"})
    with pytest.raises(PermanentBrokerError, match="credentials refused: Incorrect username"):
        TradovateBroker(acct).session_obtain(None)


def test_revoked_token_falls_back_to_one_login(venue: TradovateVenue, acct: TradingAccount
                                               ) -> None:
    adapter = TradovateBroker(acct)
    session = adapter.session_obtain(None)
    venue.tokens_expire()  # the venue no longer honours it, though our clock says it is good
    again = adapter.session_obtain(session)
    assert again is not None
    assert venue.sessions_opened == 2


def test_penalty_ticket_on_login_waits_then_resends_with_the_ticket(
        venue: TradovateVenue, acct: TradingAccount) -> None:
    adapter = TradovateBroker(acct)
    venue.penalty_seconds = 1.0  # long enough that a busy machine still asks within it
    venue.inject("rate_limit", 1)
    with pytest.raises(TransientBrokerError) as caught:
        adapter.session_obtain(None)
    assert caught.value.retry_after == pytest.approx(1.0)
    with pytest.raises(TransientBrokerError, match="to wait"):  # no login loop: nothing sent
        adapter.session_obtain(None)
    assert len([r for r in venue.requests if r[1] == "/auth/accesstokenrequest"]) == 1
    time.sleep(1.05)
    assert adapter.session_obtain(None) is not None
    resend = [b for _m, p, b in venue.requests if p == "/auth/accesstokenrequest"][-1]
    assert "p-ticket" not in resend  # the venue popped it: it was carried
    assert venue.sessions_opened == 1


def test_login_flood_gets_a_captcha_penalty_of_about_an_hour(acct: TradingAccount) -> None:
    venue_small = TradovateVenue(auth_per_minute=1).start()
    try:
        external = venue_small.account_add("DEMO-X")
        acct.credentials = json.dumps(venue_small.credentials(external))
        acct.external_id = external
        adapter = TradovateBroker(acct)
        adapter.session_obtain(None)
        with pytest.raises(TransientBrokerError) as caught:
            adapter.session_obtain(None)
        assert caught.value.retry_after == 3600
    finally:
        venue_small.stop()


def test_no_session_yet_is_transient(acct: TradingAccount) -> None:
    with pytest.raises(TransientBrokerError, match="the listener has not logged in yet"):
        TradovateBroker(acct).place_order(order("c1"))


# --- orders -----------------------------------------------------------------------------------
def test_market_order_fills_carrying_is_automated_and_clordid(
        venue: TradovateVenue, broker: TradovateBroker) -> None:
    result = broker.place_order(order("cp1-1-0", "buy", 3))
    assert (result.status, result.filled_qty) == ("filled", 3)
    placed = next(b for _m, p, b in venue.requests if p == "/order/placeorder")
    assert placed["isAutomated"] is True
    assert placed["clOrdId"] == "cp1-1-0"
    assert placed["accountSpec"] == "DEMO-T1"
    assert venue.positions(broker.account.external_id) == {"MESZ6": 3}
    assert venue.sessions_opened == 1  # orders never log in


def test_a_placement_says_when_the_venue_acknowledged_it(
        venue: TradovateVenue, broker: TradovateBroker) -> None:
    """placeorder's answer is the acknowledgement; the fills are read after it."""
    from core import clock

    before = clock.now()
    result = broker.place_order(order("cp2-1-0", "buy", 1))
    assert result.status == "filled"
    assert result.acknowledged_at is not None
    assert before <= result.acknowledged_at <= clock.now()
    paths = [p for _m, p, _b in venue.requests]
    assert paths.index("/order/placeorder") < paths.index("/fill/deps")


def test_expired_token_reloads_the_session_once_then_works(
        venue: TradovateVenue, broker: TradovateBroker, acct: TradingAccount) -> None:
    venue.tokens_expire()
    with pytest.raises(TransientBrokerError, match="401"):
        broker.place_order(order("c1"))
    assert venue.orders(acct.external_id) == []
    # The listener logs in again and stores it; the worker's cached copy is stale.
    fresh = TradovateBroker(acct).session_obtain(None)
    assert fresh is not None
    from brokers.models import BrokerSession
    BrokerSession.objects.filter(account=acct).update(token=fresh.token)
    assert session_load(acct.pk) is not None  # still the cached, revoked one
    assert broker.place_order(order("c1")).status == "filled"


def test_lost_response_is_unknown_then_found_and_nothing_doubles(
        venue: TradovateVenue, broker: TradovateBroker) -> None:
    venue.inject("lose_response")
    with pytest.raises(OrderOutcomeUnknown):
        broker.place_order(order("cp9-1-0", "sell", 2, "ESZ6"))
    found = broker.find_order("cp9-1-0")
    assert found is not None
    assert (found.status, found.filled_qty, found.symbol, found.side, found.qty) == (
        "filled", 2, "ESZ6", Side.SELL, 2)
    assert broker.find_order("never-sent") is None
    assert venue.positions(broker.account.external_id) == {"ESZ6": -2}
    assert len(venue.orders(broker.account.external_id)) == 1


def test_rejection_is_permanent_and_found_as_rejected(
        venue: TradovateVenue, broker: TradovateBroker) -> None:
    venue.inject("reject")
    with pytest.raises(PermanentBrokerError, match="AccountClosed: Account is closed"):
        broker.place_order(order("rej-1"))
    found = broker.find_order("rej-1")
    assert found is not None
    assert found.status == "rejected"
    assert "AccountClosed" in found.message
    venue.reject_reason, venue.reject_text = "RiskCheckTimeout", "risk check timed out"
    venue.inject("reject")
    with pytest.raises(TransientBrokerError) as caught:
        broker.place_order(order("rej-2"))
    assert not caught.value.permanent


def test_a_5xx_on_a_placement_is_an_unknown_outcome_whether_or_not_it_ran(
        venue: TradovateVenue, broker: TradovateBroker) -> None:
    """Tradovate does not document a 5xx as "nothing ran": the adapter cannot tell a 503
    before the order from one after it; the look-up by clOrdId can."""
    ext = broker.account.external_id
    venue.inject("http_5xx")  # refused before executing
    with pytest.raises(OrderOutcomeUnknown, match="503"):
        broker.place_order(order("c5"))
    assert venue.orders(ext) == []
    assert broker.find_order("c5") is None
    venue.inject("http_5xx_after")  # executed, then the error
    with pytest.raises(OrderOutcomeUnknown, match="503"):
        broker.place_order(order("c6"))
    found = broker.find_order("c6")
    assert found is not None
    assert (found.status, found.filled_qty) == ("filled", found.qty)
    assert len(venue.orders(ext)) == 1


def test_penalty_on_an_order_is_transient_with_retry_after(
        venue: TradovateVenue, broker: TradovateBroker) -> None:
    venue.inject("rate_limit")
    with pytest.raises(TransientBrokerError) as caught:
        broker.place_order(order("pen-1"))
    assert caught.value.retry_after == pytest.approx(0.2)
    assert venue.orders(broker.account.external_id) == []
    time.sleep(0.25)
    assert broker.place_order(order("pen-1")).status == "filled"


def test_lookup_failure_is_transient(venue: TradovateVenue, broker: TradovateBroker) -> None:
    venue.inject("lookup_fail")
    with pytest.raises(TransientBrokerError, match="503"):
        broker.find_order("x")


def test_partial_fills_are_summed(venue: TradovateVenue, broker: TradovateBroker) -> None:
    venue.inject("partial")
    result = broker.place_order(order("part-1", "buy", 5))
    assert (result.status, result.filled_qty) == ("filled", 5)
    found = broker.find_order("part-1")
    assert found is not None
    assert found.filled_qty == 5


def test_late_fill_is_accepted_with_nothing_counted_then_filled(
        venue: TradovateVenue, broker: TradovateBroker) -> None:
    venue.inject("late_fill")
    result = broker.place_order(order("late-1", "buy", 2))
    assert (result.status, result.filled_qty) == ("accepted", 0)
    time.sleep(0.4)
    found = broker.find_order("late-1")
    assert found is not None
    assert (found.status, found.filled_qty) == ("filled", 2)


# --- positions, contracts, flatten ----------------------------------------------------------
def test_positions_map_contracts_and_carry_the_fill_cursor(
        venue: TradovateVenue, broker: TradovateBroker) -> None:
    ext = broker.account.external_id
    venue.trade(ext, "NQZ6", "buy", 2)
    venue.trade(ext, "ESZ6", "buy", 1)
    last = venue.trade(ext, "ESZ6", "sell", 1)  # flat: omitted
    other = _account(venue, "T2", login=venue.login_of(ext))
    venue.trade(other.external_id, "MNQZ6", "sell", 4)  # another account of the same user
    assert broker.positions() == {"NQZ6": 2}
    cursor = broker.fills_cursor()
    assert cursor is not None
    assert cursor > int(last)
    assert broker.contract_id("MNQZ6") == 3_570_921
    assert broker.contract_name(3_570_921) == "MNQZ6"
    with pytest.raises(PermanentBrokerError, match="unknown contract 'ESZ9'"):
        broker.contract_id("ESZ9")
    with pytest.raises(PermanentBrokerError, match="unknown contract id 42"):
        broker.contract_name(42)


def test_flatten_liquidates_the_position(venue: TradovateVenue, broker: TradovateBroker
                                         ) -> None:
    venue.trade(broker.account.external_id, "MESZ6", "sell", 3)
    broker.flatten("MESZ6")
    assert venue.positions(broker.account.external_id) == {}
    sent = next(b for _m, p, b in venue.requests if p == "/order/liquidateposition")
    assert sent["admin"] is False


def _working(venue: TradovateVenue, external: str) -> list[int]:
    return [o["id"] for o in venue.orders(external) if o["ordStatus"] == "Working"]


def test_orders_cancel_all_cancels_this_accounts_working_orders_only(
        venue: TradovateVenue, broker: TradovateBroker) -> None:
    mine = broker.account.external_id
    sibling = _account(venue, "T2", login=venue.login_of(mine))  # same login: order/list
    venue.trade(mine, "MESZ6", "buy", 2)                            # shows both accounts
    placed = {int(venue.working_order_add(mine, "MESZ6", "sell", 2)),
              int(venue.working_order_add(mine, "MNQZ6", "buy", 1))}
    theirs = int(venue.working_order_add(sibling.external_id, "MESZ6", "buy", 1))
    assert set(_working(venue, mine)) == placed

    assert broker.orders_cancel_all() == 2
    assert _working(venue, mine) == []
    assert {o["id"]: (o["ordStatus"], o["filled"]) for o in venue.orders(mine)
            if o["id"] in placed} == dict.fromkeys(placed, ("Canceled", 0))
    assert _working(venue, sibling.external_id) == [theirs]
    assert venue.positions(mine) == {"MESZ6": 2}  # cancelling closes nothing
    sent = [b for _m, p, b in venue.requests if p == "/order/cancelorder"]
    assert sorted(b["orderId"] for b in sent) == sorted(placed)


def test_orders_cancel_all_with_nothing_working_is_zero(
        venue: TradovateVenue, broker: TradovateBroker) -> None:
    venue.trade(broker.account.external_id, "MESZ6", "buy", 1)
    assert broker.orders_cancel_all() == 0
    assert not [p for _m, p, _b in venue.requests if p == "/order/cancelorder"]


def test_unreachable_venue_is_transient(venue: TradovateVenue, broker: TradovateBroker
                                        ) -> None:
    venue.set_reachable(False)
    try:
        with pytest.raises(TransientBrokerError) as caught:
            broker.place_order(order("down-1"))
        assert not isinstance(caught.value, OrderOutcomeUnknown)
    finally:
        venue.set_reachable(True)
    assert broker.place_order(order("down-1")).status == "filled"


# --- connection test --------------------------------------------------------------------------
def test_connection_test_logs_in_once_and_lists_the_account(
        venue: TradovateVenue, acct: TradingAccount) -> None:
    venue.trade(acct.external_id, "ESZ6", "buy", 2)
    summary = TradovateBroker(acct).connection_test()
    assert "DEMO-T1" in summary
    assert "ESZ6 +2" in summary
    assert venue.sessions_opened == 1


def test_connection_test_uses_the_listeners_session(venue: TradovateVenue,
                                                    broker: TradovateBroker) -> None:
    assert "listener's session" in broker.connection_test()
    assert venue.sessions_opened == 1


def test_connection_test_says_what_failed(venue: TradovateVenue, acct: TradingAccount) -> None:
    creds = json.loads(str(acct.credentials))
    acct.credentials = json.dumps({**creds, "password": "nope"})
    with pytest.raises(BrokerError, match=r"login failed: .*credentials refused"):
        TradovateBroker(acct).connection_test()
    acct.credentials = json.dumps(creds)
    acct.external_id = "123"
    with pytest.raises(PermanentBrokerError, match="account 123 not found; this login has: DEMO"):
        TradovateBroker(acct).connection_test()


# --- the stream ---------------------------------------------------------------------------------
async def _events(stream: TradovateStream, wanted: int, timeout: float = 3.0) -> list[object]:
    got: list[object] = []
    async with asyncio.timeout(timeout):
        while len(got) < wanted:
            got.extend(await stream.receive())
    return got


def test_stream_snapshot_is_not_replayed_and_new_fills_carry_the_client_id(
        venue: TradovateVenue, broker: TradovateBroker) -> None:
    ext = broker.account.external_id
    old = venue.trade(ext, "ESZ6", "buy", 1)
    venue.inject("reject")
    with pytest.raises(PermanentBrokerError):
        broker.place_order(order("old-reject"))
    session = session_load(broker.account.pk)

    async def scenario() -> list[object]:
        stream = broker.stream(session)
        assert isinstance(stream, TradovateStream)
        await stream.open()
        try:
            assert int(old) in stream._seen
            venue.inject("late_fill")
            result = await asyncio.to_thread(broker.place_order, order("cp5-1-0", "sell", 2))
            assert result.status == "accepted"
            return await _events(stream, 2)
        finally:
            await stream.close()

    events = run(scenario())
    fills = [e for e in events if isinstance(e, Fill)]
    assert len(fills) == 1
    fill = fills[0]
    assert (fill.symbol, fill.side, fill.qty, fill.client_order_id) == (
        "MESZ6", Side.SELL, 2, "cp5-1-0")
    assert fill.seq == int(fill.fill_id) > int(old)
    assert fill.time.tzinfo is not None
    assert PositionUpdate("MESZ6", -2) in events


def test_stream_only_delivers_the_accounts_own_events_once(
        venue: TradovateVenue, broker: TradovateBroker) -> None:
    other = _account(venue, "T2", login=venue.login_of(broker.account.external_id))
    session = session_load(broker.account.pk)

    async def scenario() -> list[object]:
        stream = broker.stream(session)
        await stream.open()
        try:
            await asyncio.to_thread(venue.trade, other.external_id, "ESZ6", "buy", 1)
            await asyncio.to_thread(venue.trade, broker.account.external_id, "NQZ6", "sell", 1)
            # the fill, the position, the order's settlement, the cash balance
            got = await _events(stream, 4)
            fill = next(e for e in got if isinstance(e, Fill))
            # The same fill entity pushed again (a replay) is not delivered twice.
            await asyncio.to_thread(venue.fill_replay, fill.fill_id)
            await asyncio.to_thread(venue.trade, broker.account.external_id, "NQZ6", "buy", 1)
            got += await _events(stream, 4)
            return got
        finally:
            await stream.close()

    events = run(scenario())
    fills = [e for e in events if isinstance(e, Fill)]
    assert [(f.symbol, f.side) for f in fills] == [("NQZ6", Side.SELL), ("NQZ6", Side.BUY)]
    assert len({f.fill_id for f in fills}) == 2
    assert [e.qty for e in events if isinstance(e, PositionUpdate)] == [-1, 0]
    assert [(e.status, e.qty) for e in events if isinstance(e, OrderUpdate)] == [
        ("filled", 1), ("filled", 1)]  # the other account's order is not said
    # nor its cash balance
    assert [e for e in events if isinstance(e, AccountChanged)] == [
        AccountChanged("cash balance")] * 2


def test_failed_authorize_raises_without_hanging(venue: TradovateVenue,
                                                 broker: TradovateBroker) -> None:
    session = session_load(broker.account.pk)
    venue.tokens_expire()

    async def scenario() -> None:
        stream = broker.stream(session)
        started = time.monotonic()
        with pytest.raises(TransientBrokerError, match="authorize refused"):
            await stream.open()
        assert time.monotonic() - started < 2
        await stream.close()
        await stream.close()

    run(scenario())


def test_heartbeats_are_sent_on_their_own_timer(venue: TradovateVenue, broker: TradovateBroker,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    session = session_load(broker.account.pk)
    monkeypatch.setattr(tradovate_stream, "HEARTBEAT_EVERY", 0.25)  # 2.5 s at the venue

    async def scenario() -> None:
        stream = broker.stream(session)
        await stream.open()
        await asyncio.sleep(0.6)  # nothing received meanwhile
        await stream.close()

    run(scenario())
    assert venue.heartbeats_heard() >= 2  # each on its turn, not one at the start


@pytest.mark.parametrize("how", ["shutdown", "drop"])
def test_shutdown_and_dropped_socket_are_transient_and_a_new_stream_resyncs(
        venue: TradovateVenue, broker: TradovateBroker, how: str) -> None:
    session = session_load(broker.account.pk)
    ext = broker.account.external_id

    async def scenario() -> list[object]:
        stream = broker.stream(session)
        await stream.open()
        await asyncio.to_thread(venue.trade, ext, "ESZ6", "buy", 1)
        await _events(stream, 2)
        if how == "shutdown":
            await asyncio.to_thread(venue.streams_shutdown, "Maintenance")
        else:
            await asyncio.to_thread(venue.streams_drop)
        with pytest.raises(TransientBrokerError,
                           match="Maintenance" if how == "shutdown" else "lost|closed"):
            async with asyncio.timeout(3):
                while True:
                    await stream.receive()
        await stream.close()
        await asyncio.to_thread(venue.trade, ext, "ESZ6", "buy", 1)  # while away
        again = broker.stream(session)
        await again.open()
        try:
            await asyncio.to_thread(venue.trade, ext, "NQZ6", "buy", 1)
            return await _events(again, 2)
        finally:
            await again.close()

    events = run(scenario())
    # The fill made while away is in the new snapshot (the positions re-read count it).
    assert [e.symbol for e in events if isinstance(e, Fill)] == ["NQZ6"]


def test_connection_quota_closes_the_oldest_socket_and_revokes_its_token(
        venue: TradovateVenue, broker: TradovateBroker) -> None:
    session = session_load(broker.account.pk)
    assert session is not None
    adapter = TradovateBroker(broker.account)
    tokens = [adapter.session_obtain(None) for _ in range(3)]

    async def scenario() -> None:
        oldest = broker.stream(session)
        await oldest.open()
        others = [broker.stream(t) for t in tokens]
        for s in others:
            await s.open()
        with pytest.raises(TransientBrokerError, match="ConnectionQuotaReached"):
            async with asyncio.timeout(3):
                while True:
                    await oldest.receive()
        for s in [oldest, *others]:
            await s.close()

    run(scenario())
    with pytest.raises(TransientBrokerError, match="401"):
        adapter._send("GET", "/account/list", token=session.token)


def test_secrets_never_reach_logs_or_reprs(venue: TradovateVenue, acct: TradingAccount,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    adapter = TradovateBroker(acct)
    session = adapter.session_obtain(None)
    assert session is not None
    session_save(acct.pk, session)
    adapter.session_obtain(session)
    adapter.connection_test()
    creds = json.loads(str(acct.credentials))
    stored = TradingAccount.objects.get(pk=acct.pk)  # what a read from the database gives
    texts = [caplog.text, repr(session), repr(stored.credentials), repr(adapter.account)]
    try:
        acct.credentials = json.dumps({**creds, "password": "nope"})
        TradovateBroker(acct).session_obtain(None)
    except BrokerError as exc:
        texts.append(str(exc))
    for text in texts:
        for secret in (PASSWORD, creds["sec"], session.token):
            assert secret not in text


def test_venue_drops_a_client_that_sends_no_heartbeats() -> None:
    """The venue's side of the heartbeat rule, which the adapter's timer keeps it clear of."""
    import websockets

    quiet = TradovateVenue(silence_limit=0.6).start()
    try:
        async def scenario() -> list[str]:
            frames: list[str] = []
            async with websockets.connect(quiet.ws_url) as ws:
                async with asyncio.timeout(3):
                    with pytest.raises(websockets.ConnectionClosed):
                        while True:
                            frames.append(str(await ws.recv()))
            return frames

        frames = run(scenario())
        assert frames[0] == "o"
        assert quiet.socket_count() == 0
    finally:
        quiet.stop()


# --- a user per account; what the replay drives -----------------------------------------------
def _logged_in(acct: TradingAccount) -> TradovateBroker:
    adapter = TradovateBroker(acct)
    session = adapter.session_obtain(None)
    assert session is not None
    session_save(acct.pk, session)
    return adapter


def test_each_account_has_a_user_of_its_own_with_its_own_quota_and_auth_limit() -> None:
    small = TradovateVenue(ws_quota=1, auth_per_minute=1).start()
    try:
        a, b = _account(small, "A"), _account(small, "B")
        assert small.login_of(a.external_id) != small.login_of(b.external_id)
        first, second = _logged_in(a), _logged_in(b)  # one login each: no captcha
        sessions = [session_load(a.pk), session_load(b.pk)]

        async def scenario() -> None:
            streams = [first.stream(sessions[0]), second.stream(sessions[1])]
            for s in streams:
                await s.open()
            try:
                await asyncio.to_thread(small.trade, b.external_id, "ESZ6", "buy", 1)
                got = await _events(streams[1], 2)  # the quota of 1 is B's alone
                assert PositionUpdate("ESZ6", 1) in got
            finally:
                for s in streams:
                    await s.close()

        run(scenario())
        assert small.positions(a.external_id) == {}  # B's trade never reached A's user
        shared = _account(small, "C", login=small.login_of(a.external_id))
        assert json.loads(str(shared.credentials))["name"] == small.login_of(a.external_id)
        with pytest.raises(TransientBrokerError) as caught:  # A's user logged in this minute
            TradovateBroker(shared).session_obtain(None)
        assert caught.value.retry_after == 3600
    finally:
        small.stop()


def test_a_fault_aimed_at_one_account_is_spent_by_that_account_only(
        venue: TradovateVenue, broker: TradovateBroker) -> None:
    other = _logged_in(_account(venue, "T2"))
    venue.inject("http_5xx", 2, account_external_id=broker.account.external_id)
    assert other.place_order(order("f-other")).status == "filled"
    for cid in ("f-1", "f-2"):
        with pytest.raises(TransientBrokerError, match="HTTP 503"):
            broker.place_order(order(cid))
    assert broker.place_order(order("f-3")).status == "filled"


def test_one_accounts_outage_refuses_its_user_and_drops_its_stream(
        venue: TradovateVenue, broker: TradovateBroker) -> None:
    other = _logged_in(_account(venue, "T2"))
    ext = broker.account.external_id
    session = session_load(broker.account.pk)

    async def dropped() -> None:
        stream = broker.stream(session)
        await stream.open()
        try:
            await asyncio.to_thread(venue.set_reachable, False, account_external_id=ext)
            with pytest.raises(TransientBrokerError, match=r"lost|closed"):
                await _events(stream, 1)
        finally:
            await stream.close()

    async def refused() -> None:
        stream = broker.stream(session)
        try:
            with pytest.raises(TransientBrokerError):
                await stream.open()
        finally:
            await stream.close()

    run(dropped())
    try:
        # The gateway answers the user's requests 503: whether an order ran cannot be
        # told from that, so it is an unknown outcome, looked up once the venue is back.
        with pytest.raises(OrderOutcomeUnknown, match="503"):
            broker.place_order(order("down-1"))
        with pytest.raises(TransientBrokerError, match="503"):
            broker.positions()
        with pytest.raises(TransientBrokerError, match="503"):
            TradovateBroker(broker.account).session_obtain(None)
        run(refused())
        assert other.place_order(order("up-1")).status == "filled"
    finally:
        venue.set_reachable(True, account_external_id=ext)
    assert venue.orders(ext) == []
    assert broker.find_order("down-1") is None  # what the copier asks once it is back
    assert broker.place_order(order("down-1")).status == "filled"


def test_a_contract_listed_by_name_is_found_and_traded(venue: TradovateVenue,
                                                       broker: TradovateBroker) -> None:
    venue.contract_add("ES")
    venue.contract_add("ES")  # idempotent
    assert broker.place_order(order("root-1", symbol="ES", qty=2)).status == "filled"
    assert broker.positions() == {"ES": 2}
    assert broker.contract_id("ES") not in CONTRACTS.values()


def test_a_trade_given_its_fill_id_again_is_delivered_again_and_moves_nothing(
        venue: TradovateVenue, broker: TradovateBroker) -> None:
    ext = broker.account.external_id
    session = session_load(broker.account.pk)

    async def scenario() -> list[object]:
        stream = broker.stream(session)
        await stream.open()
        try:
            first = await asyncio.to_thread(venue.trade, ext, "ESZ6", "buy", 1)
            got = await _events(stream, 4)  # the fill, the position, the order, the cash
            assert await asyncio.to_thread(venue.trade, ext, "ESZ6", "buy", 1, first) == first
            await asyncio.to_thread(venue.trade, ext, "NQZ6", "sell", 1)
            return got + await _events(stream, 4)
        finally:
            await stream.close()

    events = run(scenario())
    assert [e.symbol for e in events if isinstance(e, Fill)] == ["ESZ6", "NQZ6"]
    assert venue.positions(ext) == {"ESZ6": 1, "NQZ6": -1}
    with pytest.raises(ValueError, match="no fill"):
        venue.trade(ext, "ESZ6", "buy", 1, "12")


# --- working orders: held, filled in parts, cancelled -------------------------------------------
def test_an_order_cancelled_after_a_part_filled_is_cancelled_with_what_filled(
        venue: TradovateVenue, broker: TradovateBroker) -> None:
    ext = broker.account.external_id
    venue.inject("hold", account_external_id=ext)
    placed = broker.place_order(order("cp-h1", "sell", 3))
    assert (placed.status, placed.filled_qty) == ("accepted", 0)
    assert venue.positions(ext) == {}
    venue.held_fill(ext, 1)
    working = broker.find_order("cp-h1")
    assert working is not None
    assert (working.status, working.filled_qty) == ("accepted", 1)
    venue.held_cancel(ext)
    found = broker.find_order("cp-h1")
    assert found is not None
    assert (found.status, found.filled_qty, found.qty) == ("cancelled", 1, 3)
    assert venue.positions(ext) == {"MESZ6": -1}


def test_a_placement_the_venue_fills_in_part_and_cancels_reads_back_cancelled(
        venue: TradovateVenue, broker: TradovateBroker) -> None:
    venue.inject("cancel_rest", account_external_id=broker.account.external_id)
    placed = broker.place_order(order("cp-c1", "sell", 3))
    assert (placed.status, placed.filled_qty) == ("cancelled", 1)
    assert venue.positions(broker.account.external_id) == {"MESZ6": -1}


def test_an_order_cancelled_with_nothing_filled_is_cancelled_not_rejected(
        venue: TradovateVenue, broker: TradovateBroker) -> None:
    venue.inject("hold", account_external_id=broker.account.external_id)
    broker.place_order(order("cp-h0", "buy", 2))
    venue.held_cancel(broker.account.external_id)
    found = broker.find_order("cp-h0")
    assert found is not None
    assert (found.status, found.filled_qty) == ("cancelled", 0)


def test_order_cancel_cancels_a_working_order_and_answers_a_settled_one(
        venue: TradovateVenue, broker: TradovateBroker) -> None:
    ext = broker.account.external_id
    assert broker.order_cancel("never-sent") is None
    venue.inject("hold", count=2, account_external_id=ext)
    broker.place_order(order("cp-w1", "buy", 3))
    broker.place_order(order("cp-w2", "buy", 2))
    venue.held_fill(ext, 2)
    cancelled = broker.order_cancel("cp-w1")
    assert cancelled is not None
    assert (cancelled.status, cancelled.filled_qty, cancelled.qty) == ("cancelled", 2, 3)
    assert venue.held_left(ext) == 1
    assert broker.order_cancel("cp-w1") == cancelled  # again: the same answer, nothing sent
    venue.held_fill(ext)  # cp-w2 fills before the cancel reaches it
    filled = broker.order_cancel("cp-w2")
    assert filled is not None
    assert (filled.status, filled.filled_qty) == ("filled", 2)
    assert venue.positions(ext) == {"MESZ6": 4}


def test_order_cancel_of_an_unreachable_account_is_transient(
        venue: TradovateVenue, broker: TradovateBroker) -> None:
    ext = broker.account.external_id
    venue.inject("hold", account_external_id=ext)
    broker.place_order(order("cp-u1", "buy", 1))
    venue.set_reachable(False, account_external_id=ext)
    try:
        with pytest.raises(TransientBrokerError):
            broker.order_cancel("cp-u1")
    finally:
        venue.set_reachable(True, account_external_id=ext)
    assert venue.held_left(ext) == 1


def test_held_fill_refuses_what_is_not_there(venue: TradovateVenue,
                                            broker: TradovateBroker) -> None:
    ext = broker.account.external_id
    with pytest.raises(ValueError, match="no held order"):
        venue.held_fill(ext)
    venue.inject("hold", account_external_id=ext)
    broker.place_order(order("cp-m1", "buy", 2))
    for bad in (0, 3):
        with pytest.raises(ValueError, match="from 1 to 2"):
            venue.held_fill(ext, bad)
    venue.held_fill(ext)
    assert venue.held_left(ext) == 0
    assert venue.positions(ext) == {"MESZ6": 2}


def test_the_stream_says_when_an_order_settles_once_after_its_fills(
        venue: TradovateVenue, broker: TradovateBroker) -> None:
    ext = broker.account.external_id
    session = session_load(broker.account.pk)

    async def scenario() -> list[object]:
        stream = broker.stream(session)
        await stream.open()
        try:
            venue.inject("hold", account_external_id=ext)
            await asyncio.to_thread(broker.place_order, order("cp-s1", "sell", 3))
            await asyncio.to_thread(venue.held_fill, ext, 1)
            got = await _events(stream, 3)  # the fill, the position, the cash balance
            await asyncio.to_thread(venue.held_cancel, ext)
            got += await _events(stream, 1)
            await asyncio.to_thread(broker.place_order, order("cp-s2", "buy", 1))
            return got + await _events(stream, 4)
        finally:
            await stream.close()

    events = run(scenario())
    held, plain = (broker.find_order(c) for c in ("cp-s1", "cp-s2"))
    assert held is not None
    assert plain is not None
    updates = [e for e in events if isinstance(e, OrderUpdate)]
    assert updates == [
        OrderUpdate("cp-s1", held.broker_order_id, "MESZ6", "cancelled", 1, 3),
        OrderUpdate("cp-s2", plain.broker_order_id, "MESZ6", "filled", 1, 1)]
    fills = [e for e in events if isinstance(e, Fill)]
    assert [(f.client_order_id, f.qty) for f in fills] == [("cp-s1", 1), ("cp-s2", 1)]
    assert events.index(updates[0]) > events.index(fills[0])


def test_a_placement_answered_part_filled_and_working_counts_none_of_it(
        venue: TradovateVenue, broker: TradovateBroker) -> None:
    """Its part's fill comes on the stream: counted there, once (a look-up says it)."""
    venue.inject("part_hold", account_external_id=broker.account.external_id)
    placed = broker.place_order(order("cp-p1", "buy", 3))
    assert (placed.status, placed.filled_qty) == ("accepted", 0)
    assert "filled 1 of 3 so far" in placed.message
    found = broker.find_order("cp-p1")
    assert found is not None
    assert (found.status, found.filled_qty) == ("accepted", 1)
