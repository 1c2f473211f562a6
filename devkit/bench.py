"""The copy benchmark's measurements (`manage.py copier_bench`): accounts, a real worker,
the leader's fills, and the figures from the rows' own stamps. See the command's docstring
for what is measured and why."""


from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError

NOOP_KEY = "copier:bench:noop"
SYMBOL = "MNQ"
# How often the bench looks at the rows while a copy runs (it never times anything itself).
POLL_SECONDS = 0.025


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    if not samples_ms:
        return {}
    ordered = sorted(samples_ms)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"n": len(ordered), "p50": round(statistics.median(ordered), 2), "p90": pick(0.9),
            "p99": pick(0.99), "max": round(ordered[-1], 2)}


class Bench:
    def __init__(self, options: dict[str, Any]) -> None:
        self.o = options

    def run(self) -> dict[str, Any]:
        import redis

        self.redis = redis.Redis.from_url(settings.REDIS_URL)
        with ExitStack() as stack:
            self.venue = None
            if self.o["broker"] != "sim":
                from devkit.localvenue import venue_start

                self.venue = venue_start(self.o["broker"])
                stack.callback(self.venue.stop)
                self.venue.contract_add(SYMBOL)
            leader = self._setup()
            stack.callback(self._stop_worker)
            self._start_worker()
            if self.venue is not None:
                stack.callback(self._stop_listener)
                self._start_listener(leader)
            self._noop_samples(20)  # warm the worker up
            noop, latency, fanout = self._latency(leader)
            throughput = self._throughput(leader)
            round_trip = self._round_trips(50) if self.venue is not None else {}
        one = latency.get("p50") if self.o["followers"] == 1 else None
        venue = {}
        if round_trip and noop and latency:
            floor = noop["p50"] + round_trip["p50"]
            venue = {"venue_round_trip_ms": round_trip,
                     "floor_p50_ms": round(floor, 2),
                     "copy_p50_over_floor_ms": round((one or fanout["p50"]) - floor, 2)}
        stages = {name: percentiles(v)["p50"]
                  for name, v in getattr(self, "stages", {}).items()}
        return {
            "broker": self.o["broker"], **venue,
            "copy_stages_p50_ms": stages,
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
            "followers": self.o["followers"], "worker_pool": self.o["pool"],
            "worker_concurrency": self.o["concurrency"], "warmup_events": self.o["warmup"],
            "idle_gap_ms": self.o["gap_ms"],
            "batch_size": self.o["batch_size"] or settings.COPIER_BATCH_SIZE,
            "noop_task_latency_ms": noop,
            "copy_latency_ms": latency,
            "copy_to_fill_known_ms": percentiles(getattr(self, "fill_known", [])),
            "fanout_latency_ms": fanout,
            "throughput": throughput,
            "copy_p50_over_noop_p50": round((one or fanout["p50"]) / noop["p50"], 2)
            if noop else None,
        }

    # --- setup --------------------------------------------------------------------------------
    def _account(self, name: str) -> Any:
        from accounts.models import TradingAccount

        if self.venue is None:
            return TradingAccount(name=name, broker="sim")
        return self.venue.trading_account(name)

    def _setup(self) -> Any:
        from accounts.models import TradingAccount
        from copier.models import CopyGroup, Follower
        from copier.services.stream_events import broker_events_pump

        stamp = time.strftime("%H%M%S")
        leader = self._account(f"BENCH-{stamp}-L")
        leader.save()
        group = CopyGroup.objects.create(name=f"bench-{stamp}", leader=leader)
        followers = TradingAccount.objects.bulk_create(
            self._account(f"BENCH-{stamp}-F{i}") for i in range(self.o["followers"])
        )
        Follower.objects.bulk_create(Follower(group=group, account=a) for a in followers)
        self.accounts = [leader, *followers]
        if self.venue is None:  # the listener connects venue accounts
            for account in self.accounts:
                broker_events_pump(account=account)
        leader.refresh_from_db()
        return leader

    def _start_listener(self, leader: Any) -> None:
        """A real `copier_listen`, and wait until it has connected every account."""
        from accounts.models import TradingAccount

        self.listener = subprocess.Popen(
            [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "copier_listen"],
            env=dict(os.environ), cwd=settings.BASE_DIR, stdout=sys.stderr, stderr=sys.stderr,
        )
        ids = [a.pk for a in self.accounts]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.listener.poll() is not None:
                raise CommandError("copier_listen exited while connecting the accounts")
            if TradingAccount.objects.filter(pk__in=ids, connection_state="connected").count() \
                    == len(ids):
                return
            time.sleep(0.1)
        raise CommandError("copier_listen did not connect every account within 120 s")

    def _stop_listener(self) -> None:
        self.listener.terminate()
        try:
            self.listener.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.listener.kill()

    def _round_trips(self, count: int) -> dict[str, float]:
        """One HTTP request to the local venue and its answer, on a kept-alive connection:
        the part of a copy that is the venue's, not the copier's."""
        import httpx

        assert self.venue is not None
        url = self.venue.credentials(self.accounts[0].external_id).get("api_url", "")
        samples: list[float] = []
        with httpx.Client(timeout=5) as http:
            for i in range(count + 5):
                start = time.perf_counter()
                http.get(url.rstrip("/") + "/bench-round-trip")
                if i >= 5:
                    samples.append((time.perf_counter() - start) * 1000)
        return percentiles(samples)

    def _start_worker(self) -> None:
        env = dict(os.environ)
        if self.o["batch_size"]:
            env["COPIER_BATCH_SIZE"] = str(self.o["batch_size"])
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "copier", "worker", "-l", "WARNING",
             "--pool", self.o["pool"], "--concurrency", str(self.o["concurrency"]),
             "--without-gossip", "--without-mingle", "-n", f"bench-{os.getpid()}@%h"],
            env=env, cwd=settings.BASE_DIR, stdout=sys.stderr,  # stdout carries only the JSON
        )
        from copier.shell.celery import app

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if app.control.ping(timeout=0.5):
                return
        raise CommandError("the benchmark worker did not start within 60 s")

    def _stop_worker(self) -> None:
        self.worker.terminate()
        try:
            self.worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.worker.kill()

    # --- measurements ---------------------------------------------------------------------------
    def _noop_samples(self, count: int) -> list[float]:
        from devkit import tasks

        self.redis.delete(NOOP_KEY, NOOP_KEY + ":ms")
        for _ in range(count):
            tasks.noop.delay(time.time())
            if self.redis.blpop([NOOP_KEY], timeout=30) is None:
                raise CommandError("no-op task did not run within 30 s")
        samples: list[bytes] = self.redis.lrange(NOOP_KEY + ":ms", 0, -1)  # type: ignore[assignment]
        return [float(x) for x in samples]

    def _fill(self, leader: Any) -> int:
        from brokers.sim import SimBroker
        from copier.models import LeaderEvent
        from copier.services.stream_events import broker_events_pump
        from core.trading import Side

        self._n = getattr(self, "_n", 0) + 1
        side = Side.BUY if self._n % 2 else Side.SELL
        if self.venue is None:
            SimBroker(leader).execute_fill(SYMBOL, side, 1)
            broker_events_pump(account=leader)
            return LeaderEvent.objects.filter(account=leader).latest("id").pk
        before = LeaderEvent.objects.filter(account=leader).count()
        self.venue.trade(leader.external_id, SYMBOL, side.value, 1)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the listener reads the frame and stores it
            # Gently: the figures come from row stamps, and this process hosts the local
            # venue's server thread, which a tight poll here would hold off the GIL.
            time.sleep(POLL_SECONDS)
            events = list(LeaderEvent.objects.filter(account=leader).order_by("id")
                          .values_list("id", flat=True)[before:])
            if events:
                return events[0]
        raise CommandError("the listener did not store the leader's fill within 30 s")

    def _wait_done(self, ids: list[int], timeout: float = 120.0) -> None:
        from copier.models import LeaderEvent

        deadline = time.monotonic() + timeout
        while LeaderEvent.objects.filter(pk__in=ids).exclude(status="done").exists():
            if time.monotonic() > deadline:
                raise CommandError(f"events not copied within {timeout} s")
            time.sleep(POLL_SECONDS)  # the figures come from row timestamps: poll gently

    def _order_latencies(self, event_id: int) -> tuple[list[float], list[float]]:
        """Per filled order: the fill read until the venue acknowledged the order (its answer
        to the placement: what the issue's goal measures), and until the copier knew the
        fill (the sim answers both at once; a venue's fill is read back after)."""
        from copier.models import LeaderEvent, Order

        event = LeaderEvent.objects.get(pk=event_id)
        acknowledged, known = [], []
        for ack, done in (Order.objects.filter(decision__event_id=event_id, status="filled")
                          .values_list("acknowledged_at", "completed_at")):
            if done is None:
                continue
            known.append((done - event.received_at).total_seconds() * 1000)
            acknowledged.append(((ack or done) - event.received_at).total_seconds() * 1000)
        return acknowledged, known

    def _latency(self, leader: Any) -> tuple[dict[str, float], ...]:
        """Events one at a time, each paired with one bare task, both sent after the same
        idle gap: the floor and the copy are sampled under the same conditions. (A bare
        task sent right after another one finds the worker hotter than any copy does.)"""
        noops: list[float] = []
        orders: list[float] = []
        fanout: list[float] = []
        self.fill_known: list[float] = []
        warmup = self.o["warmup"]
        gap = self.o["gap_ms"] / 1000
        for i in range(self.o["events"] + warmup):
            time.sleep(gap)
            floor = self._noop_samples(1)
            time.sleep(gap)
            event_id = self._fill(leader)
            self._wait_done([event_id])
            samples, known = self._order_latencies(event_id)
            if i >= warmup and samples:
                noops += floor
                orders += samples
                self.fill_known += known
                fanout.append(max(samples))
                self._stages_add(event_id)
        return percentiles(noops), percentiles(orders), percentiles(fanout)

    def _stages_add(self, event_id: int) -> None:
        """Where one copy's time went, from the rows' own stamps: the fill read until the
        worker started the event (ingest, publish, pick-up), until its first order went to
        the broker (locks, rules), the broker's answer, and the rest of the transaction."""
        from copier.models import LeaderEvent, Order

        event = LeaderEvent.objects.get(pk=event_id)
        order = (Order.objects.filter(decision__event_id=event_id).order_by("submitted_at")
                 .first())
        if order is None:
            return
        acknowledged = order.acknowledged_at or order.completed_at
        marks = [m for m in (event.received_at, event.dispatched_at, order.submitted_at,
                             acknowledged, order.completed_at, event.done_at) if m is not None]
        if len(marks) < 6:
            return
        names = ["read_to_started", "started_to_sent", "sent_to_acknowledged",
                 "acknowledged_to_fill_known", "fill_known_to_done"]
        stages: dict[str, list[float]] = self.__dict__.setdefault("stages", {})
        for name, a, b in zip(names, marks, marks[1:], strict=False):
            stages.setdefault(name, []).append((b - a).total_seconds() * 1000)

    def _throughput(self, leader: Any) -> dict[str, float | None]:
        from copier.models import LeaderEvent, Order

        if not self.o["burst"]:
            return {}
        start = time.time()
        ids = [self._fill(leader) for _ in range(self.o["burst"])]
        self._wait_done(ids, timeout=600)
        first = LeaderEvent.objects.filter(pk__in=ids).earliest("received_at").received_at
        last = max(done for done in Order.objects.filter(decision__event_id__in=ids)
                   .values_list("completed_at", flat=True) if done is not None)
        count = Order.objects.filter(decision__event_id__in=ids, status="filled").count()
        seconds = (last - first).total_seconds()
        return {"events": len(ids), "orders": count, "seconds": round(seconds, 3),
                "orders_per_second": round(count / seconds, 1) if seconds else None,
                "wall_seconds": round(time.time() - start, 3)}
