"""The admin's side of modes and the kill switch: unticking `enabled` while positions are
held asks what to do, and the group/follower actions need their permissions."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from copier.models import CopyGroup, Decision, Follower, Mode, OperatorAction, Order
from tests.factories import account, broker_position, connect, group, leader_fill

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"),
              pytest.mark.usefixtures("eager_tasks")]


@pytest.fixture
def boss(client, django_user_model):
    user = django_user_model.objects.create_superuser("boss", "b@example.com", "pw-123456")
    client.force_login(user)
    return client


@pytest.fixture
def world():
    leader, f1, f2 = account("L"), account("F1"), account("F2")
    g = group("g", leader, {f1: "1", f2: "1"})
    connect(leader, f1, f2)
    leader_fill(leader, "ES", "buy", 1)
    return g, leader, f1, f2


def _follower_post(f: Follower, **extra: str) -> dict[str, object]:
    data: dict[str, object] = {"group": f.group_id, "account": f.account_id,
                               "multiplier": "1", "mode": f.mode, "micro": f.micro,
                               # the follower page's symbol mappings inline, empty
                               "symbol_mappings-TOTAL_FORMS": "0",
                               "symbol_mappings-INITIAL_FORMS": "0"}
    data.update(extra)  # `enabled` absent: unticked
    return data


def _follower_url(f: Follower) -> str:
    return reverse("admin:copier_follower_change", args=[f.pk])


def test_unticking_a_follower_that_holds_a_position_asks_and_changes_nothing(boss, world):
    _g, _leader, f1, _f2 = world
    f = Follower.objects.get(account=f1)
    page = boss.post(_follower_url(f), _follower_post(f))
    assert page.status_code == 200  # the form again, with the question
    text = page.content.decode()
    assert "F1 holds ES +1" in text
    assert 'value="exits_only" selected' in text  # exits only chosen by default
    f.refresh_from_db()
    assert (f.enabled, f.mode) == (True, Mode.ACTIVE)


@pytest.mark.parametrize(("choice", "enabled", "mode"), [("exits_only", True, Mode.EXITS_ONLY),
                                                         ("off", False, Mode.ACTIVE)])
def test_the_answer_decides_exits_only_or_off(boss, world, choice, enabled, mode):
    _g, _leader, f1, _f2 = world
    f = Follower.objects.get(account=f1)
    page = boss.post(_follower_url(f), _follower_post(f, on_disable=choice))
    assert page.status_code == 302
    f.refresh_from_db()
    assert (f.enabled, f.mode) == (enabled, mode)


def test_unticking_a_flat_follower_just_switches_it_off(boss, world):
    _g, leader, f1, _f2 = world
    leader_fill(leader, "ES", "sell", 1)
    f = Follower.objects.get(account=f1)
    assert boss.post(_follower_url(f), _follower_post(f)).status_code == 302
    f.refresh_from_db()
    assert not f.enabled


def _group_post(g: CopyGroup, **extra: str) -> dict[str, object]:
    data: dict[str, object] = {
        "name": g.name, "leader": g.leader_id, "exit_mode": g.exit_mode, "mode": g.mode,
        "followers-TOTAL_FORMS": "0", "followers-INITIAL_FORMS": "0",
        "followers-MIN_NUM_FORMS": "0", "followers-MAX_NUM_FORMS": "1000"}
    data.update(extra)
    return data


def test_unticking_a_group_whose_followers_hold_positions_asks_first(boss, world):
    g, *_ = world
    url = reverse("admin:copier_copygroup_change", args=[g.pk])
    page = boss.post(url, _group_post(g))
    assert page.status_code == 200
    assert "F1 holds ES +1; F2 holds ES +1" in page.content.decode()
    assert boss.post(url, _group_post(g, on_disable="exits_only")).status_code == 302
    g.refresh_from_db()
    assert (g.enabled, g.mode) == (True, Mode.EXITS_ONLY)


def _action(client, model: str, name: str, pks: list[int], **extra: str):
    return client.post(reverse(f"admin:copier_{model}_changelist"),
                       {"action": name, "_selected_action": pks, **extra})


def test_stop_and_resume_entries_from_the_group_list(boss, world):
    g, *_ = world
    assert _action(boss, "copygroup", "stop_entries", [g.pk]).status_code == 302
    g.refresh_from_db()
    assert g.mode == Mode.EXITS_ONLY
    assert OperatorAction.objects.get().by == "boss"
    _action(boss, "copygroup", "resume_entries", [g.pk])
    g.refresh_from_db()
    assert g.mode == Mode.ACTIVE


def test_flatten_and_stop_lists_every_order_then_flattens_once_confirmed(boss, world):
    g, _leader, f1, f2 = world
    page = _action(boss, "copygroup", "flatten_and_stop", [g.pk])
    assert page.status_code == 200
    text = page.content.decode()
    assert text.count("<td>sell</td>") == 2
    assert "F1" in text and "F2" in text  # noqa: PT018
    assert not Order.objects.filter(client_order_id__startswith="fl").exists()
    done = _action(boss, "copygroup", "flatten_and_stop", [g.pk], confirm="yes")
    assert done.status_code == 302
    assert (broker_position(f1, "ES"), broker_position(f2, "ES")) == (0, 0)
    assert Decision.objects.filter(action__isnull=False, reason="flattened").count() == 2


def test_follower_flatten_action(boss, world):
    _g, _leader, f1, f2 = world
    f = Follower.objects.get(account=f1)
    assert "ES" in _action(boss, "follower", "flatten", [f.pk]).content.decode()
    _action(boss, "follower", "flatten", [f.pk], confirm="yes")
    assert (broker_position(f1, "ES"), broker_position(f2, "ES")) == (0, 1)


def test_flattening_again_lists_the_queued_exit_and_attempts_it_at_once(boss, world):
    """The first flatten's sell fails (queued, backing off); the page of the second says
    the queued exit is attempted again now, and confirming sends it, queueing no second."""
    from brokers.sim import SimBroker
    from copier.models import FailedExit

    _g, _leader, f1, _f2 = world
    f = Follower.objects.get(account=f1)
    SimBroker(f1).inject(fail=1)
    _action(boss, "follower", "flatten", [f.pk], confirm="yes")
    fe = FailedExit.objects.get(account=f1)
    assert (fe.status, fe.attempts, broker_position(f1, "ES")) == ("pending", 1, 1)
    text = _action(boss, "follower", "flatten", [f.pk]).content.decode()
    assert "<td>sell</td>" in text
    assert "queued by an earlier flatten: attempted again now" in text
    _action(boss, "follower", "flatten", [f.pk], confirm="yes")
    fe.refresh_from_db()
    assert fe.status == FailedExit.Status.DONE
    assert FailedExit.objects.filter(account=f1).count() == 1
    assert broker_position(f1, "ES") == 0


def test_the_kill_switch_actions_need_their_permissions(client, django_user_model, world):
    g, _leader, f1, _f2 = world
    user = django_user_model.objects.create_user("clerk", "c@example.com", "pw-123456",
                                                 is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(
        codename__in=["view_copygroup", "change_copygroup", "view_follower",
                      "change_follower"]))
    client.force_login(user)
    listing = client.get(reverse("admin:copier_copygroup_changelist")).content.decode()
    assert "stop_entries" not in listing and "flatten_and_stop" not in listing  # noqa: PT018
    _action(client, "copygroup", "stop_entries", [g.pk])
    _action(client, "copygroup", "flatten_and_stop", [g.pk], confirm="yes")
    g.refresh_from_db()
    assert g.mode == Mode.ACTIVE
    assert broker_position(f1, "ES") == 1

    user.user_permissions.add(Permission.objects.get(codename="kill_switch"))
    user = django_user_model.objects.get(pk=user.pk)  # permissions are cached on the object
    client.force_login(user)
    listing = client.get(reverse("admin:copier_copygroup_changelist")).content.decode()
    assert "stop_entries" in listing and "flatten_and_stop" not in listing  # noqa: PT018
    _action(client, "copygroup", "stop_entries", [g.pk])
    g.refresh_from_db()
    assert g.mode == Mode.EXITS_ONLY


@pytest.mark.django_db(transaction=True, databases="__all__")
@pytest.mark.usefixtures("eager_tasks")
def test_a_kill_switch_action_reads_as_a_sentence_in_the_decisions(client, django_user_model):
    from copier.services import killswitch
    from tests.factories import account, connect, group, leader_fill

    boss = django_user_model.objects.create_superuser("boss2", "b2@example.com", "pw-123456")
    client.force_login(boss)
    leader, f1 = account("KL"), account("KF1")
    g = group("kg", leader, {f1: "1"})
    connect(leader, f1)
    leader_fill(leader, "MNQ", "buy", 2)
    killswitch.flatten(groups=[g], by="boss2")
    page = client.get("/copier/decision/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Flatten and stop entries by boss2 on KF1, held +2 MNQ: sell 2 (sent)" in text
