"""`copier_bench --guard`: how fast the account guard flattens followers whose equity crossed
their buffer, through a real worker, as JSON (docs/rules.md#the-account-guard).

Every follower of a sim group holds the leader's contract under an end-of-day guard (a
$50,000 account, a $2,000 drawdown, a $150 buffer); then the market falls through every
buffer at once (`SimBroker.price_set`, and `copier.services.guard.market_moved`, which
publishes one `copier.guard_read` per guarded holder, as the sim's market controls do).
The figure runs from the price move to each follower's flatten order being sent to the
broker (the order row's `submitted_at`), and to the last one; where the time goes is
the reads' own stamps: the guard's reading kept (`read_at`) and its flatten recorded.
"""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal
from typing import Any

from django.core.management.base import CommandError

from devkit.bench import POLL_SECONDS, SYMBOL, Bench, percentiles

START, DRAWDOWN, BUFFER = Decimal(50000), Decimal(2000), Decimal(150)
ENTRY, CRASH = Decimal(20000), Decimal(19000)  # 1,000 points x $2 = $2,000: inside the buffer


class GuardBench(Bench):
    def run(self) -> dict[str, Any]:
        import redis
        from django.conf import settings

        if self.o["broker"] != "sim":
            raise CommandError("--guard runs at the sim (its market is moved by the bench)")
        self.venue = None
        self.redis = redis.Redis.from_url(settings.REDIS_URL)
        leader = self._setup()
        self._guards_add()
        self._start_worker()
        try:
            self._noop_samples(20)  # warm the worker up
            self._enter(leader)
            return self._crash()
        finally:
            self._stop_worker()

    def _guards_add(self) -> None:
        from brokers.models import SimAccount
        from copier.models import AccountGuard

        followers = self.accounts[1:]
        SimAccount.objects.using("broker").bulk_create(
            [SimAccount(account=a, cash=START) for a in followers], update_conflicts=True,
            unique_fields=["account"], update_fields=["cash"])
        for a in followers:
            AccountGuard.objects.create(account=a, starting_balance=START, drawdown=DRAWDOWN,
                                        drawdown_model=AccountGuard.Model.EOD_TRAILING,
                                        trail_stop=Decimal(0), buffer=BUFFER)

    def _enter(self, leader: Any) -> None:
        """The leader buys one at the entry price; every follower copies it."""
        from brokers.sim import SimBroker
        from copier.models import LeaderEvent
        from copier.services.stream_events import broker_events_pump
        from core.trading import Side

        SimBroker(leader).execute_fill(SYMBOL, Side.BUY, 1, price=ENTRY)
        broker_events_pump(account=leader)
        self._wait_done([LeaderEvent.objects.filter(account=leader).latest("id").pk])

    def _crash(self) -> dict[str, Any]:
        from brokers.sim import SimBroker
        from copier.models import AccountGuard, Order
        from copier.services import guard

        ids = [a.pk for a in self.accounts[1:]]
        started = dt.datetime.now(dt.UTC)
        SimBroker.price_set(SYMBOL, CRASH)
        published = guard.market_moved(SYMBOL)
        publish_ms = (dt.datetime.now(dt.UTC) - started).total_seconds() * 1000
        deadline = time.monotonic() + 300
        flatten = Order.objects.filter(account_id__in=ids, decision__action__isnull=False)
        while flatten.filter(submitted_at__isnull=False).count() < len(ids):
            if time.monotonic() > deadline:
                raise CommandError("the guards did not flatten every follower within 300 s")
            time.sleep(POLL_SECONDS)  # the figures come from the rows' stamps
        sent = [(o - started).total_seconds() * 1000
                for o in flatten.values_list("submitted_at", flat=True) if o is not None]
        read = [(r - started).total_seconds() * 1000 for r in AccountGuard.objects.filter(
            account_id__in=ids).values_list("read_at", flat=True) if r is not None]
        locked = AccountGuard.objects.filter(account_id__in=ids, state="locked").count()
        return {
            "broker": "sim", "guarded_followers": len(ids), "reads_published": published,
            "worker_pool": self.o["pool"], "worker_concurrency": self.o["concurrency"],
            "publish_ms": round(publish_ms, 2),
            "price_move_to_reading_kept_ms": percentiles(read),
            "price_move_to_flatten_sent_ms": percentiles(sent),
            "last_flatten_sent_ms": round(max(sent), 2), "locked": locked,
        }
