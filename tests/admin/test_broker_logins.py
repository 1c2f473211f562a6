"""The admin asks each broker kind for its own login, checks it, keeps it write-only,
and tests a connection against the venue (here the local protocol servers)."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from accounts.models import TradingAccount
from devkit.localvenue import venue_start

pytestmark = pytest.mark.django_db

INLINE = {"positions-TOTAL_FORMS": "0", "positions-INITIAL_FORMS": "0",
          "positions-MIN_NUM_FORMS": "0", "positions-MAX_NUM_FORMS": "1000"}


@pytest.fixture
def client(client, django_user_model):
    user = django_user_model.objects.create_superuser("boss", "b@example.com", "pw-123456")
    client.force_login(user)
    return client


def _add(client, **fields: str):
    return client.post(reverse("admin:accounts_tradingaccount_add"), {**fields, **INLINE})


def test_each_kind_gets_its_own_login_section(client):
    page = client.get(reverse("admin:accounts_tradingaccount_add")).content.decode()
    for field in ("cred_projectx_api_key", "cred_tradovate_password", "cred_tradovate_cid",
                  "cred_tradovate_environment"):
        assert f'name="{field}"' in page
    assert "ProjectX Gateway (TopstepX, prop firms) login" in page


def test_a_tradovate_login_is_stored_as_the_venue_needs_it(client):
    page = _add(client, name="TV1", broker="tradovate", external_id="4001",
                cred_tradovate_name="me", cred_tradovate_password="pw-1",
                cred_tradovate_app_id="copier", cred_tradovate_app_version="1.0",
                cred_tradovate_cid="8", cred_tradovate_sec="sec-1",
                cred_tradovate_environment="demo")
    assert page.status_code == 302, page.content.decode()[:3000]
    stored = json.loads(TradingAccount.objects.get(name="TV1").credentials)
    assert stored["password"] == "pw-1"
    assert stored["environment"] == "demo"


@pytest.mark.parametrize(("fields", "error"), [
    ({"external_id": "abc"}, "account id is a whole number"),
    ({"cred_projectx_api_key": ""}, "missing: API key"),
    ({"cred_projectx_api_url": "ftp://x"}, "http"),
])
def test_a_bad_login_is_a_form_error_and_stores_nothing(client, fields, error):
    base = {"name": "PX1", "broker": "projectx", "external_id": "7",
            "cred_projectx_username": "me", "cred_projectx_api_key": "k"}
    page = _add(client, **{**base, **fields})
    assert page.status_code == 200
    assert error in page.content.decode()
    assert not TradingAccount.objects.filter(name="PX1").exists()


def test_switching_the_broker_kind_drops_the_old_kinds_login(client):
    acct = TradingAccount.objects.create(name="X1", broker="projectx", external_id="7",
                                         credentials=json.dumps({"username": "me",
                                                                 "api_key": "old-key"}))
    page = client.post(reverse("admin:accounts_tradingaccount_change", args=[acct.pk]), {
        "name": "X1", "broker": "tradovate", "external_id": "7", "cred_tradovate_name": "me",
        "cred_tradovate_password": "", "cred_tradovate_app_id": "a",
        "cred_tradovate_app_version": "1", "cred_tradovate_cid": "8",
        "cred_tradovate_sec": "s", "cred_tradovate_environment": "live", **INLINE})
    # the old kind's secret is not carried over into the new kind's blank password
    assert page.status_code == 200
    assert "missing: password" in page.content.decode()
    acct.refresh_from_db()
    assert acct.broker == "projectx"


@pytest.mark.parametrize("kind", ["projectx", "tradovate"])
def test_test_connection_logs_in_and_says_what_it_found_or_what_failed(client, kind):
    venue = venue_start(kind)
    try:
        ext = venue.account_add("PROP-1")
        good = TradingAccount.objects.create(name="GOOD", broker=kind, external_id=ext,
                                             credentials=json.dumps(venue.credentials(ext)))
        creds = venue.credentials(ext)
        secret = "api_key" if kind == "projectx" else "password"
        creds[secret] = "wrong-secret"
        bad = TradingAccount.objects.create(name="BAD", broker=kind, external_id=ext,
                                            credentials=json.dumps(creds))
        page = client.post(reverse("admin:accounts_tradingaccount_changelist"),
                           {"action": "connection_test", "_selected_action": [good.pk, bad.pk]},
                           follow=True)
    finally:
        venue.stop()
    messages = [(m.level_tag, str(m)) for m in page.context["messages"]]
    assert any(tag == "success" and text.startswith("GOOD: ") for tag, text in messages), messages
    assert any(tag == "error" and text.startswith("BAD: ") for tag, text in messages), messages
    assert "wrong-secret" not in page.content.decode()
