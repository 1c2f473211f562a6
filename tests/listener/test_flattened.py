"""A flattened follower keeps its stream until the flatten's exits are done, whatever its own
or its group's mode (docs/rules.md#flatten-and-the-kill-switch)."""

from __future__ import annotations

import pytest

from accounts.models import TradingAccount
from brokers.sim import SimBroker
from copier.models import CopyGroup, FailedExit, Follower
from copier.services import killswitch
from copier.services.sync_guard import connection_lost
from copier.stream.process import accounts_wanted
from tests.factories import account, broker_position, connect, copier_position, group, leader_fill
from tests.helpers import wait_until
from tests.listener.helpers import listener_thread

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"),
              pytest.mark.usefixtures("eager_tasks")]


def _state(acct: TradingAccount) -> TradingAccount:
    return TradingAccount.objects.get(pk=acct.pk)


def test_a_flattened_follower_of_a_group_that_is_off_is_streamed_until_its_exit_is_done():
    leader, f1, f2 = account("L"), account("F1"), account("F2")
    g = group("g", leader, {f1: "1", f2: "1"})
    connect(leader, f1, f2)
    leader_fill(leader, "ES", "buy", 2)
    # The group is switched off: no listener streams its accounts any more.
    CopyGroup.objects.filter(pk=g.pk).update(enabled=False)
    for a in (leader, f1, f2):
        connection_lost(account=a, reason="not in an enabled copy group")
    assert accounts_wanted() == {}
    killswitch.flatten(followers=[Follower.objects.get(account=f1)], by="alice")
    fe = FailedExit.objects.get(account=f1)
    assert (fe.status, fe.action_id is not None) == ("pending", True)
    # A person switches the follower off too: its flatten's exit still needs the stream.
    Follower.objects.filter(account=f1).update(enabled=False)
    assert set(accounts_wanted()) == {f1.pk}
    with listener_thread("A"):
        wait_until(lambda: broker_position(f1, "ES") == 0, timeout=10,
                   what="the flatten's exit sent once the follower is streamed")
        wait_until(lambda: FailedExit.objects.get(pk=fe.pk).status == "done", timeout=5,
                   what="the flatten's exit done")
        assert copier_position(f1, "ES") == 0
        # Done: nothing keeps the follower's stream; the others were never taken.
        wait_until(lambda: _state(f1).stream_owner == "", timeout=5,
                   what="the follower's stream released")
        assert (_state(leader).stream_owner, _state(f2).stream_owner) == ("", "")
    assert broker_position(f2, "ES") == 2  # not flattened
    assert SimBroker(f2).positions() == {"ES": 2}
