"""Stopping or resuming entries needs the kill-switch permission on every path, and is
recorded with who did it (issue 19, defect 3).

A user who may edit groups and followers but lacks `copier.kill_switch` gets a form error
(or a 403 from the dashboard's switch) and nothing changes: no mode, no enabled flag, no
operator action. With the permission the same change goes through the kill switch's
service: an OperatorAction by that user, a decision per follower touched, an alert.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from copier.models import Alert, CopyGroup, Decision, Follower, Mode, OperatorAction
from copier.services import killswitch
from tests.factories import account, broker_position, connect, group, leader_fill

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"),
              pytest.mark.usefixtures("eager_tasks")]

EDITOR = ["view_copygroup", "change_copygroup", "view_follower", "change_follower"]
NO_PERMISSION = "needs the kill-switch permission"


def _user(django_user_model: Any, name: str, *codenames: str) -> Any:
    user = django_user_model.objects.create_user(name, f"{name}@example.com", "pw-123456",
                                                 is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return django_user_model.objects.get(pk=user.pk)


@pytest.fixture
def world():
    leader, f1, f2 = account("L"), account("F1"), account("F2")
    g = group("g", leader, {f1: "1", f2: "1"})
    connect(leader, f1, f2)
    leader_fill(leader, "ES", "buy", 1)
    return g, leader, f1, f2


@pytest.fixture
def editor(client, django_user_model):
    client.force_login(_user(django_user_model, "clerk", *EDITOR))
    return client


@pytest.fixture
def operator(client, django_user_model):
    client.force_login(_user(django_user_model, "ops", *EDITOR, "kill_switch"))
    return client


def _group_post(g: CopyGroup, followers: list[Follower] = (), **extra: object
                ) -> dict[str, object]:
    data: dict[str, object] = {
        "name": g.name, "leader": g.leader_id, "exit_mode": g.exit_mode, "mode": g.mode,
        "followers-TOTAL_FORMS": str(len(followers)),
        "followers-INITIAL_FORMS": str(len(followers)),
        "followers-MIN_NUM_FORMS": "0", "followers-MAX_NUM_FORMS": "1000"}
    if g.enabled:
        data["enabled"] = "on"
    for i, f in enumerate(followers):
        data.update({f"followers-{i}-id": f.pk, f"followers-{i}-group": g.pk,
                     f"followers-{i}-account": f.account_id, f"followers-{i}-multiplier": "1",
                     f"followers-{i}-mode": f.mode, f"followers-{i}-daily_loss_action": "lock"})
        if f.enabled:
            data[f"followers-{i}-enabled"] = "on"
    data.update(extra)
    return data


def _follower_post(f: Follower, **extra: object) -> dict[str, object]:
    data: dict[str, object] = {"group": f.group_id, "account": f.account_id,
                               "multiplier": "1", "mode": f.mode, "micro": f.micro,
                               "symbol_mappings-TOTAL_FORMS": "0",
                               "symbol_mappings-INITIAL_FORMS": "0"}
    if f.enabled:
        data["enabled"] = "on"
    data.update(extra)
    return data


def _group_url(g: CopyGroup) -> str:
    return reverse("admin:copier_copygroup_change", args=[g.pk])


def _follower_url(f: Follower) -> str:
    return reverse("admin:copier_follower_change", args=[f.pk])


def _switches() -> list[tuple[str, bool, str]]:
    return ([("group " + g.name, g.enabled, g.mode) for g in CopyGroup.objects.order_by("pk")]
            + [(f.account.name, f.enabled, f.mode)
               for f in Follower.objects.select_related("account").order_by("pk")])


def _refused(page: Any) -> None:
    assert page.status_code == 200, page.status_code  # the form again, with the error
    assert NO_PERMISSION in page.content.decode()


# --- without the permission: a form error, nothing changed -------------------------------


def test_a_group_editor_cannot_resume_a_stopped_group_in_its_form(editor, world):
    g, *_ = world
    killswitch.entries_stop(groups=[g], by="boss")
    g.refresh_from_db()
    before, actions = _switches(), OperatorAction.objects.count()
    _refused(editor.post(_group_url(g), _group_post(g, mode=Mode.ACTIVE)))
    assert _switches() == before
    assert OperatorAction.objects.count() == actions


@pytest.mark.parametrize("change", [{"mode": Mode.EXITS_ONLY}, {"enabled": ""},
                                    {"enabled": "", "on_disable": "exits_only"},
                                    {"enabled": "", "on_disable": "off"}],
                         ids=["exits-only", "untick", "untick-exits-only", "untick-off"])
def test_a_group_editor_cannot_stop_entries_in_the_group_form(editor, world, change):
    g, *_ = world
    before = _switches()
    data = _group_post(g, **change)
    if data.get("enabled") == "":
        del data["enabled"]
    _refused(editor.post(_group_url(g), data))
    assert _switches() == before
    assert not OperatorAction.objects.exists()


def test_a_group_editor_cannot_switch_followers_in_the_groups_inline_rows(editor, world):
    g, _leader, f1, _f2 = world
    followers = list(Follower.objects.filter(group=g).order_by("pk"))
    killswitch.flatten(followers=[followers[0]], by="boss")
    followers = list(Follower.objects.filter(group=g).order_by("pk"))
    before, actions = _switches(), OperatorAction.objects.count()
    _refused(editor.post(_group_url(g), _group_post(g, followers,
                                                    **{"followers-0-mode": Mode.ACTIVE})))
    _refused(editor.post(_group_url(g), _group_post(g, followers,
                                                    **{"followers-1-mode": Mode.EXITS_ONLY})))
    assert _switches() == before
    assert OperatorAction.objects.count() == actions
    assert broker_position(f1, "ES") == 0


def test_a_follower_editor_cannot_set_a_flattened_follower_active_again(editor, world):
    _g, _leader, f1, _f2 = world
    f = Follower.objects.get(account=f1)
    killswitch.flatten(followers=[f], by="boss")
    f.refresh_from_db()
    assert f.mode == Mode.EXITS_ONLY
    before, actions = _switches(), OperatorAction.objects.count()
    _refused(editor.post(_follower_url(f), _follower_post(f, mode=Mode.ACTIVE)))
    data = _follower_post(f)
    del data["enabled"]
    _refused(editor.post(_follower_url(f), {**data, "on_disable": "off"}))
    assert _switches() == before
    assert OperatorAction.objects.count() == actions


def test_moving_a_follower_out_of_a_stopped_group_resumes_it_so_needs_the_permission(
        editor, world):
    g, _leader, f1, _f2 = world
    other = group("other", account("L2"), {})
    killswitch.entries_stop(groups=[g], by="boss")
    f = Follower.objects.get(account=f1)
    _refused(editor.post(_follower_url(f), _follower_post(f, group=other.pk)))
    f.refresh_from_db()
    assert f.group_id == g.pk


def test_a_follower_editor_still_edits_what_is_not_a_switch(editor, world):
    _g, _leader, f1, _f2 = world
    f = Follower.objects.get(account=f1)
    page = editor.post(_follower_url(f), _follower_post(f, multiplier="2"))
    assert page.status_code == 302
    f.refresh_from_db()
    assert (f.multiplier, f.mode, f.enabled) == (2, Mode.ACTIVE, True)
    assert not OperatorAction.objects.exists()


def test_the_dashboard_switch_needs_the_kill_switch_permission(client, django_user_model,
                                                             world):
    _g, _leader, f1, _f2 = world
    f = Follower.objects.get(account=f1)
    killswitch.flatten(followers=[f], by="boss")
    client.force_login(_user(django_user_model, "clerk", *EDITOR))
    before, actions = _switches(), OperatorAction.objects.count()
    url = reverse("follower_enabled", args=[f.pk])
    for wanted in ("on", "off"):
        assert client.post(url, {"enabled": wanted}).status_code == 403
    assert f'data-testid="follower-{f.pk}-switch"' not in client.get("/").content.decode()
    assert _switches() == before
    assert OperatorAction.objects.count() == actions


# --- with the permission: done, and recorded with who did it ------------------------------


def _recorded(kind: str, by: str, group: CopyGroup | None = None) -> OperatorAction:
    action = OperatorAction.objects.order_by("-pk").first()
    assert action is not None
    assert (action.kind, action.by) == (kind, by)
    if group is not None:
        assert action.group_id == group.pk
    assert Alert.objects.filter(kind="kill_switch", text__contains=by).exists()
    return action


def test_resuming_a_group_in_its_form_is_the_kill_switch_resume(operator, world):
    g, *_ = world
    killswitch.entries_stop(groups=[g], by="boss")
    g.refresh_from_db()
    assert operator.post(_group_url(g), _group_post(g, mode=Mode.ACTIVE)).status_code == 302
    g.refresh_from_db()
    assert g.mode == Mode.ACTIVE
    action = _recorded(OperatorAction.Kind.ENTRIES_RESUME, "ops", g)
    assert Decision.objects.filter(action=action).count() == 2


def test_unticking_a_group_in_its_form_is_recorded(operator, world):
    g, leader, *_ = world
    leader_fill(leader, "ES", "sell", 1)  # flat: unticking just switches it off
    data = _group_post(g)
    del data["enabled"]
    assert operator.post(_group_url(g), data).status_code == 302
    g.refresh_from_db()
    assert not g.enabled
    action = _recorded(OperatorAction.Kind.COPYING_OFF, "ops", g)
    assert Decision.objects.filter(action=action).count() == 2


def test_a_flattened_follower_set_active_in_its_form_is_recorded(operator, world):
    _g, _leader, f1, _f2 = world
    f = Follower.objects.get(account=f1)
    killswitch.flatten(followers=[f], by="boss")
    f.refresh_from_db()
    assert operator.post(_follower_url(f), _follower_post(f, mode=Mode.ACTIVE)
                         ).status_code == 302
    f.refresh_from_db()
    assert f.mode == Mode.ACTIVE
    action = _recorded(OperatorAction.Kind.ENTRIES_RESUME, "ops", f.group)
    decision = Decision.objects.get(action=action)
    assert decision.account_id == f1.pk
    assert "ops" in decision.detail


def test_an_inline_row_switched_in_the_group_form_is_recorded(operator, world):
    g, _leader, _f1, _f2 = world
    followers = list(Follower.objects.filter(group=g).order_by("pk"))
    page = operator.post(_group_url(g), _group_post(g, followers,
                                                    **{"followers-0-mode": Mode.EXITS_ONLY}))
    assert page.status_code == 302
    assert Follower.objects.get(pk=followers[0].pk).mode == Mode.EXITS_ONLY
    action = _recorded(OperatorAction.Kind.ENTRIES_STOP, "ops", g)
    assert Decision.objects.get(action=action).account_id == followers[0].account_id


def test_the_dashboard_switch_with_the_permission_is_recorded(client, django_user_model,
                                                            world):
    _g, _leader, f1, _f2 = world
    f = Follower.objects.get(account=f1)
    killswitch.flatten(followers=[f], by="boss")
    client.force_login(_user(django_user_model, "ops", "view_follower", "kill_switch"))
    url = reverse("follower_enabled", args=[f.pk])
    assert client.post(url, {"enabled": "on"}).status_code == 302
    f.refresh_from_db()
    assert (f.enabled, f.mode) == (True, Mode.ACTIVE)
    action = _recorded(OperatorAction.Kind.ENTRIES_RESUME, "ops", f.group)
    assert Decision.objects.get(action=action).account_id == f1.pk


def test_moving_a_follower_out_of_a_stopped_group_with_the_permission_is_recorded(
        operator, world):
    g, _leader, f1, _f2 = world
    other = group("other", account("L2"), {})
    killswitch.entries_stop(groups=[g], by="boss")
    f = Follower.objects.get(account=f1)
    assert operator.post(_follower_url(f), _follower_post(f, group=other.pk)
                         ).status_code == 302
    f.refresh_from_db()
    assert f.group_id == other.pk
    action = _recorded(OperatorAction.Kind.ENTRIES_RESUME, "ops", other)
    assert "moved to group other" in action.detail
    assert Decision.objects.get(action=action).reason == "entries_resumed"
