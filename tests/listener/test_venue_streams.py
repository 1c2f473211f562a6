"""What a venue's stream carries that the copier cannot take (issue 18, "Streams and numbers"),
through the real adapters, the local venues and a listener in this process.

A fill or a position on a contract the venue's own look-up does not know, or with a number
no account can hold, is recorded as refused and the stream goes on: the leader's next move
on a contract the copier can name is copied at once (not 5 minutes later, as after a
refused login), and a leader that really holds such a contract still reconnects.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from accounts.models import TradingAccount
from copier.models import LeaderEvent, RefusedFill
from devkit.localvenue import LocalVenue, venue_start
from tests.factories import copier_position, group
from tests.helpers import wait_until
from tests.listener.helpers import listening

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"),
              pytest.mark.usefixtures("eager_tasks")]

HUGE = 3_000_000_000  # beyond a 32-bit column: read back as -1,294,967,296 before


@pytest.fixture(params=["projectx", "tradovate"])
def venue(request: pytest.FixtureRequest) -> Iterator[LocalVenue]:
    started = venue_start(request.param)
    for symbol in ("ES", "ZZ"):
        started.contract_add(symbol)
    started.contract_hide("ZZ")  # traded and held at the venue, unknown to its look-up
    try:
        yield started
    finally:
        started.stop()


def _world(venue: LocalVenue) -> tuple[TradingAccount, TradingAccount]:
    leader, f1 = venue.trading_account("L"), venue.trading_account("F1")
    leader.save()
    f1.save()
    group("g", leader, {f1: "1"})
    return leader, f1


def _at_venue(venue: LocalVenue, account: TradingAccount, symbol: str, qty: int) -> None:
    wait_until(lambda: venue.positions(account.external_id).get(symbol, 0) == qty, timeout=10,
               what=f"{account.name} holds {qty} {symbol} at the venue")


def _connected(account: TradingAccount) -> bool:
    return TradingAccount.objects.get(pk=account.pk).is_connected


def test_a_trade_on_a_contract_the_venue_cannot_name_is_refused_and_the_stream_goes_on(venue):
    leader, f1 = _world(venue)
    with listening(leader, f1):
        venue.trade(leader.external_id, "ES", "buy", 2)
        _at_venue(venue, f1, "ES", 2)
        venue.trade(leader.external_id, "ZZ", "buy", 1)
        wait_until(lambda: RefusedFill.objects.filter(account=leader, kind="fill").exists(),
                   what="the leader's trade on the unknown contract recorded as refused")
        venue.trade(leader.external_id, "ES", "sell", 2)  # the leader's next exit
        _at_venue(venue, f1, "ES", 0)
        assert _connected(leader)
    refused = RefusedFill.objects.filter(account=leader, kind="fill").get()
    assert "contract" in refused.reason
    assert refused.fill_id  # the venue's trade id, for a person to look up
    assert copier_position(leader, "ES") == copier_position(f1, "ES") == 0
    assert not venue.positions(f1.external_id)  # nothing was sent on the unknown contract
    leader.refresh_from_db()
    assert "contract" not in leader.last_error


def test_a_leader_holding_a_contract_the_venue_cannot_name_reconnects_and_copies_the_rest(
    venue
):
    leader, f1 = _world(venue)
    with listening(leader, f1):
        venue.trade(leader.external_id, "ES", "buy", 2)
        _at_venue(venue, f1, "ES", 2)
    # while no stream is open: the leader takes 1 off and buys the unknown contract; the
    # follower's trader buys it too
    venue.trade(leader.external_id, "ES", "sell", 1)
    venue.trade(leader.external_id, "ZZ", "buy", 3)
    venue.trade(f1.external_id, "ZZ", "buy", 1)
    with listening(leader, f1):  # connects: the unknown position does not fail the read
        _at_venue(venue, f1, "ES", 1)  # the missed move, copied close-only
        missed = LeaderEvent.objects.filter(account=leader, source="reconcile").get()
        assert (missed.symbol, missed.p0, missed.p1, missed.close_only) == ("ES", 2, 1, True)
        refused = RefusedFill.objects.filter(kind="position")
        assert {r.account for r in refused} == {leader, f1}
        assert all("contract" in r.reason for r in refused)
        f1.refresh_from_db()
        assert not f1.copy_paused  # what it cannot name is not the trader's difference
        venue.trade(leader.external_id, "ES", "sell", 1)
        _at_venue(venue, f1, "ES", 0)


def test_a_fill_and_position_beyond_any_account_are_refused_and_nothing_is_reversed(venue):
    """A garbled 3,000,000,000 from the venue: the fill refused, the statements and the
    re-read refused too; the follower keeps its 2 (before: applied as a reversal to
    -1,294,967,296 that closed it)."""
    leader, f1 = _world(venue)
    with listening(leader, f1):
        venue.trade(leader.external_id, "ES", "buy", 2)
        _at_venue(venue, f1, "ES", 2)
        venue.trade(leader.external_id, "ES", "buy", HUGE)
        wait_until(lambda: RefusedFill.objects.filter(account=leader, kind="fill").exists(),
                   what="the huge fill recorded as refused")
        wait_until(lambda: RefusedFill.objects.filter(account=leader, kind="position")
                   .exists(), what="the huge position recorded as refused")
        venue.trade(leader.external_id, "ES", "sell", 1)  # a fill the copier can take
        _at_venue(venue, f1, "ES", 1)
        assert _connected(leader)
    assert copier_position(leader, "ES") == 1
    assert copier_position(f1, "ES") == 1
    assert not LeaderEvent.objects.filter(source="reconcile").exists()
    reasons = " ".join(RefusedFill.objects.values_list("reason", flat=True))
    assert str(HUGE) in reasons
