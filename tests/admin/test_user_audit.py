"""Users and groups changed in the admin are in the audit log (issue 19): who made whom a
superuser or staff, deactivated them, put them in which group, gave them which permission,
changed their password (as "changed", never the hash), added or deleted a user or a group.
Through the Django test client and the admin's own forms."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission
from django.urls import reverse

from copier.models import AuditEntry

pytestmark = pytest.mark.django_db

PASSWORD = "pw-Kq81-long-enough"


@pytest.fixture
def boss(django_user_model):
    return django_user_model.objects.create_superuser("boss", "b@example.com", PASSWORD)


@pytest.fixture
def boss_client(client, boss):
    client.force_login(boss)
    return client


def _perm(name: str) -> Permission:
    app, codename = name.split(".")
    return Permission.objects.get(content_type__app_label=app, codename=codename)


def _entries(object_type: str) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(object_type=object_type).order_by("id"))


def _saved(response: Any) -> None:
    assert response.status_code == 302, response.context and response.context.get(
        "adminform") and response.context["adminform"].form.errors


def _user_form(user: Any, **changes: Any) -> dict[str, Any]:
    """The change form as the admin fills it from the stored user, then `changes`."""
    data: dict[str, Any] = {
        "username": user.username, "first_name": user.first_name,
        "last_name": user.last_name, "email": user.email,
        "date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
        "date_joined_1": user.date_joined.strftime("%H:%M:%S.%f"),  # as stored
        "last_login_0": "", "last_login_1": "",
        "groups": [g.pk for g in user.groups.all()],
        "user_permissions": [p.pk for p in user.user_permissions.all()],
    }
    for flag in ("is_active", "is_staff", "is_superuser"):
        if getattr(user, flag):
            data[flag] = "on"
    data.update(changes)
    return {k: v for k, v in data.items() if v is not False}


def test_adding_a_user_is_recorded_with_the_password_as_changed(boss_client, boss,
                                                                 django_user_model):
    _saved(boss_client.post(reverse("admin:auth_user_add"), {
        "username": "alice", "usable_password": "true",
        "password1": PASSWORD, "password2": PASSWORD}))
    alice = django_user_model.objects.get(username="alice")
    [entry] = _entries("auth.user")
    assert (entry.action, entry.who, entry.user_id, entry.object_id, entry.object_repr) == (
        AuditEntry.Action.ADD, "boss", boss.pk, str(alice.pk), "alice")
    assert entry.changes["username"] == [None, "alice"]
    assert entry.changes["password"] == "changed"
    assert alice.password not in json.dumps(entry.changes)
    assert PASSWORD not in json.dumps(entry.changes)


def test_making_a_user_a_superuser_staff_in_a_group_with_a_permission_is_recorded(
        boss_client, django_user_model):
    alice = django_user_model.objects.create_user("alice", "a@example.com", PASSWORD)
    traders = Group.objects.create(name="traders")
    kill = _perm("copier.kill_switch")
    url = reverse("admin:auth_user_change", args=[alice.pk])
    _saved(boss_client.post(url, _user_form(alice, is_staff="on", is_superuser="on",
                                            groups=[traders.pk],
                                            user_permissions=[kill.pk])))
    [entry] = _entries("auth.user")
    assert entry.action == AuditEntry.Action.CHANGE
    assert entry.changes == {
        "is_staff": [False, True], "is_superuser": [False, True],
        "groups": [[], ["traders"]], "user_permissions": [[], ["copier.kill_switch"]]}
    # and back: deactivated, out of the group, the permission taken away
    alice.refresh_from_db()
    _saved(boss_client.post(url, _user_form(alice, is_active=False, groups=[],
                                            user_permissions=[])))
    latest = _entries("auth.user")[-1]
    assert latest.changes == {"is_active": [True, False], "groups": [["traders"], []],
                              "user_permissions": [["copier.kill_switch"], []]}


def test_saving_a_user_unchanged_records_nothing(boss_client, django_user_model):
    alice = django_user_model.objects.create_user("alice", "a@example.com", PASSWORD)
    _saved(boss_client.post(reverse("admin:auth_user_change", args=[alice.pk]),
                            _user_form(alice)))
    assert _entries("auth.user") == []


def test_a_password_changed_on_the_admins_password_page_is_recorded_not_its_hash(
        boss_client, django_user_model):
    alice = django_user_model.objects.create_user("alice", "a@example.com", PASSWORD)
    old_hash = alice.password
    new = "another-Wm42y-password"
    _saved(boss_client.post(reverse("admin:auth_user_password_change", args=[alice.pk]),
                            {"password1": new, "password2": new, "usable_password": "true"}))
    alice.refresh_from_db()
    assert alice.check_password(new)
    [entry] = _entries("auth.user")
    assert entry.changes == {"password": "changed"}
    text = json.dumps(entry.changes) + entry.detail
    for secret in (old_hash, alice.password, new):
        assert secret not in text


def test_deleting_a_user_is_recorded(boss_client, django_user_model):
    alice = django_user_model.objects.create_user("alice", "a@example.com", PASSWORD,
                                                  is_staff=True)
    alice.user_permissions.set([_perm("copier.flatten")])
    _saved(boss_client.post(reverse("admin:auth_user_delete", args=[alice.pk]),
                            {"post": "yes"}))
    [entry] = _entries("auth.user")
    assert (entry.action, entry.object_id, entry.object_repr) == (
        AuditEntry.Action.DELETE, str(alice.pk), "alice")
    assert entry.changes["is_staff"] == [True, None]
    assert entry.changes["user_permissions"] == [["copier.flatten"], None]
    assert entry.changes["password"] == "changed"
    assert alice.password not in json.dumps(entry.changes)


def test_bulk_deleting_users_is_recorded_each(boss_client, django_user_model):
    users = [django_user_model.objects.create_user(n, f"{n}@example.com", PASSWORD)
             for n in ("alice", "bob")]
    _saved(boss_client.post(reverse("admin:auth_user_changelist"), {
        "action": "delete_selected", "_selected_action": [u.pk for u in users],
        "post": "yes"}))
    entries = _entries("auth.user")
    assert sorted(e.object_repr for e in entries) == ["alice", "bob"]
    assert {e.detail for e in entries} == {"bulk delete"}


def test_a_groups_permissions_added_changed_and_the_group_deleted_are_recorded(
        boss_client, boss):
    kill, flatten = _perm("copier.kill_switch"), _perm("copier.flatten")
    _saved(boss_client.post(reverse("admin:auth_group_add"),
                            {"name": "traders", "permissions": [kill.pk, flatten.pk]}))
    traders = Group.objects.get(name="traders")
    _saved(boss_client.post(reverse("admin:auth_group_change", args=[traders.pk]),
                            {"name": "traders", "permissions": [kill.pk]}))
    _saved(boss_client.post(reverse("admin:auth_group_delete", args=[traders.pk]),
                            {"post": "yes"}))
    added, changed, deleted = _entries("auth.group")
    assert (added.action, added.who, added.object_repr) == (
        AuditEntry.Action.ADD, "boss", "traders")
    assert added.changes == {"name": [None, "traders"],
                             "permissions": [None, ["copier.flatten", "copier.kill_switch"]]}
    assert changed.changes == {"permissions": [["copier.flatten", "copier.kill_switch"],
                                               ["copier.kill_switch"]]}
    assert deleted.action == AuditEntry.Action.DELETE
    assert deleted.changes == {"name": ["traders", None],
                               "permissions": [["copier.kill_switch"], None]}

