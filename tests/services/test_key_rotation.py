"""Key rotation (issue 19, "Key rotation"): COPIER_ENCRYPTION_KEY lists several keys, the
first encrypts and every one decrypts; `manage.py copier_rotate_key` encrypts every stored
secret again with the first, in one transaction, and a second run changes nothing."""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Iterator

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from accounts.models import TradingAccount
from brokers.base import Session
from brokers.models import BrokerSession
from brokers.registry import adapter_for
from brokers.sessions import session_load, session_save
from copier.models import AlertConfig
from core import clock
from devkit.localvenue import LocalVenue, venue_start
from tests.factories import account, copier_position, group
from tests.helpers import wait_until
from tests.listener.helpers import listening

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()
CREDENTIALS = json.dumps({"username": "u", "api_key": "k3y-s3cr3t"})
HOOK = "https://hooks.slack.com/services/T0/B0/h00k-s3cr3t"


_STORED = {  # the tokens as stored, past the field's decryption
    "credentials": "SELECT credentials FROM accounts_tradingaccount "
                   "WHERE credentials <> '' ORDER BY id",
    "token": "SELECT token FROM brokers_brokersession ORDER BY id",
    "webhook": "SELECT webhook_url FROM copier_alertconfig WHERE webhook_url <> '' ORDER BY id",
}


def _raw(kind: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(_STORED[kind])
        return [row[0] for row in cursor.fetchall()]


def _digests_consistent() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT bool_and(credentials_md5 = md5(credentials)) "
                       "FROM accounts_tradingaccount")
        return bool(cursor.fetchone()[0])


def _rotate() -> str:
    out = io.StringIO()
    call_command("copier_rotate_key", stdout=out)
    return out.getvalue()


@pytest.fixture
def secrets_under_old(settings) -> TradingAccount:
    """One secret of each kind, stored under the old key alone (an authenticator's key,
    which needs a user, in tests/admin/test_second_factor_storage.py)."""
    settings.COPIER_ENCRYPTION_KEY = OLD
    acct = account("P1", credentials=CREDENTIALS)
    g = group("g", acct, {account("F1"): "1"})
    AlertConfig.objects.create(group=g, webhook_url=HOOK)
    session_save(acct.pk, Session(token="s3ssion-t0ken", expires_at=clock.now()
                                  + dt.timedelta(days=1), data={}))
    return acct


def test_rotating_moves_every_secret_to_the_first_key(settings, secrets_under_old):
    before = {kind: _raw(kind) for kind in _STORED}
    settings.COPIER_ENCRYPTION_KEY = f"{NEW}, {OLD}"
    assert TradingAccount.objects.get(name="P1").credentials == CREDENTIALS  # both decrypt

    report = _rotate()
    assert report.splitlines() == [
        "accounts.TradingAccount.credentials: 1 encrypted again, 0 already under the first key",
        "brokers.BrokerSession.token: 1 encrypted again, 0 already under the first key",
        "copier.AlertConfig.webhook_url: 1 encrypted again, 0 already under the first key",
        "copier.AuthenticatorDevice.key: 0 encrypted again, 0 already under the first key",
        "3 secrets encrypted again with the first key, 0 already under it.",
        "Every stored secret is now under the first key: remove the other keys from "
        "COPIER_ENCRYPTION_KEY, then restart every process."]
    for secret in ("k3y-s3cr3t", "s3ssion-t0ken", "h00k-s3cr3t", NEW, OLD):
        assert secret not in report
    after = {kind: _raw(kind) for kind in _STORED}
    for kind in before:
        assert after[kind] != before[kind]
        for token in after[kind]:
            Fernet(NEW.encode()).decrypt(token.encode())  # under the new key
    assert _digests_consistent()

    settings.COPIER_ENCRYPTION_KEY = OLD
    with pytest.raises(ImproperlyConfigured, match="cannot be decrypted"):
        TradingAccount.objects.get(name="P1")
    settings.COPIER_ENCRYPTION_KEY = NEW
    assert TradingAccount.objects.get(name="P1").credentials == CREDENTIALS
    assert session_load(secrets_under_old.pk, fresh=True).token == "s3ssion-t0ken"
    assert AlertConfig.objects.get().webhook_url == HOOK

    # a second run (the old key still listed or not) changes nothing
    for keys in (f"{NEW},{OLD}", NEW):
        settings.COPIER_ENCRYPTION_KEY = keys
        assert "0 secrets encrypted again with the first key, 3 already under it." in _rotate()
    assert _raw("credentials") == after["credentials"]
    assert _raw("token") == after["token"]


def test_a_secret_no_key_decrypts_stops_the_rotation_with_nothing_changed(
        settings, secrets_under_old):
    other = Fernet.generate_key().decode()
    settings.COPIER_ENCRYPTION_KEY = other
    account("LOST", credentials=json.dumps({"api_key": "l0st"}))  # under a key given nowhere
    settings.COPIER_ENCRYPTION_KEY = f"{NEW},{OLD}"
    stored = _raw("credentials")
    sessions = _raw("token")
    lost = TradingAccount.objects.only("pk").get(name="LOST").pk
    with pytest.raises(CommandError) as err:
        _rotate()
    assert str(err.value).startswith(
        f"accounts.TradingAccount.credentials of row {lost} cannot be decrypted with any key "
        "of COPIER_ENCRYPTION_KEY: nothing was changed.")
    assert "l0st" not in str(err.value)
    assert _raw("credentials") == stored
    assert _raw("token") == sessions


def test_the_adapter_cache_follows_a_rotation(settings, secrets_under_old):
    """The copy reads accounts without their credentials and compares the stored token's
    digest: after a rotation the digest is new, so the adapter is built again with the
    credentials read under the new key, and reused from then on."""
    acct = secrets_under_old
    first = adapter_for(TradingAccount.objects.defer("credentials").get(pk=acct.pk))
    settings.COPIER_ENCRYPTION_KEY = f"{NEW},{OLD}"
    _rotate()
    settings.COPIER_ENCRYPTION_KEY = NEW
    fresh = adapter_for(TradingAccount.objects.defer("credentials").get(pk=acct.pk))
    assert fresh is not first
    assert fresh.account.credentials == CREDENTIALS
    assert adapter_for(TradingAccount.objects.defer("credentials").get(pk=acct.pk)) is fresh


@pytest.fixture
def projectx() -> Iterator[LocalVenue]:
    venue = venue_start("projectx")
    try:
        yield venue
    finally:
        venue.stop()


@pytest.mark.usefixtures("eager_tasks")
def test_the_listener_copies_on_after_a_rotation_without_logging_in_again(
        settings, projectx):
    settings.COPIER_ENCRYPTION_KEY = OLD
    leader, f1 = projectx.trading_account("L"), projectx.trading_account("F1")
    leader.save()
    f1.save()
    group("g", leader, {f1: "1"})
    with listening(leader, f1):
        projectx.trade(leader.external_id, "ESZ6", "buy", 2)
        wait_until(lambda: copier_position(f1, "ESZ6") == 2, timeout=20,
                   what="the entry copied under the old key")
    logins = projectx.calls["/api/Auth/loginKey"]

    settings.COPIER_ENCRYPTION_KEY = f"{NEW},{OLD}"
    assert "4 secrets encrypted again" in _rotate()  # two credentials, two sessions
    settings.COPIER_ENCRYPTION_KEY = NEW
    assert BrokerSession.objects.count() == 2
    with listening(leader, f1):
        projectx.trade(leader.external_id, "ESZ6", "sell", 2)
        wait_until(lambda: copier_position(f1, "ESZ6") == 0, timeout=20,
                   what="the exit copied under the new key")
    assert projectx.positions(f1.external_id) == {}
    assert projectx.calls["/api/Auth/loginKey"] == logins  # the stored sessions were read
