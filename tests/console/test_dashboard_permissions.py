"""The dashboard shows only what the user may view (issue 19, defect 5): groups need
view_copygroup, follower cards view_follower, account names, connection and pause
reasons view_tradingaccount, positions view_position, quarantines view_quarantine; what is
left out is said in a plain sentence, and a user who may see nothing of it gets a 403."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from copier.console.latency import latency_cache_clear
from core import clock
from tests.console.console_world import world_build
from tests.factories import T0

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("frozen_clock")]

EVERYTHING = ["view_copygroup", "view_follower", "view_tradingaccount", "view_position",
              "view_quarantine", "view_failedexit", "view_order", "view_decision",
              "view_leaderevent"]


@pytest.fixture(autouse=True)
def _fresh_latency_cache():
    latency_cache_clear()
    yield
    latency_cache_clear()


@pytest.fixture
def world():
    clock.freeze(T0 + dt.timedelta(minutes=10))
    return world_build()


def _client(django_user_model: Any, *codenames: str) -> Client:
    user = django_user_model.objects.create_user("u", "u@example.com", "pw-123456",
                                                 is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    c = Client()
    c.force_login(user)
    return c


def _secrets(world: Any) -> list[str]:
    """What a user without permissions must not read on the page."""
    return ["desk", ">L1<", ">F1<", ">F3<", "MNQ: copier +2, broker +5",
            "follower -8 against the leader", "quarantined", f"follower-{world.ok.pk}"]


@pytest.mark.parametrize("path", ["/", "/console/groups/", "/console/latency/"])
def test_a_staff_user_without_permissions_sees_nothing_and_is_told_why(
        django_user_model, world, path):
    c = _client(django_user_model)
    page = c.get(path)
    assert page.status_code == 403
    text = page.content.decode()
    for secret in _secrets(world):
        assert secret not in text, secret
    if path == "/":
        assert "You do not have permission to view copy groups" in text


def test_groups_without_followers_show_the_group_but_not_the_cards(django_user_model, world):
    c = _client(django_user_model, "view_copygroup")
    page = c.get("/")
    assert page.status_code == 200
    text = page.content.decode()
    assert f'data-testid="group-{world.group.pk}"' in text
    assert f'data-testid="follower-{world.ok.pk}"' not in text
    assert "You do not have permission to view followers" in text
    assert ">L1<" not in text  # the leader is an account
    assert "You do not have permission to view trading accounts" in text


def test_cards_without_positions_quarantines_or_pause_reasons_leave_them_out(
        django_user_model, world):
    c = _client(django_user_model, "view_copygroup", "view_follower", "view_tradingaccount")
    text = c.get("/console/groups/").content.decode()
    assert f'data-testid="follower-{world.ok.pk}"' in text
    assert ">F1<" in text
    assert f'data-testid="follower-{world.ok.pk}-positions"' not in text
    assert f'data-testid="follower-{world.quarantined.pk}-quarantine-MNQ"' not in text
    assert "follower -8 against the leader" not in text
    assert "You do not have permission to view positions" in text
    assert "You do not have permission to view quarantines" in text
    assert f'data-testid="follower-{world.paused.pk}-paused"' in text  # paused: an account's
    assert "MNQ: copier +2, broker +5" in text  # state, with its reason


def test_pause_reasons_need_the_account_view(django_user_model, world):
    c = _client(django_user_model, "view_copygroup", "view_follower", "view_position")
    text = c.get("/console/groups/").content.decode()
    assert f'data-testid="follower-{world.ok.pk}"' not in text
    assert "MNQ: copier +2, broker +5" not in text
    assert "You do not have permission to view trading accounts" in text


def test_the_latency_panel_needs_the_order_view(django_user_model, world):
    c = _client(django_user_model, "view_copygroup")
    assert c.get("/console/latency/").status_code == 403
    assert 'data-testid="latency-hour"' not in c.get("/").content.decode()


def test_every_view_permission_shows_everything(django_user_model, world):
    c = _client(django_user_model, *EVERYTHING)
    text = c.get("/").content.decode()
    assert "You do not have permission" not in text
    for secret in _secrets(world):
        assert secret in text, secret
    assert 'data-testid="latency-hour"' in text
