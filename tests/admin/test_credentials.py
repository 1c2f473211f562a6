"""Broker credentials are write-only: no admin page and no export shows them (issue 8, item 12).

Stored as Fernet tokens; a view-only staff user sees "set" or "not set", and
`dumpdata` writes the token, which `loaddata` turns back into the same secret.
"""

from __future__ import annotations

import io
import json

import pytest
from cryptography.fernet import Fernet
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.core.serializers.base import DeserializationError
from django.urls import reverse

from accounts.models import TradingAccount
from tests.factories import account

pytestmark = pytest.mark.django_db

SECRET = '{"token": "s3cr3t-value"}'


@pytest.fixture
def viewer(client, django_user_model):
    user = django_user_model.objects.create_user("viewer", "v@example.com", "pw-123456",
                                                 is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_tradingaccount"))
    client.force_login(user)
    return client


def test_a_view_only_staff_user_sees_whether_credentials_are_set_never_what_they_are(viewer):
    with_secret, without = account("T1", credentials=SECRET), account("T2")
    page = viewer.get(reverse("admin:accounts_tradingaccount_change", args=[with_secret.pk]))
    assert page.status_code == 200
    body = page.content.decode()
    assert "s3cr3t" not in body
    assert ">set<" in body
    page = viewer.get(reverse("admin:accounts_tradingaccount_change", args=[without.pk]))
    assert ">not set<" in page.content.decode()
    for url in (reverse("admin:accounts_tradingaccount_changelist"),
                reverse("admin:accounts_tradingaccount_history", args=[with_secret.pk])):
        assert "s3cr3t" not in viewer.get(url).content.decode()


def _dump(fmt: str = "json") -> str:
    out = io.StringIO()
    call_command("dumpdata", "accounts.tradingaccount", format=fmt, stdout=out)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["json", "jsonl", "xml", "yaml", "python"])
def test_dumpdata_never_writes_credentials_in_plaintext(fmt):
    account("T1", credentials=SECRET)
    if fmt == "python":  # what every serializer builds on
        from django.core import serializers

        dumped = repr(serializers.serialize("python", TradingAccount.objects.all()))
    else:
        dumped = _dump(fmt)
    assert "s3cr3t" not in dumped
    assert "token" not in dumped


def test_loaddata_gives_back_the_same_credentials_not_encrypted_twice(tmp_path):
    acct = account("T1", credentials=SECRET)
    empty = account("T2")
    dump = tmp_path / "accounts.json"
    dump.write_text(_dump())
    assert json.loads(dump.read_text())[0]["fields"]["credentials"].startswith("fernet:")
    TradingAccount.objects.all().delete()
    call_command("loaddata", str(dump), verbosity=0)
    assert TradingAccount.objects.get(pk=acct.pk).credentials == SECRET
    assert TradingAccount.objects.get(pk=empty.pk).credentials == ""


def test_a_dump_loaded_under_another_key_is_refused_not_stored_as_garbage(tmp_path, settings):
    acct = account("T1", credentials=SECRET)
    dump = tmp_path / "accounts.json"
    dump.write_text(_dump())
    TradingAccount.objects.all().delete()
    settings.COPIER_ENCRYPTION_KEY = Fernet.generate_key().decode()
    with pytest.raises(DeserializationError, match="cannot be decrypted"):
        call_command("loaddata", str(dump), verbosity=0)
    assert not TradingAccount.objects.filter(pk=acct.pk).exists()


def test_a_dump_from_before_carries_plaintext_and_is_encrypted_on_load(tmp_path):
    """Dumps written before this change hold the plaintext: loading one stores it encrypted."""
    dump = tmp_path / "old.json"
    dump.write_text(json.dumps([{"model": "accounts.tradingaccount", "pk": 7,
                                 "fields": {"name": "OLD", "broker": "sim",
                                            "credentials": SECRET,
                                            "created_at": "2026-01-02T03:04:05Z"}}]))
    call_command("loaddata", str(dump), verbosity=0)
    assert TradingAccount.objects.get(pk=7).credentials == SECRET
    assert "s3cr3t" not in _dump()
