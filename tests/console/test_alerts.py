"""Alerts: written with their state change (the outbox), sent later by email and webhook,
rate-limited per channel, retried when a delivery fails, never leaking a webhook's token.

Delivery goes to a real SMTP server and a real HTTP receiver on loopback (servers.py).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction

from accounts.models import TradingAccount
from brokers.sim import SimBroker
from copier import alerts
from copier.admin import AlertConfigForm
from copier.models import Alert, AlertConfig, AlertKind, FailedExit, Quarantine
from copier.services.failed_exits import failed_exits_prune
from copier.services.quarantine import quarantine_create
from core import clock
from tests.factories import T0, account, connect, group, leader_fill

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

TOKEN = "T0KEN-abc123-secret"


@pytest.fixture
def world(frozen_clock, smtp, webhook, loopback_webhooks):
    leader, f1, f2 = account("L"), account("F1"), account("F2")
    g = group("g", leader, {f1: "1", f2: "1"})
    AlertConfig.objects.create(group=g, emails="ops@example.com, desk@example.com",
                               webhook_url=webhook.url(f"/hooks/{TOKEN}"))
    return g, leader, f1, f2


def _advance(seconds: float) -> None:
    clock.freeze(clock.now() + dt.timedelta(seconds=seconds))


def test_a_quarantine_is_emailed_and_posted_once(world, smtp, webhook):
    g, _, f1, _ = world
    quarantine_create(account=f1, symbol="MNQ", reason=Quarantine.Reason.OPPOSITE_SIDE,
                      detail="leader long, follower short")
    assert alerts.alerts_send() == 1
    assert len(smtp.messages) == 1
    mail = smtp.messages[0]
    assert sorted(mail.rcpt_tos) == ["desk@example.com", "ops@example.com"]
    assert mail.message["Subject"] == (
        "[copier] g: F1 MNQ quarantined: opposite side: leader long, follower short; nothing "
        "is copied to F1 on MNQ until a person lifts it or both sides are flat")
    assert webhook.paths == [f"/hooks/{TOKEN}"]
    post = webhook.posts[0]
    assert post["text"] == post["content"]
    assert post["text"].startswith("[copier] g: F1 MNQ quarantined")
    alert = Alert.objects.get()
    assert (alert.status, alert.kind, alert.group, alert.delivered) == (
        "sent", "quarantine", g, ["email", "webhook"])
    _advance(3600)
    assert alerts.alerts_send() == 0  # nothing twice
    assert (len(smtp.messages), len(webhook.posts)) == (1, 1)


def test_no_alert_for_a_change_that_rolled_back(world):
    _, _, f1, _ = world
    with pytest.raises(RuntimeError), transaction.atomic():
        quarantine_create(account=f1, symbol="ES", reason=Quarantine.Reason.REJECTED,
                          detail="insufficient margin")
        assert Alert.objects.count() == 1  # written with the quarantine...
        raise RuntimeError("the copy failed after it")
    assert not Quarantine.objects.exists()
    assert not Alert.objects.exists()  # ...and gone with it


def test_a_storm_is_one_summary_per_minute(world, smtp, webhook):
    _g, _leader, f1, f2 = world
    for symbol in ["MNQ", "ES", "NQ", "CL", "GC"]:
        for acct in (f1, f2):
            quarantine_create(account=acct, symbol=symbol,
                              reason=Quarantine.Reason.OPPOSITE_SIDE)
    for acct in (f1, f2):
        alerts.alert_raise(kind="pause", account=acct, about=acct.name,
                           text=f"{acct.name} paused: positions changed")
    assert alerts.alerts_send() == 12
    assert len(smtp.messages) == 1
    assert len(webhook.posts) == 1
    headline = ("12 alerts: 10 quarantines (F1 MNQ, F2 MNQ, F1 ES, ...), "
                "2 pauses (F1, F2)")
    assert smtp.messages[0].message["Subject"] == f"[copier] g: {headline}"
    body = smtp.messages[0].message.get_content().replace("\r\n", "\n")
    assert body.startswith(headline + "\n- F1 MNQ quarantined")
    assert body.count("\n- ") == 12
    assert webhook.posts[0]["text"].splitlines()[0] == f"[copier] g: {headline}"

    # within the minute: held back, then sent alone once the minute is over
    quarantine_create(account=f1, symbol="RTY", reason=Quarantine.Reason.OPPOSITE_SIDE)
    _advance(30)
    assert alerts.alerts_send() == 0
    assert len(smtp.messages) == 1
    _advance(31)
    assert alerts.alerts_send() == 1
    assert len(smtp.messages) == 2
    assert smtp.messages[1].message["Subject"].startswith("[copier] g: F1 RTY quarantined")


def test_a_failed_delivery_is_retried_without_resending_what_arrived(
        world, smtp, webhook, caplog):
    _, _, f1, _ = world
    webhook.statuses = [500]
    caplog.set_level(logging.DEBUG)
    quarantine_create(account=f1, symbol="ES", reason=Quarantine.Reason.REJECTED,
                      detail="contract expired")
    assert alerts.alerts_send() == 0
    alert = Alert.objects.get()
    assert (alert.status, alert.delivered, alert.kind) == ("pending", ["email"], "rejection")
    assert alert.last_error == "webhook: webhook answered HTTP 500"
    assert alert.next_attempt_at == clock.now() + dt.timedelta(seconds=60)
    assert len(smtp.messages) == 1
    assert not webhook.posts
    _advance(59)
    assert alerts.alerts_send() == 0  # not due yet
    _advance(2)
    assert alerts.alerts_send() == 1
    assert len(smtp.messages) == 1  # the email is not sent a second time
    assert webhook.posts[0]["text"].startswith(
        "[copier] g: F1 ES: an order was rejected for good by the broker (contract expired)")
    alert.refresh_from_db()
    assert (alert.status, alert.delivered, alert.attempts) == ("sent", ["email", "webhook"], 2)
    assert TOKEN not in caplog.text
    assert "webhook answered HTTP 500" in caplog.text


def test_an_unreachable_destination_keeps_the_alert_and_hides_the_url(world, smtp, caplog):
    g, _, _f1, _ = world
    closed = SimplePort.closed()
    AlertConfig.objects.filter(group=g).update(emails="")
    config = AlertConfig.objects.get(group=g)
    config.webhook_url = f"http://127.0.0.1:{closed}/hooks/{TOKEN}"
    config.save()
    caplog.set_level(logging.DEBUG)
    alerts.alert_raise(kind="kill_switch", group=g, text="kill switch pulled by alice")
    assert alerts.alerts_send() == 0
    alert = Alert.objects.get()
    assert alert.status == "pending"
    assert alert.last_error == "webhook: webhook unreachable (ConnectError)"
    assert TOKEN not in caplog.text
    assert TOKEN not in alert.last_error


class SimplePort:
    @staticmethod
    def closed() -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


def test_two_concurrent_senders_send_each_alert_once(world, smtp, webhook):
    _, _, f1, f2 = world
    for i in range(5):
        alerts.alert_raise(kind="quarantine", account=f1 if i % 2 else f2,
                           about=f"F{i} ES", text=f"quarantine {i}")
    barrier = threading.Barrier(2)
    results: list[int] = []

    def sender() -> None:
        from django.db import connection

        try:
            barrier.wait()
            results.append(alerts.alerts_send())
        finally:
            connection.close()

    threads = [threading.Thread(target=sender) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [0, 5]
    assert len(smtp.messages) == 1
    assert len(webhook.posts) == 1
    assert set(Alert.objects.values_list("status", flat=True)) == {"sent"}


def test_alerts_raised_together_go_where_each_alone_would_once_per_key(world):
    """`alerts_raise` (the account guard's batch): each account's alert to each group it is
    in (a leader of two groups to both, one in none to the operator's channel), a key
    raised already or twice in the batch written once, an unknown kind refused before
    anything is written."""
    g, leader, f1, _f2 = world
    other, lone = group("g2", leader, {account("F9"): "1"}), account("LONE")
    alerts.alert_raise(kind="guard", account=f1, text="before", dedupe_key="k1")
    spec = alerts.AlertSpec
    with pytest.raises(ValueError, match="no such kind"):
        alerts.alerts_raise([spec("guard", "x", lone), spec("no such kind", "x", lone)])
    assert Alert.objects.count() == 1
    written = alerts.alerts_raise([
        spec("guard", "again", f1, "F1", "k1"), spec("guard", "L new", leader, "L", "k2"),
        spec("guard", "twin", leader, "L", "k2"), spec("guard", "lone", lone, "LONE", "k3"),
        spec("guard", "plain", lone)])
    assert sorted((a.text, a.group_id or 0) for a in written) == sorted([
        ("L new", g.pk), ("L new", other.pk), ("lone", 0), ("plain", 0)])
    assert all(a.pk for a in written)
    assert Alert.objects.filter(dedupe_key__startswith="k2").count() == 2


def test_a_sender_that_died_mid_send_is_taken_over(world, smtp):
    _, _, f1, _ = world
    alerts.alert_raise(kind="quarantine", account=f1, about="F1 ES", text="quarantine")
    Alert.objects.update(status="sending", claimed_at=clock.now())  # claimed, then it died
    assert alerts.alerts_send() == 0
    _advance(alerts.STALE_CLAIM.total_seconds())
    assert alerts.alerts_send() == 1
    assert len(smtp.messages) == 1


def test_kinds_a_group_turned_off_are_dropped(world, smtp, webhook):
    g, _, f1, _ = world
    AlertConfig.objects.filter(group=g).update(on_pause=False)
    alerts.alert_raise(kind="pause", account=f1, text="F1 paused")
    alerts.alert_raise(kind="kill_switch", group=g, text="kill switch")
    assert alerts.alerts_send() == 1
    assert dict(Alert.objects.values_list("kind", "status")) == {
        "pause": "dropped", "kill_switch": "sent"}
    assert smtp.messages[0].message["Subject"] == "[copier] g: kill switch"


def test_without_a_configuration_the_operators_addresses_get_it(frozen_clock, smtp, settings):
    settings.COPIER_ALERT_EMAILS = "operator@example.com"
    lone = account("LONE")
    alerts.alert_raise(kind="quarantine", account=lone, about="LONE ES", text="LONE ES q")
    leader, f1 = account("L2"), account("F9")
    group("unconfigured", leader, {f1: "1"})
    alerts.alert_raise(kind="pause", account=f1, text="F9 paused")
    assert alerts.alerts_send() == 2
    assert sorted(m.message["Subject"] for m in smtp.messages) == [
        "[copier] operator: LONE ES q", "[copier] unconfigured: F9 paused"]
    assert {tuple(m.rcpt_tos) for m in smtp.messages} == {("operator@example.com",)}
    settings.COPIER_ALERT_EMAILS = ""
    alerts.alert_raise(kind="quarantine", account=lone, text="nobody to tell")
    _advance(3600)
    assert alerts.alerts_send() == 0
    assert Alert.objects.filter(text="nobody to tell").get().status == "dropped"


def test_a_pause_by_the_guard_and_a_long_disconnect_alert(world, smtp):
    g, leader, f1, _ = world
    AlertConfig.objects.filter(group=g).update(disconnect_after_seconds=30)
    connect(leader, f1)
    leader_fill(leader, "ES", "buy", 1)
    sim = SimBroker(f1)
    sim.set_reachable(False)
    connect(f1)  # the poll fails: F1 is disconnected
    assert TradingAccount.objects.get(pk=f1.pk).connection_state == "disconnected"
    _advance(29)
    assert alerts.disconnects_check() == 0
    _advance(2)
    assert alerts.disconnects_check() == 1
    assert alerts.disconnects_check() == 0  # one alert per disconnection
    sim.execute_fill("ES", "buy", 3)  # a trade the copier did not see
    sim.set_reachable(True)
    connect(f1)
    kinds = list(Alert.objects.order_by("id").values_list("kind", flat=True))
    assert kinds == ["disconnect", "pause"]
    pause = Alert.objects.get(kind="pause")
    assert pause.text.startswith("F1 paused: positions changed outside the copier")
    assert alerts.alerts_send() == 2
    assert smtp.messages[0].message["Subject"] == (
        "[copier] g: 2 alerts: 1 disconnect (F1), 1 pause (F1)")
    # the next disconnection is a new one
    sim.set_reachable(False)
    connect(f1)
    _advance(31)
    assert alerts.disconnects_check() == 1


def test_an_exit_given_up_after_seven_days_alerts(world, smtp):
    _, _, f1, _ = world
    FailedExit.objects.create(
        account=f1, symbol="MNQ", side="sell", qty=2, first_failed_at=T0,
        next_attempt_at=T0, attempts=40, last_error="broker unreachable", updated_at=T0)
    _advance(7 * 86400 + 1)
    assert failed_exits_prune() == 1
    alert = Alert.objects.get()
    assert alert.kind == AlertKind.ABANDONED_EXIT
    assert alert.text.startswith("F1 MNQ: the exit sell 2 was given up after 7 days and 40 "
                                 "attempts (last error: broker unreachable)")


def test_a_leader_alert_goes_to_each_group_it_leads(frozen_clock):
    leader, f1, f2 = account("L"), account("F1"), account("F2")
    g1, g2 = group("g1", leader, {f1: "1"}), group("g2", leader, {f2: "1"})
    rows = alerts.alert_raise(kind="disconnect", account=leader, text="L away")
    assert {a.group for a in rows} == {g1, g2}


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="not_a_kind"):
        alerts.alert_raise(kind="not_a_kind", text="x")


def test_bad_addresses_and_urls_are_clear_form_errors(frozen_clock):
    g = group("g", account("L"), {account("F1"): "1"})
    form = AlertConfigForm(data={
        "group": g.pk, "emails": "ops@example.com\nnot-an-address, also bad",
        "webhook_url": "hooks.slack.com/services/x", "disconnect_after_seconds": 5,
    })
    assert not form.is_valid()
    assert form.errors["emails"] == [
        "Not an email address: not-an-address, also bad (one address per line, or comma "
        "separated)."]
    assert form.errors["webhook_url"][0].startswith("Enter the webhook's full http(s) URL")
    assert "disconnect_after_seconds" in form.errors
    assert not AlertConfig.objects.exists()
    config = AlertConfig(group=g, webhook_url="ftp://example.com/x")
    with pytest.raises(ValidationError) as err:
        config.full_clean()
    assert "ftp://" not in str(err.value)  # the message never repeats the URL
