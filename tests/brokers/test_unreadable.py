"""Both adapters against their local venue: a fill and a position on a contract the venue's
own look-up does not know are delivered as `Unreadable` records, never raised, and
positions() leaves such a position out and reports it (issue 18, item 9)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator

import pytest

from accounts.models import TradingAccount
from brokers.base import BrokerAdapter, BrokerEvent, BrokerStream, PositionUpdate, Unreadable
from brokers.registry import adapter_for, adapters_forget
from brokers.sessions import session_save
from devkit.localvenue import LocalVenue, venue_start

pytestmark = pytest.mark.django_db


@pytest.fixture(params=["projectx", "tradovate"])
def venue(request: pytest.FixtureRequest) -> Iterator[LocalVenue]:
    started = venue_start(request.param)
    started.contract_add("ESZ6")
    started.contract_add("HIDDEN")
    started.contract_hide("HIDDEN")
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def adapter(venue: LocalVenue) -> BrokerAdapter:
    """An account at the venue whose listener has logged in (its session stored)."""
    external = venue.account_add("U1")
    account = TradingAccount.objects.create(
        name="U1", broker=venue.kind, external_id=external,
        credentials=json.dumps(venue.credentials(external)))
    adapters_forget()
    found = adapter_for(account)
    session = found.session_obtain(None)
    assert session is not None
    session_save(account.pk, session, obtained_by="test listener")
    return found


async def _until(stream: BrokerStream, done: Callable[[list[BrokerEvent]], bool],
                 timeout: float = 5.0) -> list[BrokerEvent]:
    """Events off the stream until `done` says so (other events, order updates, may come)."""
    got: list[BrokerEvent] = []
    async with asyncio.timeout(timeout):
        while not done(got):
            got.extend(await stream.receive())
    return got


def test_a_contract_the_venue_cannot_name_is_delivered_unreadable_never_raised(
    venue: LocalVenue, adapter: BrokerAdapter
) -> None:
    from brokers.sessions import session_load

    ext = adapter.account.external_id
    venue.trade(ext, "ESZ6", "buy", 1)

    def done(events: list[BrokerEvent]) -> bool:
        unread = [e for e in events if isinstance(e, Unreadable)]
        return len(unread) >= 2 and PositionUpdate("ESZ6", 2) in events

    async def scenario() -> tuple[str, list[BrokerEvent]]:
        stream = adapter.stream(session_load(adapter.account.pk))
        await stream.open()
        try:
            fill_id = await asyncio.to_thread(venue.trade, ext, "HIDDEN", "sell", 2)
            await asyncio.to_thread(venue.trade, ext, "ESZ6", "buy", 1)
            return fill_id, await _until(stream, done)
        finally:
            await stream.close()

    fill_id, events = asyncio.run(scenario())
    unread = [e for e in events if isinstance(e, Unreadable)]
    assert sorted((u.kind, u.fill_id) for u in unread) == [("fill", fill_id), ("position", "")]
    assert all("unknown contract id" in u.reason for u in unread)
    assert adapter.positions() == {"ESZ6": 2}  # the read goes on without it
    [held] = adapter.positions_unread()
    assert held.kind == "position"
    assert "unknown contract id" in held.reason


@pytest.mark.parametrize("venue", ["tradovate"], indirect=True)
def test_an_order_or_command_record_it_cannot_read_is_skipped_and_the_stream_goes_on(
    venue: LocalVenue, adapter: BrokerAdapter
) -> None:
    """A Tradovate order, version or command entity with fields that are not what the venue
    documents is skipped: no exception out of receive() (a reconnect), the next fill reads."""
    from brokers.sessions import session_load

    ext = int(adapter.account.external_id)

    async def garbled() -> None:
        for kind, entity in (("order", {"id": "not-a-number", "accountId": ext}),
                             ("orderVersion", {"orderId": 5, "orderQty": "two"}),
                             ("command", {"orderId": None, "commandType": "New"})):
            venue._push(ext, kind, "Updated", entity)  # type: ignore[attr-defined]

    async def scenario() -> list[BrokerEvent]:
        stream = adapter.stream(session_load(adapter.account.pk))
        await stream.open()
        try:
            venue.call(garbled())
            await asyncio.to_thread(venue.trade, str(ext), "ESZ6", "buy", 1)
            return await _until(stream, lambda got: PositionUpdate("ESZ6", 1) in got)
        finally:
            await stream.close()

    events = asyncio.run(scenario())
    assert not [e for e in events if isinstance(e, Unreadable)]
