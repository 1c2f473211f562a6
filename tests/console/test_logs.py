"""JSON logs: structured fields, switched by COPIER_LOG_FORMAT, and no secret in anything a
full copy logs."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from django.conf import settings as django_settings

from brokers.sim import SimBroker
from copier import alerts
from copier.models import AlertConfig, LeaderEvent, Quarantine
from copier.services.quarantine import quarantine_create
from copier.shell.logs import ContextFilter, JsonFormatter, log_context
from tests.factories import account, connect, group, leader_fill


def _records(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line]


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Everything logged anywhere, at every level, as the production handler writes it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_a_record_carries_its_fields_and_the_tasks_context(json_log):
    log = logging.getLogger("copier.test")
    with log_context(event_id=42, task="copier.process_event"):
        log.warning("copied %s", "ES", extra={"account": "F1", "client_order_id": "cp42-1-0"})
        with log_context(account="F2"):
            log.info("inner", extra={"symbol": "MNQ", "credentials": {"password": "x"}})
    log.error("outside")
    first, inner, outside = (r for r in _records(json_log) if r["logger"] == "copier.test")
    assert first["message"] == "copied ES"
    assert first["level"] == "WARNING"
    assert (first["event_id"], first["account"], first["client_order_id"], first["task"]) == (
        42, "F1", "cp42-1-0", "copier.process_event")
    assert first["time"].endswith("+00:00")
    assert (inner["account"], inner["symbol"], inner["event_id"]) == ("F2", "MNQ", 42)
    assert "credentials" not in inner  # only the known fields are written
    assert "event_id" not in outside


def test_an_exception_is_one_json_line(json_log):
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("copier.test").exception("failed")
    (record,) = (r for r in _records(json_log) if r["logger"] == "copier.test")
    assert "ValueError: boom" in record["exc"]


def _django_log(fmt: str) -> subprocess.CompletedProcess[str]:
    code = ("import django, logging; django.setup(); "
            "logging.getLogger('copier.x').warning('hello', extra={'event_id': 7})")
    env = {**os.environ, "COPIER_LOG_FORMAT": fmt,
           "DJANGO_SETTINGS_MODULE": "copier.shell.settings"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60, cwd=django_settings.BASE_DIR)


def test_the_format_is_switched_by_the_environment():
    as_json = _django_log("json")
    assert as_json.returncode == 0, as_json.stderr
    record = json.loads(as_json.stderr.strip().splitlines()[-1])
    assert (record["message"], record["event_id"], record["logger"]) == ("hello", 7, "copier.x")
    plain = _django_log("plain")
    assert plain.stderr.strip().endswith("WARNING copier.x hello")
    bad = _django_log("xml")
    assert bad.returncode != 0
    assert "COPIER_LOG_FORMAT must be json or plain, not 'xml'" in bad.stderr


SECRETS = {"password": "pw-S3CRET-one", "api_key": "key-S3CRET-two",
           "token": "tok-S3CRET-three"}
HOOK_TOKEN = "hook-S3CRET-four"


@pytest.mark.django_db(transaction=True, databases="__all__")
@pytest.mark.usefixtures("eager_tasks", "frozen_clock")
def test_a_full_copy_logs_no_secret(json_log, smtp, webhook, loopback_webhooks, settings):
    leader = account("L", credentials=json.dumps(SECRETS))
    f1 = account("F1", credentials=json.dumps({"password": SECRETS["password"]}))
    f2 = account("F2", credentials=json.dumps({"api_key": SECRETS["api_key"]}))
    g = group("g", leader, {f1: "1", f2: "2"})
    AlertConfig.objects.create(group=g, emails="ops@example.com",
                               webhook_url=webhook.url(f"/hooks/{HOOK_TOKEN}"))
    webhook.statuses = [500]  # the failure is logged too
    connect(leader, f1, f2)
    leader_fill(leader, "ES", "buy", 2)  # copied to both
    SimBroker(f2).set_reachable(False)
    leader_fill(leader, "ES", "sell", 2)  # F2's exit fails and is queued; errors logged
    quarantine_create(account=f1, symbol="NQ", reason=Quarantine.Reason.REJECTED,
                      detail="rejected")
    alerts.alerts_send()

    records = _records(json_log)
    text = json_log.getvalue()
    assert len(records) > 10
    for secret in [*SECRETS.values(), HOOK_TOKEN, django_settings.SECRET_KEY,
                   django_settings.COPIER_ENCRYPTION_KEY]:
        assert secret not in text
    event = LeaderEvent.objects.order_by("id").last()
    queued = [r for r in records if r["message"].startswith("exit queued: F2 sell 4 ES")]
    assert [(r["event_id"], r["task"]) for r in queued] == [(event.pk, "copier.process_event")]
    assert any("alert delivery by webhook" in r["message"] for r in records)
