"""A stored secret never goes to an address other than the one it was entered for (issue 19,
defect 1), and what a venue answers is shown summarised, never echoed.

A staff user with only view and change on trading accounts, the admin's own form and
action, the local venues for the legitimate path, and a receiver on loopback standing in
for "another host": it must never see a stored secret or a session the venue issued.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.apps import apps as django_apps
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.db import connection
from django.urls import reverse

from accounts.models import TradingAccount
from brokers.base import BrokerError, PermanentBrokerError
from brokers.registry import adapter_class, adapters_forget
from brokers.sessions import session_save
from brokers.tradovate import TradovateBroker
from core.fields import Secret
from devkit.localvenue import LocalVenue, venue_start
from tests.admin.receiver import Receiver
from tests.factories import group
from tests.helpers import wait_until
from tests.listener.helpers import listening

pytestmark = pytest.mark.django_db

INLINE = {"positions-TOTAL_FORMS": "0", "positions-INITIAL_FORMS": "0",
          "positions-MIN_NUM_FORMS": "0", "positions-MAX_NUM_FORMS": "1000"}
SECRETS = {"projectx": ("api_key",), "tradovate": ("password", "sec")}
ADDRESS_FIELDS = {"projectx": ("api_url", "rtc_url"), "tradovate": ("api_url", "ws_url")}
# Each venue address of each kind, and what it looks like pointed at the receiver.
ADDRESSES = [("projectx", "api_url"), ("projectx", "rtc_url"), ("tradovate", "api_url"),
             ("tradovate", "ws_url")]
INTERNAL = "INTERNAL-ADMIN-PAGE db_password=hunter2"


@pytest.fixture
def staff(client, django_user_model):
    """View and change on trading accounts, nothing else."""
    user = django_user_model.objects.create_user("clerk", "c@example.com", "pw-123456",
                                                 is_staff=True)
    user.user_permissions.set(Permission.objects.filter(
        codename__in=["view_tradingaccount", "change_tradingaccount"]))
    client.force_login(user)
    return client


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(params=["projectx", "tradovate"])
def venue(request: pytest.FixtureRequest) -> Iterator[LocalVenue]:
    started = venue_start(request.param)
    try:
        yield started
    finally:
        started.stop()


def _at(receiver: Receiver, field: str) -> str:
    return receiver.url.replace("http", "ws", 1) if field == "ws_url" else receiver.url


def _stored(acct: TradingAccount) -> dict[str, str]:
    return json.loads(str(TradingAccount.objects.get(pk=acct.pk).credentials))


def _secrets_of(kind: str, login: dict[str, str]) -> list[str]:
    return [login[name] for name in SECRETS[kind]]


def _form(acct: TradingAccount, **changes: str) -> dict[str, Any]:
    """The change form as the admin renders it: the login's plain fields filled, the
    secrets blank (kept), then `changes` (credential names) applied."""
    kind = acct.broker
    stored = _stored(acct)
    data: dict[str, Any] = {"name": acct.name, "broker": kind, "external_id": acct.external_id,
                            **INLINE}
    for field in adapter_class(kind).credential_fields:
        value = changes.get(field.name, "" if field.secret else stored.get(field.name, ""))
        data[f"cred_{kind}_{field.name}"] = value
    return data


def _change(client, acct: TradingAccount, **changes: str):
    return client.post(reverse("admin:accounts_tradingaccount_change", args=[acct.pk]),
                       _form(acct, **changes))


def _connection_test(client, *accounts: TradingAccount) -> list[tuple[str, str]]:
    """What the action said of these accounts (not the messages of an earlier save)."""
    page = client.post(reverse("admin:accounts_tradingaccount_changelist"),
                       {"action": "connection_test",
                        "_selected_action": [a.pk for a in accounts]}, follow=True)
    assert page.status_code == 200
    names = tuple(f"{a.name}: " for a in accounts)
    return [(m.level_tag, str(m)) for m in page.context["messages"]
            if str(m).startswith(names)]


def _venue_account(venue: LocalVenue, name: str = "PROP-1") -> TradingAccount:
    ext = venue.account_add(name)
    return TradingAccount.objects.create(name=name, broker=venue.kind, external_id=ext,
                                         credentials=json.dumps(venue.credentials(ext)))


@pytest.mark.parametrize(("kind", "field"), ADDRESSES)
def test_a_changed_venue_address_with_the_secret_kept_is_refused_and_nothing_is_sent(
        staff, receiver, kind, field):
    venue = venue_start(kind)
    try:
        acct = _venue_account(venue)
        before = _stored(acct)
        page = _change(staff, acct, **{field: _at(receiver, field)})
        assert page.status_code == 200, "saved: the stored secret would go to the new address"
        body = page.content.decode()
        assert "the venue address changed, so the stored" in body
        assert "must be typed again" in body
        assert _stored(acct) == before  # nothing changed
        messages = _connection_test(staff, acct)  # the account still works where it was
    finally:
        venue.stop()
    assert [tag for tag, _ in messages] == ["success"], messages
    assert receiver.requests == []


def test_the_secret_typed_again_with_the_new_address_goes_there_and_only_there(staff, venue):
    acct = _venue_account(venue)
    other = venue_start(venue.kind)
    try:
        ext = other.account_add("PROP-1")
        new = other.credentials(ext)
        addresses = {name: new[name] for name in ADDRESS_FIELDS[venue.kind]}
        typed = {name: new[name] for name in SECRETS[venue.kind]}
        page = staff.post(reverse("admin:accounts_tradingaccount_change", args=[acct.pk]),
                          {**_form(acct, **addresses, **typed), "external_id": ext})
        assert page.status_code == 302, page.content.decode()[:3000]
        stored = _stored(acct)
        assert {k: stored[k] for k in addresses} == addresses
        messages = _connection_test(staff, acct)
    finally:
        other.stop()
    assert [tag for tag, _ in messages] == ["success"], messages


def test_a_secret_typed_again_equal_to_the_stored_one_is_bound_to_the_new_address(staff):
    """Tradovate's local venues share one password: typed again, the same value is a secret
    entered now, not one kept."""
    first, second = venue_start("tradovate"), venue_start("tradovate")
    try:
        acct = _venue_account(first)
        ext = second.account_add("PROP-1")
        new = second.credentials(ext)
        assert _secrets_of("tradovate", new) == _secrets_of("tradovate", _stored(acct))
        page = staff.post(reverse("admin:accounts_tradingaccount_change", args=[acct.pk]), {
            **_form(acct, api_url=new["api_url"], ws_url=new["ws_url"],
                    password=new["password"], sec=new["sec"]), "external_id": ext})
        assert page.status_code == 302, page.content.decode()[:3000]
        messages = _connection_test(staff, acct)
    finally:
        first.stop()
        second.stop()
    assert [tag for tag, _ in messages] == ["success"], messages


def test_switching_tradovates_environment_is_a_change_of_address(staff):
    login = {"name": "me", "password": "pw-1", "app_id": "a", "app_version": "1", "cid": "8",
             "sec": "s-1", "environment": "demo"}
    assert TradovateBroker.credential_addresses(login) != TradovateBroker.credential_addresses(
        {**login, "environment": "live"})
    acct = TradingAccount.objects.create(name="TV", broker="tradovate", external_id="4001",
                                         credentials=json.dumps(login))
    page = _change(staff, acct, environment="live")
    assert page.status_code == 200
    assert "must be typed again" in page.content.decode()
    assert _stored(acct)["environment"] == "demo"


@pytest.mark.parametrize(("kind", "field"), ADDRESSES)
def test_the_model_refuses_a_kept_secret_at_a_new_address_and_the_adapter_a_forged_one(
        receiver, kind, field):
    venue = venue_start(kind)
    try:
        acct = _venue_account(venue)
        before = _stored(acct)
        acct.credentials = json.dumps({**before, field: _at(receiver, field)})
        with pytest.raises(ValidationError, match="must be typed again"):
            acct.save()
        assert _stored(acct) == before
        # Written past the model (raw SQL, a restore): the adapters refuse it before sending.
        TradingAccount.objects.filter(pk=acct.pk).update(
            credentials=Secret(json.dumps({**before, field: _at(receiver, field)})))
        adapters_forget()
        forged = adapter_class(kind)(TradingAccount.objects.get(pk=acct.pk))
        for call in (lambda: forged.session_obtain(None), forged.connection_test):
            with pytest.raises(PermanentBrokerError, match="not entered for the venue address"):
                call()
        with pytest.raises(BrokerError):  # a worker's read: no session fits, none is sent
            forged.positions()
    finally:
        venue.stop()
    assert receiver.requests == []


def test_a_session_the_old_address_issued_is_never_sent_to_the_new_one(staff, receiver, venue):
    """Whoever changes the address must type the secret, but may type anything: the stored
    session (a token that trades) stays with the address that issued it."""
    acct = _venue_account(venue)
    real = _secrets_of(venue.kind, _stored(acct))
    session = adapter_class(venue.kind)(acct).session_obtain(None)
    assert session is not None
    session_save(acct.pk, session, obtained_by="test listener")
    addresses = {name: _at(receiver, name) for name in ADDRESS_FIELDS[venue.kind]}
    page = _change(staff, acct, **addresses,
                   **{name: "typed-by-whoever" for name in SECRETS[venue.kind]})
    assert page.status_code == 302
    moved = adapter_class(venue.kind)(TradingAccount.objects.get(pk=acct.pk))
    with pytest.raises(BrokerError, match="no session"):  # a worker's order, a read
        moved.positions()
    with pytest.raises(BrokerError):  # the listener: a login with what was typed
        moved.session_obtain(session)
    _connection_test(staff, acct)
    seen = receiver.seen()
    assert session.token not in seen
    for secret in real:
        assert secret not in seen


@pytest.mark.parametrize(("status", "body", "content_type"), [
    (403, f"<html><body>{INTERNAL}</body></html>".encode(), "text/html"),
    (500, INTERNAL.encode(), "text/plain"),
    (200, json.dumps({"success": False, "errorCode": 3, "errorText": "x" * 200 + INTERNAL,
                      "errorMessage": "x" * 200 + INTERNAL}).encode(), "application/json"),
])
@pytest.mark.parametrize("kind", ["projectx", "tradovate"])
def test_the_connection_test_says_what_failed_never_what_was_answered(
        staff, kind, status, body, content_type):
    answering = Receiver(status, body, content_type)
    try:
        login = {"projectx": {"username": "me", "api_key": "k-1", "api_url": answering.url,
                              "rtc_url": answering.url},
                 "tradovate": {"name": "me", "password": "pw-1", "app_id": "a",
                               "app_version": "1", "cid": "8", "sec": "s-1",
                               "environment": "demo", "api_url": answering.url,
                               "ws_url": answering.url.replace("http", "ws", 1)}}[kind]
        acct = TradingAccount.objects.create(name="ELSEWHERE", broker=kind, external_id="7",
                                             credentials=json.dumps(login))
        page = staff.post(reverse("admin:accounts_tradingaccount_changelist"),
                          {"action": "connection_test", "_selected_action": [acct.pk]},
                          follow=True)
    finally:
        answering.stop()
    messages = [(m.level_tag, str(m)) for m in page.context["messages"]]
    assert [tag for tag, _ in messages] == ["error"], messages
    text = messages[0][1]
    assert "INTERNAL" not in text
    assert "hunter2" not in text
    assert "hunter2" not in page.content.decode()
    if status != 200:
        assert f"HTTP {status}" in text


def test_logins_stored_before_the_binding_are_bound_by_the_migration(venue):
    acct = _venue_account(venue)
    unbound = {k: v for k, v in _stored(acct).items() if k != "bound_to"}
    TradingAccount.objects.filter(pk=acct.pk).update(credentials=Secret(json.dumps(unbound)))
    adapters_forget()
    with pytest.raises(PermanentBrokerError, match="not entered for the venue address"):
        adapter_class(venue.kind)(TradingAccount.objects.get(pk=acct.pk)).connection_test()
    migration = importlib.import_module("accounts.migrations.0008_credentials_bound")

    class Editor:
        pass

    editor = Editor()
    editor.connection = connection  # type: ignore[attr-defined]
    migration.logins_bind(django_apps, editor)
    assert adapter_class(venue.kind)(TradingAccount.objects.get(pk=acct.pk)).connection_test()


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_the_listener_never_logs_in_where_the_secret_was_not_entered(receiver, venue):
    leader, f1 = _venue_account(venue, "L"), _venue_account(venue, "F1")
    group("g", leader, {f1: "1"})
    stored = _stored(leader)
    real = _secrets_of(venue.kind, stored)
    with listening(leader, f1):
        # written past the model, as a restore or a script would: the addresses all moved
        moved = {**stored, **{name: _at(receiver, name) for name in ADDRESS_FIELDS[venue.kind]}}
        TradingAccount.objects.filter(pk=leader.pk).update(
            credentials=Secret(json.dumps(moved)))
        wait_until(lambda: receiver.requests or "not entered for the venue address" in
                   TradingAccount.objects.get(pk=leader.pk).last_error, timeout=10,
                   what="the listener refused the moved login")
    seen = receiver.seen()
    assert receiver.requests == [], seen[:2000]  # before: the listener logged in there
    assert "type the secrets again" in TradingAccount.objects.get(pk=leader.pk).last_error
    for secret in real:
        assert secret not in seen
