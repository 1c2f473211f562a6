"""One account's slow work never delays another account's fills (issue 10: "blocking Django
work runs off the event loop, so one slow account never delays another account's fills")."""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection

from brokers.sim import SimBroker
from copier.models import LeaderEvent
from core.rawsql import database_conninfo
from tests.factories import account, group
from tests.helpers import wait_until
from tests.listener.helpers import listening

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def _a_session_waits_on_a_lock() -> bool:
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()")
        return cur.fetchone()[0] > 0


def _stored(leader) -> int:
    return LeaderEvent.objects.filter(account=leader).count()


def test_a_leader_whose_storing_is_stuck_delays_no_other_leaders_fill(clean_redis):
    la, lb, fa, fb = account("LA"), account("LB"), account("FA"), account("FB")
    group("ga", la, {fa: "1"})
    group("gb", lb, {fb: "1"})
    with listening(la, lb, fa, fb):
        SimBroker(la).execute_fill("ES", "buy", 1)
        wait_until(lambda: _stored(la) == 1, what="LA's first fill stored")
        # Another session holds LA's position row: storing LA's next fill waits for it.
        with psycopg.connect(database_conninfo()) as blocker:
            blocker.execute("SELECT 1 FROM accounts_position WHERE account_id = %s "
                            "FOR UPDATE", [la.pk])
            SimBroker(la).execute_fill("ES", "buy", 1)
            wait_until(_a_session_waits_on_a_lock, what="LA's storing waiting on the lock")
            SimBroker(lb).execute_fill("ES", "buy", 1)
            wait_until(lambda: _stored(lb) == 1, timeout=3, what="LB's fill stored")
            assert _stored(la) == 1  # still waiting on the lock
            blocker.rollback()
        wait_until(lambda: _stored(la) == 2, what="LA's fill stored once the lock went")
