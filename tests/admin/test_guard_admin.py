"""The account guard in the admin: a profile that makes no sense is a clear form error
that writes nothing, the live numbers and the lock are shown with why, a person resumes a
lock (with the kill switch's permission) or sets the line, and a follower the guard holds
cannot be set active from its form."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from copier.models import AccountGuard, AuditEntry, Follower, Mode
from core import clock
from tests.factories import account, group

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(client, django_user_model):
    user = django_user_model.objects.create_superuser("boss", "b@example.com", "pw-123456")
    client.force_login(user)
    return client


def _post(acct, **fields):
    data = {"account": acct.pk, "enabled": "on", "starting_balance": "50000",
            "drawdown": "2000", "drawdown_model": "eod_trailing", "trail_stop": "0",
            "buffer": "150", "warn": "400", "daily_loss_hard": "on",
            "session_reset": "17:00", "tz": "America/Chicago"}
    data.update(fields)
    return data


def _locked(acct) -> AccountGuard:
    return AccountGuard.objects.create(
        account=acct, starting_balance=Decimal(50000), drawdown=Decimal(2000),
        state="locked", equity=Decimal(48240), line=Decimal(48100), balance=Decimal(48240),
        findings=[{"trip": "drawdown", "equity": "48240", "line": "48100", "buffer": "150"}])


@pytest.mark.parametrize(("fields", "message"), [
    ({"buffer": "2500"}, "The buffer must be smaller than the drawdown."),
    ({"drawdown": "-5"}, "The drawdown must be greater than 0."),
    ({"tz": "Mars/Olympus"}, "is not a time zone"),
    ({"daily_loss": "0"}, "Daily loss must be greater than 0."),
    ({"drawdown_model": "static", "line_now": "48100"}, "A static line is the starting"),
])
def test_a_profile_that_makes_no_sense_is_a_form_error_and_writes_nothing(client, fields,
                                                                          message):
    f = account("F")
    page = client.post(reverse("admin:copier_accountguard_add"), _post(f, **fields))
    assert page.status_code == 200
    assert message in page.content.decode().replace("&#x27;", "'")
    assert not AccountGuard.objects.exists()


def test_the_profile_is_saved_and_the_line_set_by_a_person_is_kept_and_audited(client):
    f = account("F")
    page = client.post(reverse("admin:copier_accountguard_add"),
                       _post(f, line_now="49000", checked_on="2026-01-05"))
    assert page.status_code == 302, page.content.decode()[:3000]
    row = AccountGuard.objects.get()
    assert (row.line, row.line_source, row.high_water) == (
        Decimal("49000.00"), "person", Decimal("51000.00"))
    assert AuditEntry.objects.filter(action=AuditEntry.Action.GUARD_LINE, who="boss").exists()
    listing = client.get(reverse("admin:copier_accountguard_changelist")).content.decode()
    assert "$49,000.00 (person)" in listing
    clock.freeze(dt.datetime(2026, 6, 1, tzinfo=dt.UTC))
    try:
        listing = client.get(reverse("admin:copier_accountguard_changelist")).content.decode()
    finally:
        clock.release()
    assert "2026-01-05 - check them again: firms change their rules" in listing


def test_a_lock_is_shown_with_why_and_a_person_resumes_it(client):
    leader, f = account("L"), account("F3")
    group("g", leader, {f: "1"})
    Follower.objects.update(mode=Mode.EXITS_ONLY)
    row = _locked(f)
    row.switched = [Follower.objects.get().pk]
    row.save()
    page = client.get(reverse("admin:copier_accountguard_change", args=[row.pk])).content
    assert "equity $48,240, line $48,100, buffer $150" in page.decode()
    # the follower's own form may not set it active while the guard holds it
    follower = Follower.objects.get()
    change = client.post(reverse("admin:copier_follower_change", args=[follower.pk]), {
        "group": follower.group_id, "account": f.pk, "multiplier": "1", "enabled": "on",
        "mode": "active", "micro": "off", "daily_loss_action": "lock",
        "mappings-TOTAL_FORMS": "0", "mappings-INITIAL_FORMS": "0"})
    assert change.status_code == 200
    assert "the account guard of F3 locked" in change.content.decode()
    assert Follower.objects.get().mode == Mode.EXITS_ONLY
    client.post(reverse("admin:copier_accountguard_changelist"),
                {"action": "resume", "_selected_action": [row.pk]})
    row.refresh_from_db()
    assert (row.state, row.resumed_by) == ("ok", "boss")
    assert Follower.objects.get().mode == Mode.ACTIVE


def test_resuming_needs_the_kill_switch_permission(client, django_user_model):
    row = _locked(account("F"))
    clerk = django_user_model.objects.create_user("clerk", password="pw-123456", is_staff=True)
    clerk.user_permissions.add(*Permission.objects.filter(
        codename__in=["view_accountguard", "change_accountguard"]))
    client.force_login(clerk)
    page = client.get(reverse("admin:copier_accountguard_changelist")).content.decode()
    assert "resume" not in page
    client.post(reverse("admin:copier_accountguard_changelist"),
                {"action": "resume", "_selected_action": [row.pk]})
    assert AccountGuard.objects.get().state == "locked"


def test_a_firms_preset_fills_the_numbers_and_asks_a_person_to_check_them(client):
    f = account("F")
    data = _post(f, apply_preset="topstep-50k", checked_on="2026-11-30")
    for name in ("starting_balance", "drawdown", "drawdown_model", "trail_stop"):
        data.pop(name)
    page = client.post(reverse("admin:copier_accountguard_add"), data)
    assert page.status_code == 302, page.content.decode()[:3000]
    row = AccountGuard.objects.get()
    assert (row.preset, row.starting_balance, row.drawdown, row.drawdown_model,
            row.trail_stop, row.buffer) == (
        "topstep-50k", Decimal(50000), Decimal(2000), "eod_trailing", Decimal(0),
        Decimal(150))  # the person's buffer stays
    assert row.source_url.startswith("https://help.topstep.com/")
    assert row.checked_on is None  # a preset is not checked by a person yet
    change = client.get(reverse("admin:copier_accountguard_change", args=[row.pk]))
    assert "Read on 2026-12-02 from https://help.topstep.com/" in change.content.decode()
    listing = client.get(reverse("admin:copier_accountguard_changelist")).content.decode()
    assert "never: check them against the firm&#x27;s page" in listing


def test_without_a_preset_the_firms_numbers_are_required(client):
    data = _post(account("F"))
    data.pop("drawdown")
    page = client.post(reverse("admin:copier_accountguard_add"), data)
    assert "Required (or fill it from a firm&#x27;s preset)." in page.content.decode()
    assert not AccountGuard.objects.exists()


def test_the_buffer_may_be_a_fraction_of_the_drawdown(client):
    page = client.post(reverse("admin:copier_accountguard_add"),
                       _post(account("F"), buffer_percent="7.5"))
    assert page.status_code == 302, page.content.decode()[:3000]
    assert AccountGuard.objects.get().buffer == Decimal("150.00")  # 7.5 % of $2,000
    page = client.post(reverse("admin:copier_accountguard_add"),
                       _post(account("G"), buffer_percent="120"))
    assert "Ensure this value is less than or equal to 99.99." in page.content.decode()
    assert AccountGuard.objects.count() == 1
