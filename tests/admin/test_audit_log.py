"""The audit log (issue 19): every change a person makes in the admin and every operator
action is an entry (who, when, what, before and after); a secret's value never is; the
entries are append-only, in the admin, the ORM and the database, for all but a
superuser's prune; and they are readable in the console."""

from __future__ import annotations

import datetime as dt
import io
import json
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.urls import reverse

from accounts.models import TradingAccount
from brokers.registry import adapter_class
from copier.models import (
    AlertConfig,
    AuditEntry,
    AuditImmutable,
    Follower,
    OperatorAction,
    SessionLoss,
)
from copier.services import audit
from copier.services.quarantine import quarantine_create, quarantine_lift
from core import clock
from tests.admin.test_admin_join import _rendered
from tests.factories import account, connect, group, leader_fill

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"),
              pytest.mark.usefixtures("eager_tasks")]

OLD_KEY, NEW_KEY = "old-key-Zq81x", "new-key-Wm42y"
HOOK = "https://hooks.example.com/services/T000/B000/tok-Hq73"
POSITIONS = {"positions-TOTAL_FORMS": "0", "positions-INITIAL_FORMS": "0",
             "positions-MIN_NUM_FORMS": "0", "positions-MAX_NUM_FORMS": "1000"}


@pytest.fixture
def boss(django_user_model):
    return django_user_model.objects.create_superuser("boss", "b@example.com", "pw-123456")


@pytest.fixture
def boss_client(client, boss):
    client.force_login(boss)
    return client


@pytest.fixture
def staff(django_user_model):
    """A staff user with every permission there is, but not a superuser."""
    user = django_user_model.objects.create_user("staff", "s@example.com", "pw-123456",
                                                 is_staff=True)
    user.user_permissions.set(Permission.objects.all())
    return django_user_model.objects.get(pk=user.pk)


@pytest.fixture
def world():
    leader, f1 = account("L"), account("F1")
    g = group("g", leader, {f1: "1"})
    connect(leader, f1)
    return g, leader, f1


def _entries(**filters: Any) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(**filters).order_by("id"))


def test_a_group_edited_in_the_admin_records_who_and_each_field_before_and_after(
        boss_client, boss, world):
    g, _leader, f1 = world
    url = reverse("admin:copier_copygroup_change", args=[g.pk])
    data = _rendered(boss_client, url)
    data["name"] = "g-renamed"
    data["exit_mode"] = "with_leader"
    data["followers-0-multiplier"] = "2"  # the follower's row, in the group's inline
    page = boss_client.post(url, data)
    assert page.status_code == 302, page.content.decode()[-3000:]
    [entry] = _entries(object_type="copier.copygroup")
    assert (entry.who, entry.user_id, entry.action) == ("boss", boss.pk, "change")
    assert entry.object_id == str(g.pk)
    assert entry.changes == {"name": ["g", "g-renamed"],
                             "exit_mode": ["proportional", "with_leader"]}
    [row] = _entries(object_type="copier.follower")
    assert row.changes == {"multiplier": ["1", "2"]}
    assert row.object_id == str(Follower.objects.get(account=f1).pk)
    assert "g-renamed" in row.detail  # whose inline it was
    # the user goes; the entry keeps who it was
    boss_id = boss.pk
    boss.delete()
    entry.refresh_from_db()
    assert (entry.who, entry.user_id) == ("boss", boss_id)


def test_a_follower_added_and_deleted_in_the_admin_is_recorded(boss_client, world):
    g, _leader, _f1 = world
    f2 = account("F2")
    url = reverse("admin:copier_copygroup_change", args=[g.pk])
    data = _rendered(boss_client, url)
    n = int(data["followers-TOTAL_FORMS"])
    data.update({f"followers-{n - 1}-account": str(f2.pk),
                 f"followers-{n - 1}-multiplier": "3", f"followers-{n - 1}-enabled": "on"})
    assert boss_client.post(url, data).status_code == 302
    [added] = _entries(object_type="copier.follower", action="add")
    assert added.changes["multiplier"] == [None, "3"]
    assert added.changes["account"] == [None, f"F2 (#{f2.pk})"]
    follower = Follower.objects.get(account=f2)
    page = boss_client.post(reverse("admin:copier_follower_delete", args=[follower.pk]),
                            {"post": "yes"})
    assert page.status_code == 302
    [deleted] = _entries(object_type="copier.follower", action="delete")
    assert deleted.object_id == str(follower.pk)
    assert deleted.changes["multiplier"] == ["3", None]


def test_a_followers_risk_limits_and_symbol_mappings_edited_are_recorded(boss_client, world):
    _g, _leader, f1 = world
    follower = Follower.objects.get(account=f1)
    url = reverse("admin:copier_follower_change", args=[follower.pk])
    data = _rendered(boss_client, url)
    data.update({"max_position": "3", "daily_loss_limit": "500",
                 "symbol_mappings-0-leader_symbol": "NQ",
                 "symbol_mappings-0-follower_symbol": "MNQ", "symbol_mappings-0-ratio": "2"})
    page = boss_client.post(url, data)
    assert page.status_code == 302, page.content.decode()[-3000:]
    [limits] = _entries(object_type="copier.follower")
    assert limits.changes == {"max_position": [None, 3], "daily_loss_limit": [None, "500"]}
    [mapping] = _entries(object_type="copier.symbolmapping")
    assert mapping.action == "add"
    assert (mapping.changes["leader_symbol"], mapping.changes["ratio"]) == (
        [None, "NQ"], [None, "2"])
    assert "F1" in mapping.detail  # whose inline it was


def test_a_credentials_change_records_which_fields_changed_and_never_a_value(boss_client):
    login = adapter_class("projectx").credentials_clean(
        {"username": "me", "api_key": OLD_KEY, "api_url": "", "rtc_url": ""})
    acct = TradingAccount.objects.create(name="PX1", broker="projectx", external_id="7",
                                         credentials=json.dumps(login))
    page = boss_client.post(reverse("admin:accounts_tradingaccount_change", args=[acct.pk]), {
        "name": "PX1-live", "broker": "projectx", "external_id": "7",
        "cred_projectx_username": "me", "cred_projectx_api_key": NEW_KEY, **POSITIONS})
    assert page.status_code == 302, page.content.decode()[-3000:]
    assert NEW_KEY in TradingAccount.objects.get(pk=acct.pk).credentials
    [entry] = _entries(object_type="accounts.tradingaccount")
    # (a binding of the secrets to their addresses kept in the login, if any, may change
    # with them: only that it changed, like every field of the login)
    changes = {k: v for k, v in entry.changes.items() if k != "credentials.bound_to"}
    assert changes == {"name": ["PX1", "PX1-live"], "credentials.api_key": "changed"}
    assert entry.changes.get("credentials.bound_to", "changed") == "changed"
    stored = json.dumps([entry.changes, entry.detail, entry.object_repr])
    for secret in (OLD_KEY, NEW_KEY):
        assert secret not in stored
    pages = [boss_client.get(reverse("admin:copier_auditentry_changelist")),
             boss_client.get(reverse("admin:copier_auditentry_change", args=[entry.pk]))]
    for shown in pages:
        assert shown.status_code == 200
        body = shown.content.decode()
        assert "credentials.api_key" in body
        assert OLD_KEY not in body and NEW_KEY not in body  # noqa: PT018
    with connection.cursor() as cursor:  # nor anywhere in the table
        cursor.execute("SELECT row_to_json(e)::text FROM copier_auditentry e")
        assert not [r for (r,) in cursor.fetchall() if OLD_KEY in r or NEW_KEY in r]


def test_a_webhook_url_change_records_that_it_changed_not_the_url(boss_client, world):
    g, *_ = world
    page = boss_client.post(reverse("admin:copier_alertconfig_add"), {
        "group": g.pk, "emails": "", "webhook_url": HOOK, "disconnect_after_seconds": "120",
        "on_quarantine": "on", "on_kill_switch": "on"})
    assert page.status_code == 302, page.content.decode()[-3000:]
    assert AlertConfig.objects.get().webhook_url == HOOK
    [entry] = _entries(object_type="copier.alertconfig")
    assert entry.action == "add"
    assert entry.changes["webhook_url"] == "changed"
    assert entry.changes["on_pause"] == [None, False]
    assert "tok-Hq73" not in json.dumps(entry.changes)


def test_a_flatten_records_who_and_the_entry_is_readable_in_the_console(boss_client, boss,
                                                                         world):
    g, leader, _f1 = world
    leader_fill(leader, "ES", "buy", 1)
    page = boss_client.post(reverse("admin:copier_copygroup_changelist"),
                            {"action": "flatten_and_stop", "_selected_action": [g.pk],
                             "confirm": "yes"})
    assert page.status_code == 302
    action = OperatorAction.objects.get(kind="flatten")
    [entry] = _entries(action="flatten")
    assert (entry.who, entry.user_id) == ("boss", boss.pk)
    assert (entry.object_type, entry.object_id) == ("copier.operatoraction", str(action.pk))
    assert entry.changes == {"group g: mode": ["active", "exits_only"],
                             "follower F1: mode": ["active", "exits_only"]}
    assert "F1 ES +1" in entry.detail
    dashboard = boss_client.get(reverse("dashboard")).content.decode()
    listing_url = reverse("admin:copier_auditentry_changelist")
    assert f'href="{listing_url}"' in dashboard
    listing = boss_client.get(listing_url + "?action=flatten&who=boss")
    assert listing.status_code == 200
    assert "flatten groups: g" in listing.content.decode()
    detail = boss_client.get(reverse("admin:copier_auditentry_change", args=[entry.pk]))
    text = detail.content.decode()
    assert "group g: mode" in text and "exits_only" in text  # noqa: PT018
    # the operator action's page links to its entry
    actions = boss_client.get(reverse("admin:copier_operatoraction_changelist")).content
    assert b"object_type=copier.operatoraction" in actions


def test_stop_resume_quarantine_and_loss_lock_lifts_are_recorded(boss_client, world):
    g, _leader, f1 = world
    changelist = reverse("admin:copier_copygroup_changelist")
    boss_client.post(changelist, {"action": "stop_entries", "_selected_action": [g.pk]})
    boss_client.post(changelist, {"action": "resume_entries", "_selected_action": [g.pk]})
    stop, resume = _entries(object_type="copier.operatoraction")
    assert (stop.action, stop.changes) == ("entries_stop",
                                          {"group g: mode": ["active", "exits_only"]})
    assert (resume.action, resume.changes) == ("entries_resume",
                                              {"group g: mode": ["exits_only", "active"]})
    quarantine_create(account=f1, symbol="NQ", reason="opposite_side")
    assert quarantine_lift(account=f1, symbol="NQ", by="boss") == 1
    [lift] = _entries(action="quarantine_lift")
    assert lift.who == "boss" and lift.user_id is not None  # noqa: PT018
    assert lift.changes["lifted_by"] == ["", "boss"]
    follower = Follower.objects.get(account=f1)
    now = clock.now()
    SessionLoss.objects.create(follower=follower, session_start=now - dt.timedelta(hours=1),
                               locked_at=now, locked_until=now + dt.timedelta(hours=5))
    boss_client.post(reverse("admin:copier_follower_changelist"),
                     {"action": "loss_lock_lift", "_selected_action": [follower.pk]})
    [unlock] = _entries(action="loss_lock_lift")
    assert (unlock.who, unlock.object_id) == ("boss", str(follower.pk))
    assert unlock.changes["cleared_by"] == ["", "boss"]


def test_the_command_line_kill_switch_is_recorded_as_the_cli(world):
    call_command("copier_kill", "stop", "--group", "g", stdout=io.StringIO())
    [entry] = _entries(action="entries_stop")
    assert entry.who.startswith("cli")
    assert entry.user_id is None


def test_the_dashboard_switch_is_recorded(boss_client, world):
    _g, _leader, f1 = world
    follower = Follower.objects.get(account=f1)
    page = boss_client.post(reverse("follower_enabled", args=[follower.pk]), {"enabled": "off"})
    assert page.status_code == 302
    # recorded by the view, or by the kill switch's own follower switch where that path
    # goes through it (the perms branch: an operator action "copying_off")
    [entry] = _entries(action__in=["follower_switch", "copying_off"])
    assert entry.who == "boss"
    assert "F1" in json.dumps(entry.changes) + entry.object_repr
    assert entry.changes in ({"enabled": [True, False]},
                             {"follower F1: copies": ["active", "off"]})


@pytest.fixture
def an_entry(boss):
    return audit.audit_record(by=boss, action=AuditEntry.Action.CHANGE, object_type="x.y",
                              object_id=1, object_repr="thing", changes={"a": [1, 2]})


def test_a_staff_user_cannot_change_or_delete_an_entry_in_the_admin(client, staff, an_entry):
    client.force_login(staff)
    change = reverse("admin:copier_auditentry_change", args=[an_entry.pk])
    page = client.get(change)
    assert page.status_code == 200  # readable
    assert 'name="_save"' not in page.content.decode()
    assert client.post(change, {"who": "someone else"}).status_code == 403
    delete = reverse("admin:copier_auditentry_delete", args=[an_entry.pk])
    assert client.get(delete).status_code == 403
    assert client.post(delete, {"post": "yes"}).status_code == 403
    listing = reverse("admin:copier_auditentry_changelist")
    assert "delete_selected" not in client.get(listing).content.decode()
    client.post(listing, {"action": "delete_selected", "_selected_action": [an_entry.pk],
                          "post": "yes"})
    an_entry.refresh_from_db()
    assert (an_entry.who, an_entry.changes) == ("boss", {"a": [1, 2]})
    assert not Permission.objects.filter(content_type__model="auditentry").exclude(
        codename="view_auditentry").exists()  # nobody can be given change or delete


def test_the_orm_and_the_database_refuse_to_change_or_delete_an_entry(an_entry, staff):
    an_entry.who = "someone else"
    with pytest.raises(AuditImmutable):
        an_entry.save()
    with pytest.raises(AuditImmutable):
        an_entry.delete()
    for attempt in (lambda: AuditEntry.objects.filter(pk=an_entry.pk).update(who="x"),
                    lambda: AuditEntry.objects.filter(pk=an_entry.pk).delete()):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            attempt()
    for sql in ("UPDATE copier_auditentry SET changes = '{}'", "DELETE FROM copier_auditentry"):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), \
                connection.cursor() as cursor:
            cursor.execute(sql)
    with pytest.raises(Exception, match="superuser"):
        audit.audit_prune(user=staff, entries=[an_entry])
    an_entry.refresh_from_db()
    assert (an_entry.who, an_entry.changes) == ("boss", {"a": [1, 2]})


def test_a_superuser_prunes_entries_and_the_prune_is_recorded(boss_client, boss, an_entry):
    other = audit.audit_record(by="cli:ops", action=AuditEntry.Action.FLATTEN, object_repr="x")
    assert other.user_id is None  # not a user of the site
    listing = reverse("admin:copier_auditentry_changelist")
    page = boss_client.post(listing, {"action": "delete_selected",
                                      "_selected_action": [an_entry.pk, other.pk],
                                      "post": "yes"})
    assert page.status_code == 302
    [prune] = _entries()
    assert (prune.action, prune.who, prune.user_id) == ("prune", "boss", boss.pk)
    assert prune.detail == f"pruned 2 entries (#{an_entry.pk} to #{other.pk})"
    # still append-only after a prune: the flag lasted for the prune's transaction only
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEntry.objects.filter(pk=prune.pk).delete()
