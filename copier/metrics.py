"""Prometheus metrics, read from the database when Prometheus scrapes `/metrics`.

The copier runs in many processes (gunicorn's web workers, Celery's worker processes,
the listener): a counter kept in one process's memory would report that process's
share, and a different one at each scrape. So nothing is counted in memory. At scrape:

- gauges (failed-exit queue, paused accounts, connection states, the outboxes) are
  cheap aggregate queries over small or partially indexed tables;
- counters (decisions by reason, broker errors) and the copy latency histogram are
  tallies kept in the database (`MetricTally`). Each scrape folds in the rows written
  since the last one, by primary key after a watermark, so a scrape reads only what is
  new (at most `FOLD_LIMIT` rows; a backlog catches up over a few scrapes). A row is
  folded once it is `COPIER_METRICS_SETTLE_SECONDS` old, so that a transaction still
  open behind the watermark (a slow copy) has committed. Concurrent scrapes fold under
  a transaction-scoped advisory lock; one that does not get it reports the tallies as
  they stand. Counters therefore lag real time by that settle delay.

Copy latency is fill read -> order acknowledged: `LeaderEvent.received_at` (the
listener took the fill off the stream) to `Order.completed_at` (the broker's answer
was in), for the copy orders of events (not the failed-exit retries). An order whose
outcome was still unknown when folded has no latency; it counts as a broker error.

Access: with `COPIER_METRICS_TOKEN` set, a bearer token; without it, loopback only.
"""

from __future__ import annotations

import datetime as dt
import hmac
import ipaddress
from collections import defaultdict
from collections.abc import Iterator

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Min
from django.http import HttpRequest, HttpResponse
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from accounts.models import ConnectionState, TradingAccount
from copier import sql
from copier.models import Alert, Decision, FailedExit, LeaderEvent, MetricTally, Order
from core import clock
from core.trading import ANSWERED

# Seconds. A copy's own work is tens of milliseconds; a broker's answer decides the rest.
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
FOLD_LIMIT = 5000
_FOLD_LOCK = 0x636F7079  # pg advisory lock key: "copy"
_BROKER_ERROR_STATUSES = (Order.Status.REJECTED, Order.Status.UNKNOWN)
Tally = defaultdict[str, float]


# --- folding new rows into the tallies -------------------------------------------------


def tallies_fold() -> bool:
    """Count the rows written since the last fold. False when another scrape is folding."""
    with transaction.atomic():
        if not sql.advisory_xact_try_lock(key=_FOLD_LOCK):
            return False
        tallies = dict(MetricTally.objects.values_list("key", "value"))
        cutoff = clock.now() - _settle()
        add: Tally = defaultdict(float)
        _decisions_fold(int(tallies.get("watermark:decision", 0)), cutoff, add)
        _orders_fold(int(tallies.get("watermark:order", 0)), cutoff, add)
        if add:
            _tallies_add(add)
    return True


def _settle() -> dt.timedelta:
    return dt.timedelta(seconds=settings.COPIER_METRICS_SETTLE_SECONDS)


def _decisions_fold(watermark: int, cutoff: dt.datetime, add: Tally) -> None:
    rows = (Decision.objects.filter(pk__gt=watermark).order_by("pk")
            .values_list("pk", "reason", "created_at")[:FOLD_LIMIT])
    last = watermark
    for pk, reason, created_at in rows:
        if created_at > cutoff:
            break
        add[f"decisions:{reason}"] += 1
        last = pk
    if last != watermark:
        add["watermark:decision"] += last - watermark


def _orders_fold(watermark: int, cutoff: dt.datetime, add: Tally) -> None:
    rows = (Order.objects.filter(pk__gt=watermark).order_by("pk")
            .values_list("pk", "status", "created_at", "completed_at", "account__broker",
                         "decision__event__received_at")[:FOLD_LIMIT])
    last = watermark
    for pk, status, created_at, completed_at, broker, received_at in rows:
        if created_at > cutoff:
            break
        last = pk
        if status in _BROKER_ERROR_STATUSES:
            add[f"broker_errors:{broker}:{status}"] += 1
        if received_at is None or completed_at is None or status not in ANSWERED:
            continue
        seconds = max(0.0, (completed_at - received_at).total_seconds())
        bucket = next((b for b in LATENCY_BUCKETS if seconds <= b), "+Inf")
        add[f"latency:bucket:{bucket}"] += 1
        add["latency:count"] += 1
        add["latency:sum"] += seconds
    if last != watermark:
        add["watermark:order"] += last - watermark


def _tallies_add(add: Tally) -> None:
    """One upsert for every tally (copier.sql.metric_tallies_add)."""
    sql.metric_tallies_add(dict(add))


# --- the collector ---------------------------------------------------------------------


class CopierCollector(Collector):
    """Everything read from the database at scrape time (see the module's docstring)."""

    def collect(self) -> Iterator[Metric]:
        tallies = dict(MetricTally.objects.values_list("key", "value"))
        yield _latency(tallies)
        decisions = CounterMetricFamily(
            "copier_decisions", "Copy decisions by the rules' reason.", labels=["reason"])
        for key, value in sorted(tallies.items()):
            if key.startswith("decisions:"):
                decisions.add_metric([key.split(":", 1)[1]], value)
        yield decisions
        errors = CounterMetricFamily(
            "copier_broker_errors", "Copy orders a broker rejected, or whose outcome was "
            "unknown when counted.", labels=["broker", "outcome"])
        for key, value in sorted(tallies.items()):
            if key.startswith("broker_errors:"):
                _, broker, outcome = key.split(":", 2)
                errors.add_metric([broker, outcome], value)
        yield errors
        yield from _gauges()

    def describe(self) -> Iterator[Metric]:
        return iter(())  # read at scrape only: never collect while registering


def _latency(tallies: dict[str, float]) -> HistogramMetricFamily:
    cumulative, buckets = 0.0, []
    for bound in (*LATENCY_BUCKETS, "+Inf"):
        cumulative += tallies.get(f"latency:bucket:{bound}", 0.0)
        buckets.append((str(bound), cumulative))
    return HistogramMetricFamily(
        "copier_copy_latency_seconds",
        "Leader fill read from the stream -> the follower's order acknowledged by the broker.",
        buckets=buckets, sum_value=tallies.get("latency:sum", 0.0))


def _gauges() -> Iterator[Metric]:
    queue = GaugeMetricFamily("copier_failed_exits", "Queued exits not settled yet, by status.",
                              labels=["status"])
    counts = dict(FailedExit.objects.filter(status__in=[
        FailedExit.Status.PENDING, FailedExit.Status.IN_FLIGHT]).values("status")
        .annotate(n=Count("id")).values_list("status", "n"))
    for status in (FailedExit.Status.PENDING, FailedExit.Status.IN_FLIGHT):
        queue.add_metric([status], counts.get(status, 0))
    yield queue
    oldest = FailedExit.objects.filter(status=FailedExit.Status.PENDING).aggregate(
        m=Min("first_failed_at"))["m"]
    yield GaugeMetricFamily(
        "copier_failed_exit_oldest_age_seconds", "Age of the oldest pending queued exit "
        "(abandoned after 7 days).",
        value=(clock.now() - oldest).total_seconds() if oldest else 0.0)
    yield GaugeMetricFamily("copier_paused_accounts", "Accounts paused by the Sync Divergence "
                            "Guard.", value=TradingAccount.objects.filter(copy_paused=True).count())
    states = GaugeMetricFamily(
        "copier_account_connection_state", "1 for the state each account's listener "
        "connection is in.", labels=["account", "broker", "state"])
    for name, broker, state in TradingAccount.objects.order_by("name").values_list(
            "name", "broker", "connection_state"):
        for choice in ConnectionState.values:
            states.add_metric([name, broker, choice], 1.0 if state == choice else 0.0)
    yield states
    yield GaugeMetricFamily(
        "copier_events_open", "Leader events stored and not done yet.",
        value=LeaderEvent.objects.exclude(status=LeaderEvent.Status.DONE).count())
    yield GaugeMetricFamily(
        "copier_alerts_unsent", "Alerts in the outbox not delivered yet.",
        value=Alert.objects.filter(status__in=[Alert.Status.PENDING, Alert.Status.SENDING])
        .count())


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(CopierCollector())


# --- the view --------------------------------------------------------------------------


def metrics_allowed(request: HttpRequest) -> bool:
    """A bearer token when one is configured; else only loopback, and nothing a proxy
    forwarded (a proxy on the same host would make every visitor look local)."""
    token = settings.COPIER_METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())
    if "X-Forwarded-For" in request.headers or "Forwarded" in request.headers:
        return False
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus's text format; 401 (token configured) or 403 (not loopback) otherwise."""
    if not metrics_allowed(request):
        if settings.COPIER_METRICS_TOKEN:
            response = HttpResponse("a bearer token is required\n", status=401,
                                    content_type="text/plain")
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
        return HttpResponse("/metrics answers loopback only; set COPIER_METRICS_TOKEN to "
                            "scrape it from elsewhere\n", status=403, content_type="text/plain")
    tallies_fold()
    # the format the scraper asks for (Accept): Prometheus 2 and 3, OpenMetrics
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(REGISTRY), content_type=content_type)
