"""/metrics: counters and the latency histogram folded from the database at scrape time,
the same for every process, and the endpoint closed to whom it is not for."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import RequestFactory
from django.urls import resolve
from prometheus_client.parser import text_string_to_metric_families

from copier.models import FailedExit, LeaderEvent, Order
from core import clock
from tests.factories import account, connect, group, leader_fill

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"),
              pytest.mark.usefixtures("eager_tasks", "frozen_clock")]


class Client:
    """The URL as routed (copier.shell.urls), called through a request factory: the cheap
    flush of these tests has no auth app for the middleware stack."""

    def get(self, path: str, **headers):
        return resolve(path).func(RequestFactory().get(path, **headers))


@pytest.fixture
def client() -> Client:
    return Client()


def _scrape(client, **headers) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


@pytest.fixture
def copied(settings):
    """A leader's fill copied to two followers through the engine (sim broker)."""
    settings.COPIER_METRICS_SETTLE_SECONDS = 30
    leader, f1, f2 = account("L"), account("F1"), account("F2")
    group("g", leader, {f1: "1", f2: "2"})
    connect(leader, f1, f2)
    leader_fill(leader, "ES", "buy", 1)
    event = LeaderEvent.objects.get()
    # the fill was read 0.2 s before the orders were acknowledged
    LeaderEvent.objects.filter(pk=event.pk).update(
        received_at=clock.now() - dt.timedelta(seconds=0.2))
    return leader, f1, f2


def test_a_copy_shows_in_the_counters_once_settled_and_only_once(client, copied):
    samples = _scrape(client)
    assert samples[("copier_copy_latency_seconds_count", ())] == 0  # not settled yet
    clock.freeze(clock.now() + dt.timedelta(seconds=31))
    samples = _scrape(client)
    assert samples[("copier_decisions_total", (("reason", "copied"),))] == 2
    assert samples[("copier_copy_latency_seconds_count", ())] == 2
    assert samples[("copier_copy_latency_seconds_sum", ())] == pytest.approx(0.4)
    assert samples[("copier_copy_latency_seconds_bucket", (("le", "0.1"),))] == 0
    assert samples[("copier_copy_latency_seconds_bucket", (("le", "0.25"),))] == 2
    assert samples[("copier_copy_latency_seconds_bucket", (("le", "+Inf"),))] == 2
    again = _scrape(client)  # a second scrape (another process) counts nothing twice
    assert again[("copier_decisions_total", (("reason", "copied"),))] == 2
    assert again[("copier_copy_latency_seconds_count", ())] == 2


def test_gauges_read_the_state_now(client, copied):
    _leader, f1, f2 = copied
    f1.copy_paused = True
    f1.save()
    f2.connection_state = "disconnected"
    f2.save()
    now = clock.now()
    FailedExit.objects.create(account=f1, symbol="ES", side="sell", qty=1, first_failed_at=now,
                              next_attempt_at=now, updated_at=now)
    Order.objects.filter(account=f2).update(status="rejected")
    clock.freeze(now + dt.timedelta(seconds=60))
    samples = _scrape(client)
    assert samples[("copier_paused_accounts", ())] == 1
    assert samples[("copier_failed_exits", (("status", "pending"),))] == 1
    assert samples[("copier_failed_exit_oldest_age_seconds", ())] == 60
    state = "copier_account_connection_state"
    assert samples[(state, (("account", "F2"), ("broker", "sim"), ("state", "disconnected")))] == 1
    assert samples[(state, (("account", "F2"), ("broker", "sim"), ("state", "connected")))] == 0
    assert samples[(state, (("account", "L"), ("broker", "sim"), ("state", "connected")))] == 1
    assert samples[("copier_broker_errors_total",
                    (("broker", "sim"), ("outcome", "rejected")))] == 1
    assert samples[("copier_events_open", ())] == 0


def test_without_a_token_only_loopback_that_no_proxy_forwarded(client, settings):
    settings.COPIER_METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 200  # the test client is 127.0.0.1
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 403
    assert client.get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 403


def test_with_a_token_a_bearer_token_is_required(client, settings):
    settings.COPIER_METRICS_TOKEN = "scrape-secret"
    response = client.get("/metrics")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    ok = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret",
                    REMOTE_ADDR="10.1.2.3")
    assert ok.status_code == 200
    assert b"copier_paused_accounts" in ok.content
