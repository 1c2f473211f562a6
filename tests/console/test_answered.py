"""The answered orders are one set (core.trading.ANSWERED): the latency window, a
follower's last copy and the event page count the same orders, and the venue's answer and
the copier's record speak one vocabulary."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from accounts.models import TradingAccount
from brokers.base import OrderResult
from copier.console.decisions import event_follower_latencies
from copier.console.latency import latency_window
from copier.console.selectors import _last_latencies
from copier.models import Decision, LeaderEvent, Order
from core.trading import ANSWERED, VENUE_ANSWERS, OrderStatus
from tests.factories import T0

ROOT = Path(__file__).resolve().parents[2]


def test_the_copier_stores_a_status_in_the_venues_vocabulary():
    assert {s.value for s in Order.Status} == {s.value for s in OrderStatus}
    assert ANSWERED < VENUE_ANSWERS < set(OrderStatus)
    result = OrderResult("c", "b", OrderStatus.FILLED, 1)
    assert Order.Status(result.status) is Order.Status.FILLED


def test_no_hand_written_statement_spells_an_order_status():
    # SQL's literals are single-quoted, after a comparison or in a list; the code's
    # strings are double-quoted (ruff's style), a subscript in an f-string is not SQL
    literal = re.compile(r"(\bIN \(|[=>,] *)'({})'".format(
        "|".join(s.value for s in OrderStatus)), re.IGNORECASE)
    found = [f"{path.relative_to(ROOT)}:{n}"
             for package in ("copier", "brokers", "accounts", "core")
             for path in (ROOT / package).rglob("*.py") if "migrations" not in path.parts
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if literal.search(line)]
    assert not found, found


@pytest.mark.django_db
def test_the_latency_figures_count_the_answered_orders_only():
    leader, follower = (TradingAccount.objects.create(name=n) for n in ("L", "F"))
    ev = LeaderEvent.objects.create(account=leader, fill_id="f1", symbol="ES", side="buy",
                                    qty=1, p0=0, p1=1, received_at=T0)
    d = Decision.objects.create(event=ev, account=follower, symbol="ES", reason="copied",
                                position_before=0, expected_before=0, expected_after=1,
                                created_at=T0)
    # every stored status with an answer time, the answered ones first and faster: one not
    # answered would show as the slowest (and the last) if it were counted
    stored = [s for s in Order.Status if s != Order.Status.SUBMITTING]
    for i, status in enumerate(sorted(stored, key=lambda s: s not in ANSWERED)):
        ms = 10 + i if status in ANSWERED else 5000 - i
        Order.objects.create(client_order_id=f"c-{status}", account=follower, symbol="ES",
                             side="buy", qty=1, kind="entry", status=status, decision=d,
                             filled_qty=1 if status == Order.Status.FILLED else 0,
                             created_at=T0 + dt.timedelta(microseconds=i),
                             completed_at=T0 + dt.timedelta(milliseconds=ms))
    assert latency_window("hour", T0 - dt.timedelta(hours=1)).count == len(ANSWERED)
    assert max(event_follower_latencies(ev).values()) < 5000 - len(stored)
    ms, _, event_id = _last_latencies([follower.pk])[follower.pk]
    assert ms < 5000 - len(stored)
    assert event_id == ev.pk
