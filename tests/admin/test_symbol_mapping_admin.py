"""The follower's symbol mapping in the admin: a bad rule is a form error that writes nothing;
a good one is saved with the follower's mini/micro choice and starts with the next event."""

from __future__ import annotations

import html

import pytest
from django.urls import reverse

from copier.domain.symbol_map import Micro
from copier.models import Follower, LeaderEvent, SymbolMapping
from tests.factories import account, group, leader_fill

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"),
              pytest.mark.usefixtures("eager_tasks")]


@pytest.fixture
def client(client, django_user_model):
    user = django_user_model.objects.create_superuser("boss", "b@example.com", "pw-123456")
    client.force_login(user)
    return client


@pytest.fixture
def follower():
    leader, f1 = account("L"), account("F1")
    g = group("g", leader, {f1: "1"})
    leader_fill(leader, "NQ", "buy", 1)
    return Follower.objects.get(group=g, account=f1)


def _post(f, rules, micro="off"):
    data = {"group": f.group_id, "account": f.account_id, "multiplier": "1", "enabled": "on",
            "mode": "active", "micro": micro,
            "symbol_mappings-TOTAL_FORMS": str(len(rules)), "symbol_mappings-INITIAL_FORMS": "0",
            "symbol_mappings-MIN_NUM_FORMS": "0", "symbol_mappings-MAX_NUM_FORMS": "1000"}
    for i, (leader, target, ratio) in enumerate(rules):
        data[f"symbol_mappings-{i}-leader_symbol"] = leader
        data[f"symbol_mappings-{i}-follower_symbol"] = target
        data[f"symbol_mappings-{i}-ratio"] = ratio
    return data


@pytest.mark.parametrize(("rules", "micro", "message"), [
    ([("NQ", "MNQ", "0")], "off", "greater than 0"),
    ([("NQ", "MNQ", "-2")], "off", "greater than 0"),
    ([("NQ", "MNQ", "1000")], "off", "at most 100"),
    ([("NQ", "MNQZ6", "")], "off", "give its root (MNQ)"),
    ([("N Q", "MNQ", "")], "off", "invalid symbol"),
    ([("NQ", "MNQ", ""), ("nq", "NQ", "")], "off", "two rules for the leader's NQ"),
    ([("NQ", "MNQ", ""), ("ES", "MNQ", "")], "off", "ES and NQ would both be traded as MNQ"),
    ([("NQ", "MES", "1")], "to_micro", "would both be traded as MES"),
])
def test_a_bad_mapping_is_a_form_error_and_writes_nothing(client, follower, rules, micro,
                                                          message):
    start = follower.start_event_id
    page = client.post(reverse("admin:copier_follower_change", args=[follower.pk]),
                       _post(follower, rules, micro))
    assert page.status_code == 200
    assert message in html.unescape(page.content.decode())
    assert not SymbolMapping.objects.exists()
    follower.refresh_from_db()
    assert (follower.micro, follower.start_event_id) == ("off", start)


def test_a_good_mapping_is_saved_and_the_follower_starts_with_the_next_event(client, follower):
    before = follower.start_event_id  # it joined before the leader's first event
    event_id = LeaderEvent.objects.get().pk
    assert before < event_id
    page = client.post(reverse("admin:copier_follower_change", args=[follower.pk]),
                       _post(follower, [("nq", "mnq", ""), ("ESZ6", "MES", "5")], "to_mini"))
    assert page.status_code == 302, html.unescape(page.content.decode())[-3000:]
    follower.refresh_from_db()
    smap = follower.symbols()
    assert smap.micro == Micro.TO_MINI
    assert smap.route("NQH7").symbol == "MNQH7"
    assert smap.route("NQH7").ratio == 10  # no ratio given: the notional of a mini/micro pair
    assert smap.route("ESZ6").ratio == 5
    assert smap.route("MYMZ6").symbol == "YMZ6"
    # events before the mapping were decided on the old symbols: never again on the new ones
    assert follower.start_event_id == event_id
    page = client.get(reverse("admin:copier_follower_change", args=[follower.pk]))
    assert "mini/micro conversion" in page.content.decode().lower()
