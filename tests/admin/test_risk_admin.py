"""The follower's fixed quantity and risk limits in the admin: clear form errors that write
nothing, and a preview of what one leader contract becomes on the follower."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse

from copier.models import CopyGroup, Follower
from tests.factories import account, group

pytestmark = pytest.mark.django_db  # forms only: no sim, so a rolled-back transaction will do


@pytest.fixture
def client(client, django_user_model):
    user = django_user_model.objects.create_superuser("boss", "b@example.com", "pw-123456")
    client.force_login(user)
    return client


def _group_post(leader, follower, **fields):
    data = {"name": "g", "leader": leader.pk, "exit_mode": "proportional", "enabled": "on",
            "followers-TOTAL_FORMS": "1", "followers-INITIAL_FORMS": "0",
            "followers-MIN_NUM_FORMS": "0", "followers-MAX_NUM_FORMS": "1000",
            "followers-0-account": follower.pk, "followers-0-multiplier": "1",
            "followers-0-enabled": "on"}
    data.update({f"followers-0-{k}": v for k, v in fields.items()})
    return data


@pytest.mark.parametrize(("fields", "message"), [
    ({"fixed_qty": "0"}, "fixed quantity must be from 1 to 10000"),
    ({"fixed_qty": "-2"}, "greater than or equal to 0"),
    ({"fixed_qty": "10001"}, "fixed quantity must be from 1 to 10000"),
    ({"fixed_qty": "2", "multiplier": "3"}, "Either a multiplier or a fixed quantity"),
    ({"max_order_qty": "0"}, "max contracts per order must be from 1 to 10000"),
    ({"max_order_qty": "50000"}, "max contracts per order must be from 1 to 10000"),
    ({"max_position": "0"}, "use exits only"),
    ({"max_position": "1000000"}, "max position per symbol must be from 1 to 100000"),
    ({"max_symbols": "0"}, "max open symbols must be from 1 to 1000"),
    ({"window_start": "09:30"}, "needs both its start and its end"),
    ({"window_start": "09:30", "window_end": "09:30"}, "The window ends when it starts"),
    ({"window_start": "09:30", "window_end": "16:00", "window_tz": "Mars/Olympus"},
     "Unknown time zone"),
    ({"window_start": "09:30", "window_end": "16:00", "window_days": "mon-funday"},
     "unknown day"),
    ({"window_tz": "UTC"}, "without a window"),
])
def test_bad_sizing_and_limits_are_form_errors_that_write_nothing(client, fields, message):
    leader, f = account("L"), account("F")
    page = client.post(reverse("admin:copier_copygroup_add"), _group_post(leader, f, **fields))
    assert page.status_code == 200
    assert message in page.content.decode()
    assert not CopyGroup.objects.exists()
    assert not Follower.objects.exists()


def test_limits_and_an_overnight_window_are_saved_and_shown(client):
    leader, f = account("L"), account("F")
    page = client.post(reverse("admin:copier_copygroup_add"), _group_post(
        leader, f, fixed_qty="2", max_order_qty="5", max_position="8", max_symbols="3",
        window_start="18:00", window_end="17:00", window_tz="America/Chicago",
        window_days="sun-thu"))
    assert page.status_code == 302, page.content.decode()[:3000]
    follower = Follower.objects.get()
    assert (follower.fixed_qty, follower.max_order_qty, follower.max_position,
            follower.max_symbols) == (2, 5, 8, 3)
    window = follower.trading_window()
    assert window is not None
    assert window.overnight
    assert (window.start, window.end) == (dt.time(18), dt.time(17))
    listing = client.get(reverse("admin:copier_follower_changelist")).content.decode()
    assert "1 leader contract \u2192 2 on this follower; 5 \u2192 2" in listing
    assert "18:00-17:00 America/Chicago" in listing
    assert "max position 8" in listing


@pytest.mark.parametrize(("settings", "preview"), [
    ({"multiplier": "1.5"}, "1 leader contract \u2192 2 on this follower; 5 \u2192 8"),
    ({"multiplier": "0.5", "max_position": 2},
     "1 leader contract \u2192 1 on this follower; 5 \u2192 2 (capped at the max position, 2)"),
    ({"fixed_qty": 3}, "1 leader contract \u2192 3 on this follower; 5 \u2192 3"),
])
def test_the_follower_page_previews_what_a_leader_contract_becomes(client, settings, preview):
    leader, f = account("L"), account("F")
    g = group("g", leader, {f: settings.pop("multiplier", "1")})
    Follower.objects.filter(account=f).update(**settings)
    follower = Follower.objects.get(account=f)
    page = client.get(reverse("admin:copier_follower_change", args=[follower.pk]))
    assert preview in page.content.decode()
    page = client.get(reverse("admin:copier_copygroup_change", args=[g.pk]))
    assert preview in page.content.decode()


def test_a_reverse_group_preview_says_the_side(client):
    leader, f = account("L"), account("F")
    g = group("g", leader, {f: "2"})
    CopyGroup.objects.filter(pk=g.pk).update(reverse=True)
    follower = Follower.objects.get(account=f)
    page = client.get(reverse("admin:copier_follower_change", args=[follower.pk]))
    assert "1 leader contract \u2192 2 on this follower; 5 \u2192 10 (on the opposite side" in (
        page.content.decode())


# --- daily loss limit ----------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "message"), [
    ({"daily_loss_limit": "0"}, "The daily loss limit must be an amount from 0.01 to"),
    ({"daily_loss_limit": "-500"}, "The daily loss limit must be an amount from 0.01 to"),
    ({"daily_loss_limit": "20000000"}, "to 10,000,000 in the account&#x27;s currency"),
    ({"daily_loss_limit": "10000000.01"}, "The daily loss limit must be an amount"),
    ({"daily_loss_limit": "12.345"}, "no more than 2 decimal places"),
    ({"daily_loss_limit": "lots"}, "Enter a number"),
    ({"daily_loss_limit": "NaN"}, "Enter a number"),
    ({"daily_loss_limit": "500", "daily_loss_action": "panic"}, "Select a valid choice"),
])
def test_a_bad_daily_loss_limit_is_a_form_error_that_writes_nothing(client, fields, message):
    leader, f = account("L"), account("F")
    page = client.post(reverse("admin:copier_copygroup_add"), _group_post(leader, f, **fields))
    assert page.status_code == 200
    assert message in page.content.decode()
    assert not Follower.objects.exists()


def test_a_daily_loss_limit_is_saved_and_shown_with_its_session(client):
    from decimal import Decimal

    from copier.models import SessionLoss
    from copier.services import losslimit
    from core import clock

    leader, f = account("L"), account("F")
    page = client.post(reverse("admin:copier_copygroup_add"), _group_post(
        leader, f, daily_loss_limit="500", daily_loss_action="lock"))
    assert page.status_code == 302, page.content.decode()[:3000]
    follower = Follower.objects.get()
    assert (follower.daily_loss_limit, follower.daily_loss_action) == (Decimal(500), "lock")
    listing = client.get(reverse("admin:copier_follower_changelist")).content.decode()
    assert "daily loss $500.00 (lock)" in listing
    change = reverse("admin:copier_follower_change", args=[follower.pk])
    assert "not read yet this session" in client.get(change).content.decode()
    now = clock.now()
    SessionLoss.objects.create(
        follower=follower, session_start=losslimit.session_reset().start(now),
        realized=Decimal("-612.50"), read_at=now, reached_at=now, limit=Decimal(500),
        locked_at=now, locked_until=now + dt.timedelta(hours=2))
    page = client.get(change).content.decode()
    assert "realised -$612.50" in page
    assert "LOCKED: no entries until" in page
    # a person lifts it (the kill switch's permission: a superuser has it)
    client.post(reverse("admin:copier_follower_changelist"),
                {"action": "loss_lock_lift", "_selected_action": [follower.pk]})
    row = SessionLoss.objects.get()
    assert row.cleared_by == "boss"
    assert row.locked_until <= clock.now()
    assert "lock lifted by boss" in client.get(change).content.decode()


def test_lifting_a_loss_lock_needs_the_kill_switch_permission(client, django_user_model):
    from django.contrib.auth.models import Permission

    leader, f = account("L"), account("F")
    group("g", leader, {f: "1"})
    clerk = django_user_model.objects.create_user("clerk", password="pw-123456", is_staff=True)
    clerk.user_permissions.add(*Permission.objects.filter(
        codename__in=["view_follower", "change_follower"]))
    client.force_login(clerk)
    page = client.get(reverse("admin:copier_follower_changelist")).content.decode()
    assert "loss_lock_lift" not in page
