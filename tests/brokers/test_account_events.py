"""Both adapters' streams against their local venue: the venue's own word on the account's
money and standing (ProjectX `GatewayUserAccount`, Tradovate `cashBalance` and
`accountRiskStatus`) is delivered as `AccountChanged`, so that its guard reads it then and
not at the next periodic check: after a trade moved the balance, when the firm stops the
account (with `can_trade` False) and frees it again. Another account's pushes say nothing,
and a record whose account cannot be read is skipped: the stream goes on."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from accounts.models import TradingAccount
from brokers.base import AccountChanged, BrokerAdapter, BrokerEvent, BrokerStream, Fill
from brokers.registry import adapter_for, adapters_forget
from brokers.sessions import session_load, session_save
from devkit.localvenue import LocalVenue, venue_start

pytestmark = pytest.mark.django_db

# What each venue's stream says after a trade, and when the firm stops the account.
TRADED = {"projectx": AccountChanged("account update", can_trade=True),
          "tradovate": AccountChanged("cash balance")}
STOPPED = {"projectx": AccountChanged("account update: canTrade false", can_trade=False),
           "tradovate": AccountChanged("risk status: adminAction LiquidateOnlyModeImmediately",
                                       can_trade=False)}
FREED = {"projectx": AccountChanged("account update", can_trade=True),
         "tradovate": AccountChanged("risk status", can_trade=True)}


@pytest.fixture(params=["projectx", "tradovate"])
def venue(request: pytest.FixtureRequest) -> Iterator[LocalVenue]:
    started = venue_start(request.param)
    started.contract_add("ESZ6")
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


def _sibling(venue: LocalVenue, adapter: BrokerAdapter) -> str:
    """Another account of the same login: the login's socket carries its pushes too."""
    if venue.kind == "tradovate":
        return venue.account_add(  # type: ignore[call-arg]
            "U2", login=venue.login_of(adapter.account.external_id))  # type: ignore[attr-defined]
    return venue.account_add("U2")  # ProjectX: one login holds every account


async def _until(stream: BrokerStream, done: Callable[[list[BrokerEvent]], bool],
                 timeout: float = 5.0) -> list[BrokerEvent]:
    got: list[BrokerEvent] = []
    async with asyncio.timeout(timeout):
        while not done(got):
            got.extend(await stream.receive())
    return got


def _changes(events: list[BrokerEvent]) -> list[AccountChanged]:
    return [e for e in events if isinstance(e, AccountChanged)]


def test_a_trade_and_the_firms_stop_are_said_as_account_changes(
    venue: LocalVenue, adapter: BrokerAdapter
) -> None:
    ext = adapter.account.external_id
    other = _sibling(venue, adapter)

    async def scenario() -> tuple[list[BrokerEvent], list[BrokerEvent], list[BrokerEvent]]:
        stream = adapter.stream(session_load(adapter.account.pk))
        await stream.open()
        try:
            await asyncio.to_thread(venue.trade, other, "ESZ6", "buy", 1)  # not this one's
            await asyncio.to_thread(venue.account_lock, other)
            await asyncio.to_thread(venue.trade, ext, "ESZ6", "buy", 1)
            traded = await _until(stream, lambda got: bool(_changes(got))
                                  and any(isinstance(e, Fill) for e in got))
            await asyncio.to_thread(venue.account_lock, ext)
            stopped = await _until(stream, lambda got: bool(_changes(got)))
            await asyncio.to_thread(venue.account_lock, ext, False)
            freed = await _until(stream, lambda got: bool(_changes(got)))
            return traded, stopped, freed
        finally:
            await stream.close()

    traded, stopped, freed = asyncio.run(scenario())
    assert _changes(traded) == [TRADED[venue.kind]]  # the sibling's trade and lock: nothing
    assert [e.fill_id for e in traded if isinstance(e, Fill)] != []
    assert stopped == [STOPPED[venue.kind]]
    assert freed == [FREED[venue.kind]]
    # The stream only said so: the numbers and the stop are the adapter's read's.
    assert adapter.equity_read().can_trade is True


def _garbled(venue: LocalVenue, ext: str) -> Callable[[], Any]:
    """Account records that are not what the venue documents, pushed on its own loop."""
    mine = int(ext)
    if venue.kind == "projectx":
        async def push_projectx() -> None:
            for data in ({"id": "not-a-number", "canTrade": False}, ["a", "list"],
                         {"balance": 1.0}, {"id": True}, {"id": mine, "canTrade": "no"}):
                venue._push_frame(  # type: ignore[attr-defined]
                    "GatewayUserAccount", mine, data, lambda hub: hub.accounts)
        return push_projectx

    async def push_tradovate() -> None:
        for kind, entity in (("cashBalance", {"accountId": "not-a-number"}),
                             ("cashBalance", {"id": mine}),
                             ("accountRiskStatus", {"id": None, "adminAction": "Normal"}),
                             ("accountRiskStatus", {"id": mine, "adminAction": ["?"]})):
            venue._push(mine, kind, "Updated", entity)  # type: ignore[attr-defined]
    return push_tradovate


def test_an_account_record_it_cannot_read_is_skipped_and_the_stream_goes_on(
    venue: LocalVenue, adapter: BrokerAdapter
) -> None:
    """No exception out of receive() (a reconnect): an account id that is not a whole
    number, or none, is skipped; this account's record with a standing it cannot read
    still says the account changed, without a word on the stop (None)."""
    ext = adapter.account.external_id

    async def scenario() -> list[BrokerEvent]:
        stream = adapter.stream(session_load(adapter.account.pk))
        await stream.open()
        try:
            venue.call(_garbled(venue, ext)())
            await asyncio.to_thread(venue.trade, ext, "ESZ6", "buy", 1)
            return await _until(stream, lambda got: TRADED[venue.kind] in got
                                and any(isinstance(e, Fill) for e in got))
        finally:
            await stream.close()

    events = asyncio.run(scenario())
    unread_standing = {"projectx": AccountChanged("account update"),
                       "tradovate": AccountChanged("risk status")}[venue.kind]
    assert _changes(events) == [unread_standing, TRADED[venue.kind]]
