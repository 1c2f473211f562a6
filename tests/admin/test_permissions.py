"""Every admin action and custom admin view checks its permission (issue 8, item 13).

Actions and custom URLs are enumerated from `admin.site._registry`, so that an
action or view added later without a permission check fails here. A staff
user without the permission is not offered the action (posting it anyway does
nothing) and gets 403 from the view, and nothing in the database changes; a
user with the permission gets the work done.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.test import RequestFactory
from django.urls import URLPattern, reverse

from accounts.models import Position, TradingAccount
from brokers.models import SimAccount
from copier.models import Quarantine
from copier.services.quarantine import quarantine_create
from tests.factories import account, connect, group, leader_fill
from tests.helpers import wait_until
from tests.listener.helpers import listening

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"),
              pytest.mark.usefixtures("eager_tasks")]

REGISTRY = sorted(admin.site._registry.items(), key=lambda item: item[0]._meta.label)


@pytest.fixture
def world():
    leader, f1 = account("L"), account("F1")
    group("g", leader, {f1: "1"})
    connect(leader, f1)
    leader_fill(leader, "ES", "buy", 1)
    quarantine_create(account=f1, symbol="NQ", reason="opposite_side")
    call_command("copier_setup", stdout=None)
    return leader, f1


def _staff(django_user_model: Any, name: str, perms: Any = ()) -> Any:
    user = django_user_model.objects.create_user(name, f"{name}@example.com", "pw-123456",
                                                 is_staff=True)
    user.user_permissions.set(perms)
    return django_user_model.objects.get(pk=user.pk)  # no cached permissions


@pytest.fixture
def nobody(django_user_model):
    return _staff(django_user_model, "nobody")


@pytest.fixture
def viewer(django_user_model):
    views = Permission.objects.filter(codename__startswith="view_")
    return _staff(django_user_model, "viewer", views)


@pytest.fixture
def operator(django_user_model):
    """Every permission there is, but not a superuser: what each check asks must be grantable."""
    return _staff(django_user_model, "operator", Permission.objects.all())


def _request(user: Any) -> Any:
    request = RequestFactory().get("/")
    request.user = user
    return request


def _snapshot() -> dict[str, list[dict[str, Any]]]:
    """Every row of every model the admin shows (but a login's own trace)."""
    return {model._meta.label: [{k: v for k, v in row.items() if k != "last_login"}
                                for row in model._default_manager.order_by("pk").values()]
            for model, _ in REGISTRY}


def _base_actions(model_admin: admin.ModelAdmin) -> dict[str, Any]:
    return {name: func for func, name, _ in model_admin._get_base_actions()}


def test_every_action_names_a_permission_that_exists():
    for model, model_admin in REGISTRY:
        for name, func in _base_actions(model_admin).items():
            needed = getattr(func, "allowed_permissions", ())
            assert needed, f"{model._meta.label}: action {name} checks no permission"
            for permission in needed:
                assert callable(getattr(model_admin, f"has_{permission}_permission", None)), name


def test_a_staff_user_without_permissions_or_with_view_only_is_offered_no_action(viewer,
                                                                                  nobody):
    for model, model_admin in REGISTRY:
        assert model_admin.get_actions(_request(viewer)) == {}, model._meta.label
        assert model_admin.get_actions(_request(nobody)) == {}, model._meta.label


def test_a_staff_user_with_the_permissions_is_offered_what_a_superuser_is(operator,
                                                                         django_user_model):
    """Each check asks for permissions a user can be given (audit pages refuse everyone).
    But two: pruning the audit log (issue 19: append-only for everyone else) and resetting
    a user's second factor are a superuser's alone, so no permission can grant them."""
    boss = django_user_model.objects.create_superuser("boss", "b@example.com", "pw-123456")
    # Resetting a user's second factor too: whoever does can then enrol a device of their
    # own for that user.
    superuser_only = {"copier.AuditEntry": {"delete_selected"},
                      "auth.User": {"reset_second_factor"}}
    for model, model_admin in REGISTRY:
        offered = set(model_admin.get_actions(_request(operator)))
        expected = set(model_admin.get_actions(_request(boss))) - superuser_only.get(
            model._meta.label, set())
        assert offered == expected, model._meta.label


def test_posting_an_action_without_its_permission_changes_nothing(world, viewer, client):
    client.force_login(viewer)
    before = _snapshot()
    for model, model_admin in REGISTRY:
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        pks = list(model._default_manager.values_list("pk", flat=True))
        for name in _base_actions(model_admin):
            response = client.post(url, {"action": name, "_selected_action": pks,
                                         "post": "yes"})
            assert response.status_code < 500, name
            assert _snapshot() == before, f"{model._meta.label}: {name} changed rows"


def _custom_urls() -> list[tuple[str, type, URLPattern]]:
    """The URLs a ModelAdmin adds to the standard ones (changelist, add, change, ...)."""
    found = []
    for model, model_admin in REGISTRY:
        standard = {p.name for p in admin.ModelAdmin.get_urls(model_admin)}
        found += [(model._meta.label, model, p) for p in model_admin.get_urls()
                  if isinstance(p, URLPattern) and p.name not in standard]
    return found


CUSTOM_URLS = _custom_urls()


def _url_of(model: type, pattern: URLPattern) -> str:
    obj = model._default_manager.order_by("pk").first()
    kwargs = {name: obj.pk for name in pattern.pattern.converters}
    return reverse(f"admin:{pattern.name}", kwargs=kwargs)


def test_the_custom_admin_urls_are_found():
    assert "accounts_tradingaccount_sim_fill" in {p.name for _, _, p in CUSTOM_URLS}


@pytest.mark.parametrize(("label", "model", "pattern"), CUSTOM_URLS,
                         ids=[p.name for _, _, p in CUSTOM_URLS])
def test_a_custom_admin_view_refuses_a_staff_user_without_its_permission(
    label, model, pattern, world, client, nobody, viewer
):
    url = _url_of(model, pattern)
    post = {"symbol": "ES", "side": "buy", "qty": "1", "password1": "x-Long-pass-1",
            "password2": "x-Long-pass-1"}
    before = _snapshot()
    for user in (nobody, viewer):
        client.force_login(user)
        assert client.get(url).status_code == 403, user
        assert client.post(url, post).status_code == 403, user
        assert _snapshot() == before


# --- the copier's own actions and views, with and without their permission -----------------


def _only(django_user_model: Any, name: str, *codenames: str) -> Any:
    return _staff(django_user_model, name, Permission.objects.filter(codename__in=codenames))


def _qty(acct: TradingAccount, symbol: str) -> int:
    return Position.objects.get(account=acct, symbol=symbol).qty


def _state(acct: TradingAccount) -> str:
    return TradingAccount.objects.get(pk=acct.pk).connection_state


def test_sim_fill_on_a_leader_needs_the_sim_permission_and_is_copied_with_it(
    world, client, django_user_model
):
    leader, f1 = world
    url = reverse("admin:accounts_tradingaccount_sim_fill", args=[leader.pk])
    fill = {"symbol": "ES", "side": "buy", "qty": "1"}
    client.force_login(_only(django_user_model, "viewer", "view_tradingaccount"))
    change = reverse("admin:accounts_tradingaccount_change", args=[leader.pk])
    assert url not in client.get(change).content.decode()  # no link to what it cannot do
    with listening(leader, f1):
        assert client.post(url, fill).status_code == 403
        client.force_login(_only(django_user_model, "trader", "view_tradingaccount",
                                 "change_simaccount"))
        assert url in client.get(change).content.decode()
        assert _qty(f1, "ES") == 1
        assert client.post(url, fill).status_code == 302
        wait_until(lambda: _qty(f1, "ES") == 2, what="the listener copied the fill")


def test_sim_outage_needs_the_sim_permission(world, client, django_user_model):
    leader, f1 = world
    url = reverse("admin:accounts_tradingaccount_changelist")
    with listening(leader, f1):
        client.force_login(_only(django_user_model, "editor", "view_tradingaccount",
                                 "change_tradingaccount"))
        client.post(url, {"action": "sim_outage", "_selected_action": [f1.pk]})
        assert not SimAccount.objects.using("broker").filter(account=f1, reachable=False).exists()
        client.force_login(_only(django_user_model, "trader", "view_tradingaccount",
                                 "change_simaccount"))
        client.post(url, {"action": "sim_outage", "_selected_action": [f1.pk]})
        wait_until(lambda: _state(f1) == "disconnected", what="the outage seen")
        client.post(url, {"action": "sim_restore", "_selected_action": [f1.pk]})
        wait_until(lambda: _state(f1) == "connected", what="the reconnect")


def test_lifting_a_quarantine_needs_its_change_permission(world, client, django_user_model):
    q = Quarantine.objects.get()
    url = reverse("admin:copier_quarantine_changelist")
    client.force_login(_only(django_user_model, "viewer", "view_quarantine"))
    client.post(url, {"action": "lift", "_selected_action": [q.pk]})
    assert Quarantine.objects.get(pk=q.pk).lifted_at is None
    client.force_login(_only(django_user_model, "ops", "view_quarantine", "change_quarantine"))
    client.post(url, {"action": "lift", "_selected_action": [q.pk]})
    assert Quarantine.objects.get(pk=q.pk).lifted_by == "ops"


def test_periodic_task_actions_need_the_change_permission(world, client, django_user_model):
    from django_celery_beat.models import PeriodicTask

    url = reverse("admin:django_celery_beat_periodictask_changelist")
    pks = list(PeriodicTask.objects.values_list("pk", flat=True))
    client.force_login(_only(django_user_model, "viewer", "view_periodictask"))
    client.post(url, {"action": "disable_tasks", "_selected_action": pks})
    assert PeriodicTask.objects.filter(enabled=True).count() == len(pks)
    client.force_login(_only(django_user_model, "ops", "view_periodictask",
                             "change_periodictask"))
    client.post(url, {"action": "disable_tasks", "_selected_action": pks})
    assert not PeriodicTask.objects.filter(enabled=True).exists()
