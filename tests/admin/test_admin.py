"""The admin: every page answers, bad input is a form error that writes nothing."""

from __future__ import annotations

import html
import json
import re

import pytest
from django.core.management import call_command
from django.db import connection
from django.urls import reverse

from accounts.models import Position, TradingAccount
from copier.models import CopyGroup, Decision, Follower, LeaderEvent, Quarantine
from tests.factories import account, connect, group, leader_fill
from tests.helpers import wait_until
from tests.listener.helpers import listening

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"),
              pytest.mark.usefixtures("eager_tasks")]


@pytest.fixture
def client(client, django_user_model):
    user = django_user_model.objects.create_superuser("boss", "b@example.com", "pw-123456")
    client.force_login(user)
    return client


@pytest.fixture
def world():
    leader, f1 = account("L"), account("F1")
    g = group("g", leader, {f1: "1"})
    connect(leader, f1)
    leader_fill(leader, "ES", "buy", 1)
    return leader, f1, g


def test_every_changelist_answers_with_each_of_its_filters_and_orderings(client, world):
    """Every registered table's list, and every query string it offers (filters, date
    drill-down, column sorting), runs: the database binds parameters server-side, where an
    untyped one is an error. One test for all of them: one world, not one per table."""
    from django.contrib import admin

    lists = sorted(f"/{m._meta.app_label}/{m._meta.model_name}/" for m in admin.site._registry)
    assert "/copier/decision/" in lists
    for url in lists:
        page = client.get(url)
        assert page.status_code == 200, url
        offered = set(re.findall(r'href="(\?[^"]+)"', page.content.decode()))
        for query in offered:
            assert client.get(url + html.unescape(query)).status_code == 200, url + query


def test_change_pages_answer_and_decisions_show_their_reason(client, world):
    _, f1, g = world
    assert client.get(reverse("admin:copier_copygroup_change", args=[g.pk])).status_code == 200
    assert client.get(reverse("admin:accounts_tradingaccount_change",
                              args=[f1.pk])).status_code == 200
    decision = Decision.objects.get(account=f1)
    page = client.get(reverse("admin:copier_leaderevent_change", args=[decision.event_id]))
    assert page.status_code == 200
    assert "copied" in page.content.decode()
    listing = client.get("/copier/decision/", {"q": "F1"}).content.decode()
    assert "copied" in listing


def _group_post(name, leader, followers):
    data = {"name": name, "leader": leader.pk, "exit_mode": "proportional", "enabled": "on",
            "followers-TOTAL_FORMS": str(len(followers)), "followers-INITIAL_FORMS": "0",
            "followers-MIN_NUM_FORMS": "0", "followers-MAX_NUM_FORMS": "1000"}
    for i, (acct, multiplier) in enumerate(followers):
        data[f"followers-{i}-account"] = acct.pk
        data[f"followers-{i}-multiplier"] = multiplier
        data[f"followers-{i}-enabled"] = "on"
    return data


@pytest.mark.parametrize(("multiplier", "message"), [
    ("0", "greater than 0"), ("-1", "greater than 0"),
    ("3000", "at most 100"), ("1e3", "at most 100"), ("99999999", "at most 100"),
])
def test_follower_multiplier_out_of_bounds_is_a_form_error(client, multiplier, message):
    leader, f = account("L"), account("F")
    page = client.post(reverse("admin:copier_copygroup_add"),
                       _group_post("g", leader, [(f, multiplier)]))
    assert page.status_code == 200
    assert message in page.content.decode()
    assert not CopyGroup.objects.exists()
    assert not Follower.objects.exists()


def test_leader_cannot_follow_its_own_group(client):
    leader = account("L")
    page = client.post(reverse("admin:copier_copygroup_add"),
                       _group_post("g", leader, [(leader, "1")]))
    assert "cannot follow its own group" in page.content.decode()
    assert not CopyGroup.objects.exists()


def test_account_in_two_groups_is_a_form_error(client, world):
    _, f1, _ = world
    page = client.post(reverse("admin:copier_copygroup_add"),
                       _group_post("g2", account("L2"), [(f1, "1")]))
    assert page.status_code == 200
    assert "already exists" in page.content.decode()
    assert CopyGroup.objects.count() == 1


def test_follower_cannot_lead_a_group(client, world):
    _, f1, _ = world
    page = client.post(reverse("admin:copier_copygroup_add"), _group_post("g2", f1, []))
    assert "leader or a follower" in page.content.decode()
    assert CopyGroup.objects.count() == 1


@pytest.mark.parametrize(("data", "error"), [
    ({"symbol": "ES", "side": "buy", "qty": "0"}, "greater than or equal to 1"),
    ({"symbol": "ES", "side": "hold", "qty": "1"}, "Select a valid choice"),
    ({"symbol": "$$", "side": "buy", "qty": "1"}, "invalid symbol"),
])
def test_sim_fill_form_refuses_bad_input_and_changes_nothing(client, world, data, error):
    _, f1, _ = world
    before = list(Position.objects.values_list("account_id", "symbol", "qty"))
    page = client.post(reverse("admin:accounts_tradingaccount_sim_fill", args=[f1.pk]), data)
    assert page.status_code == 200
    assert error in page.content.decode()
    assert list(Position.objects.values_list("account_id", "symbol", "qty")) == before


def _qty(acct, symbol):
    row = Position.objects.filter(account=acct, symbol=symbol).first()
    return row.qty if row else 0


def _state(acct):
    return TradingAccount.objects.get(pk=acct.pk).connection_state


def test_sim_fill_on_a_follower_is_a_manual_trade_the_copier_sees(client, world):
    leader, f1, _ = world
    with listening(leader, f1):
        page = client.post(reverse("admin:accounts_tradingaccount_sim_fill", args=[f1.pk]),
                           {"symbol": "nq", "side": "sell", "qty": "2"})
        assert page.status_code == 302
        wait_until(lambda: _qty(f1, "NQ") == -2, what="the listener saw the fill")


def test_sim_fill_on_the_leader_is_copied_through_the_listener(client, world):
    leader, f1, _ = world
    with listening(leader, f1):
        client.post(reverse("admin:accounts_tradingaccount_sim_fill", args=[leader.pk]),
                    {"symbol": "ES", "side": "buy", "qty": "1"})
        wait_until(lambda: _qty(f1, "ES") == 2, what="the listener copied the fill")
    assert LeaderEvent.objects.filter(source="stream").count() == 2  # not "missed"


def test_sim_outage_and_restore_actions_are_seen_by_the_listener(client, world):
    leader, f1, _ = world
    url = reverse("admin:accounts_tradingaccount_changelist")
    with listening(leader, f1):
        client.post(url, {"action": "sim_outage", "_selected_action": [f1.pk]})
        wait_until(lambda: _state(f1) == "disconnected", what="the outage seen")
        assert "outage" in TradingAccount.objects.get(pk=f1.pk).last_error
        client.post(url, {"action": "sim_restore", "_selected_action": [f1.pk]})
        wait_until(lambda: _state(f1) == "connected", what="the reconnect")


def test_lift_quarantine_action(client, world):
    _, f1, _ = world
    from copier.services.quarantine import quarantine_create

    q = quarantine_create(account=f1, symbol="ES", reason="opposite_side")
    client.post(reverse("admin:copier_quarantine_changelist"),
                {"action": "lift", "_selected_action": [q.pk]})
    q.refresh_from_db()
    assert q.lifted_by == "boss"
    assert q.lifted_at is not None


POSITIONS_INLINE = {"positions-TOTAL_FORMS": "0", "positions-INITIAL_FORMS": "0",
                    "positions-MIN_NUM_FORMS": "0", "positions-MAX_NUM_FORMS": "1000"}


def test_credentials_are_encrypted_and_never_rendered(client):
    login = {"cred_projectx_username": "trader", "cred_projectx_api_key": "s3cr3t-value"}
    page = client.post(reverse("admin:accounts_tradingaccount_add"),
                       {"name": "T1", "broker": "projectx", "external_id": "1234", **login,
                        **POSITIONS_INLINE})
    assert page.status_code == 302, page.content.decode()[:3000]
    acct = TradingAccount.objects.get(name="T1")
    with connection.cursor() as cur:
        cur.execute("SELECT credentials FROM accounts_tradingaccount WHERE id = %s", [acct.pk])
        assert "s3cr3t" not in cur.fetchone()[0]
    page = client.get(reverse("admin:accounts_tradingaccount_change", args=[acct.pk]))
    assert "s3cr3t" not in page.content.decode()
    client.post(reverse("admin:accounts_tradingaccount_change", args=[acct.pk]),
                {"name": "T1", "broker": "projectx", "external_id": "1234",
                 "cred_projectx_username": "trader", "cred_projectx_api_key": "",
                 **POSITIONS_INLINE})
    acct.refresh_from_db()
    assert json.loads(acct.credentials)["api_key"] == "s3cr3t-value"  # blank keeps the secret


def test_audit_rows_cannot_be_edited(client, world):
    _, f1, _ = world
    decision = Decision.objects.get(account=f1)
    assert client.post(reverse("admin:copier_decision_delete", args=[decision.pk]),
                       {"post": "yes"}).status_code == 403
    assert Decision.objects.filter(pk=decision.pk).exists()


def test_demo_seed_is_idempotent():
    call_command("copier_demo")
    counts = (TradingAccount.objects.count(), CopyGroup.objects.count(), Follower.objects.count())
    assert counts == (5, 2, 4)
    call_command("copier_demo")
    assert (TradingAccount.objects.count(), CopyGroup.objects.count(),
            Follower.objects.count()) == counts
    assert not Quarantine.objects.exists()
