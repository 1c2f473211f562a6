"""The owning listener keeps each venue account's session: it logs in once, renews before
expiry (no new login: venues flag accounts that open sessions by the thousand), stores the
token for the workers, and reopens the stream on the new token (issue 10, "Sessions")."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from accounts.models import TradingAccount
from brokers.models import BrokerSession
from brokers.sessions import session_load
from copier.models import FailedExit
from core import clock
from devkit.localvenue import LocalVenue, venue_start
from tests.factories import copier_position, group
from tests.helpers import wait_until
from tests.listener.helpers import listening

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture
def projectx() -> Iterator[LocalVenue]:
    venue = venue_start("projectx")
    try:
        yield venue
    finally:
        venue.stop()


def _account(venue: LocalVenue, name: str) -> TradingAccount:
    account = venue.trading_account(name)
    account.save()
    return account


def test_the_listener_logs_in_once_and_stores_the_session_encrypted(projectx):
    leader, f1 = _account(projectx, "L"), _account(projectx, "F1")
    group("g", leader, {f1: "1"})
    with listening(leader, f1):
        stored = session_load(f1.pk, fresh=True)
        assert stored is not None
        assert projectx.calls.get("/api/Auth/loginKey") == 2  # one per account, not per call
        raw = BrokerSession.objects.extra(select={"raw": "token"}).values_list("raw", flat=True)
        assert stored.token not in list(raw)  # encrypted at rest
        assert BrokerSession.objects.get(account=f1).obtained_by == "in-process"


def test_a_session_near_expiry_is_renewed_without_a_new_login_and_the_stream_reopens(
    projectx
):
    """The copier's clock stands 3 s before the tokens' expiry: the listener renews them
    (Auth/validate), never logs in again, stores the new token and reconnects on it."""
    leader, f1 = _account(projectx, "L"), _account(projectx, "F1")
    group("g", leader, {f1: "1"})
    with listening(leader, f1):
        first = session_load(f1.pk, fresh=True)
        assert first is not None
    clock.freeze(first.expires_at - dt.timedelta(seconds=3))
    try:
        with listening(leader, f1):
            wait_until(lambda: projectx.calls.get("/api/Auth/validate", 0) >= 2, timeout=15,
                       what=f"both sessions renewed ({projectx.calls})")
            wait_until(lambda: (s := session_load(f1.pk, fresh=True)) is not None
                       and s.token != first.token, what="the renewed token stored")
            wait_until(lambda: TradingAccount.objects.filter(
                pk__in=[leader.pk, f1.pk], connection_state="connected").count() == 2,
                what="both reconnected on the new token")
            clock.release()  # the renewed tokens are good for a day: no more renewals
            assert projectx.calls.get("/api/Auth/loginKey") == 2  # the first listener's only
    finally:
        clock.release()


@pytest.mark.usefixtures("eager_tasks")
@pytest.mark.parametrize("streams_close", [False, True], ids=["hub-open", "hub-closed"])
def test_a_session_revoked_before_its_expiry_is_replaced_and_the_queued_exit_goes_out(
    projectx, streams_close
):
    """The venue refuses every token long before its expiry (a key reset): the follower's
    exit fails without running and is queued, its stored session is dropped, and the
    listener logs in again at once (not in up to 23 hours), reconnects, and the queued
    exit goes out. Whether the hub drops the sockets of the refused tokens or keeps them
    open (the worker's 401 is then the only sign), the listener finds out."""
    leader, f1 = _account(projectx, "L"), _account(projectx, "F1")
    group("g", leader, {f1: "1"})
    with listening(leader, f1):
        projectx.trade(leader.external_id, "ESZ6", "buy", 2)
        wait_until(lambda: copier_position(f1, "ESZ6") == 2, timeout=20,
                   what="the entry copied")
        first = session_load(f1.pk, fresh=True)
        assert first is not None
        logins = projectx.calls["/api/Auth/loginKey"]
        projectx.tokens_revoke(streams_close=streams_close)
        if streams_close:  # the leader's stream reopens only with a new login
            wait_until(lambda: projectx.calls["/api/Auth/loginKey"] > logins,
                       timeout=20, what="the listener logged in again")
            wait_until(lambda: projectx.hub_connections() == 2, timeout=20,
                       what="both streams back")
        projectx.trade(leader.external_id, "ESZ6", "sell", 2)
        wait_until(lambda: FailedExit.objects.filter(account=f1).exists()
                   or copier_position(f1, "ESZ6") == 0, timeout=20, what="the exit decided")
        wait_until(lambda: projectx.positions(f1.external_id) == {}, timeout=20,
                   what="the follower's exit went out")
        wait_until(lambda: copier_position(f1, "ESZ6") == 0, timeout=20,
                   what="and was counted")
        stored = session_load(f1.pk, fresh=True)
        assert stored is not None
        assert stored.token != first.token
        assert projectx.calls["/api/Auth/loginKey"] > logins
        wait_until(lambda: TradingAccount.objects.filter(
            pk=f1.pk, connection_state="connected").exists(), timeout=20,
            what="F1 connected again")
    sells = [o for o in projectx.orders(f1.external_id) if o["side"] == 1]
    assert [o["size"] for o in sells if o["status"] == 2] == [2]  # sent once
    if not streams_close:
        assert FailedExit.objects.get(account=f1).status == "done"
