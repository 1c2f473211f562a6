"""What the second factor leaves in the database: the authenticator's key only encrypted,
the recovery codes only as salted digests (a dump or backup logs nobody in); and the checks
still django-otp's: a wrong key's code, a code used once, a recovery code used twice are
refused. The stored columns read with SQL, past the fields' decryption."""

from __future__ import annotations

import base64
import io
import threading

import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection, connections, transaction
from django_otp.oath import TOTP

from copier.models import AuthenticatorDevice, RecoveryCode, RecoveryCodeDevice
from copier.services import second_factor
from core.keys import multi_fernet
from tests.admin.logins import authenticator, code_now, recovery_codes

pytestmark = pytest.mark.django_db


def _column(sql: str, *params: object) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [row[0] for row in cursor.fetchall()]


def test_the_authenticators_key_is_stored_encrypted_only(django_user_model):
    user = django_user_model.objects.create_user("op")
    device = authenticator(user)
    key = AuthenticatorDevice.objects.get(pk=device.pk).key
    assert len(key) == 40  # 20 bytes, hex, as django-otp makes it
    assert bytes.fromhex(key)
    [stored] = _column("SELECT key FROM copier_authenticatordevice WHERE id = %s", device.pk)
    assert key not in stored
    assert key.upper() not in stored
    assert str(device.bin_key) not in stored
    # a Fernet token under COPIER_ENCRYPTION_KEY, and what it holds is the key
    assert multi_fernet(settings.COPIER_ENCRYPTION_KEY).decrypt(stored.encode()).decode() == key
    # nothing else of the table holds it either (the whole row, as text)
    [row] = _column("SELECT t::text FROM copier_authenticatordevice t WHERE id = %s", device.pk)
    assert key not in row
    assert repr(AuthenticatorDevice.objects.get(pk=device.pk).key) == "Secret('***')"


def test_a_code_of_another_key_is_refused_and_a_code_is_taken_once(django_user_model):
    user = django_user_model.objects.create_user("op")
    device = authenticator(user)
    other = TOTP(bytes.fromhex("00" * 20))
    assert other.token() != TOTP(device.bin_key).token()
    with transaction.atomic():
        assert not device.verify_token(f"{other.token():06d}")
    device.refresh_from_db()
    assert device.throttling_failure_count == 1  # a wrong code slows the device down
    device.throttling_failure_timestamp = None
    device.save()
    code = code_now(device)
    assert second_factor.second_factor_check(user=user, code=code).device == device
    device.refresh_from_db()
    assert device.last_t == TOTP(device.bin_key).t()
    assert device.throttling_failure_count == 0
    # the same code again (another login within the same 30 s): refused, a replay
    assert second_factor.second_factor_check(user=user, code=code).device is None


def test_a_code_a_step_off_is_taken_and_the_drift_followed(django_user_model):
    """The phone's clock 30 s behind: the previous step's code, within the tolerance."""
    user = django_user_model.objects.create_user("op")
    device = authenticator(user)
    behind = TOTP(device.bin_key, drift=-1)
    assert device.verify_token(f"{behind.token():06d}")
    device.refresh_from_db()
    assert device.drift == -1
    # two steps off is outside the window (tolerance 1 around the drift of -1: -2..0 ok)
    far = TOTP(device.bin_key, drift=2)
    device.last_t = -1
    device.save()
    assert not device.verify_token(f"{far.token():06d}")


def test_the_enrolment_page_shows_the_key_that_is_stored_encrypted(client, django_user_model):
    user = django_user_model.objects.create_superuser("boss", "b@example.com", "pw")
    client.force_login(user)
    html = client.get("/two-factor/").content.decode()
    device = AuthenticatorDevice.objects.get(user=user, confirmed=False)
    b32 = base64.b32encode(device.bin_key).decode()
    assert b32[:4] in html
    [stored] = _column("SELECT key FROM copier_authenticatordevice WHERE id = %s", device.pk)
    assert b32 not in stored
    assert device.key not in stored


@pytest.mark.real_costs
def test_recovery_codes_are_stored_as_salted_digests_only(django_user_model):
    user = django_user_model.objects.create_user("op")
    with transaction.atomic():
        codes = second_factor._recovery_codes_new(user)
    assert len(codes) == second_factor.RECOVERY_CODES
    stored = _column("SELECT digest FROM copier_recoverycode ORDER BY id")
    assert len(stored) == len(codes)
    rows = "\n".join(_column("SELECT t::text FROM copier_recoverycode t"))
    for code in codes:
        assert code not in rows
        assert code.upper() not in rows
    assert all(digest.startswith("scrypt$16384$8$1$") for digest in stored)
    # salted: the same code twice is two different digests
    assert RecoveryCode.digest_of("abcd2345") != RecoveryCode.digest_of("abcd2345")


def test_a_recovery_code_works_once(django_user_model):
    user = django_user_model.objects.create_user("op")
    recovery_codes(user, "abcd2345", "efgh6723")
    used = second_factor.second_factor_check(user=user, code="abcd2345")
    assert isinstance(used.device, RecoveryCodeDevice)
    assert used.recovery_left == 1
    again = second_factor.second_factor_check(user=user, code="abcd2345")
    assert again.device is None
    device = RecoveryCodeDevice.objects.get(user=user)
    assert device.throttling_failure_count == 1
    assert second_factor.second_factor_check(user=user, code="zzzz2345").wait


def test_a_digest_made_otherwise_matches_nothing():
    assert not RecoveryCode(digest="").matches("abcd2345")
    assert not RecoveryCode(digest="pbkdf2$1$2$3$4$5").matches("abcd2345")
    assert not RecoveryCode(digest="scrypt$x$8$1$AA==$AA==").matches("abcd2345")
    assert RecoveryCode(digest=RecoveryCode.digest_of("abcd2345")).matches("abcd2345")


@pytest.mark.django_db(transaction=True)
def test_one_recovery_code_in_two_logins_at_once_lets_one_in(django_user_model):
    """Both check under the device's row lock: the second finds the code gone."""
    user = django_user_model.objects.create_user("op")
    recovery_codes(user, "abcd2345")
    results: list[bool] = []
    start = threading.Barrier(2)

    def login() -> None:
        try:
            start.wait()
            checked = second_factor.second_factor_check(user=user, code="abcd2345")
            results.append(checked.device is not None)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=login) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == [False, True]
    assert not RecoveryCode.objects.exists()


@pytest.mark.real_costs
def test_a_wrong_code_costs_one_scrypt_per_code_left_at_the_configured_cost(
        django_user_model, monkeypatch):
    """What bounds a login with a wrong code: one scrypt at N = 2**14 (r 8) for each of
    the ten codes left; counted, not timed (a timed test fails on a busy machine: one such
    scrypt took 53 ms here, so ten take about half a second)."""
    import hashlib

    user = django_user_model.objects.create_user("op")
    with transaction.atomic():
        second_factor._recovery_codes_new(user)
    costs: list[tuple[int, int]] = []
    real = hashlib.scrypt

    def counted(*args: object, **kwargs: object) -> bytes:
        costs.append((int(kwargs["n"]), int(kwargs["r"])))  # type: ignore[call-overload]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(hashlib, "scrypt", counted)
    assert second_factor.second_factor_check(user=user, code="zzzzzzzz").device is None
    assert costs == [(2**14, 8)] * 10


def test_a_key_under_a_removed_key_is_not_read_as_plain(settings, django_user_model):
    """The key is a Fernet token: without its encryption key it cannot be read at all."""
    user = django_user_model.objects.create_user("op")
    device = authenticator(user)
    settings.COPIER_ENCRYPTION_KEY = Fernet.generate_key().decode()
    with pytest.raises(ImproperlyConfigured, match="cannot be decrypted"):
        AuthenticatorDevice.objects.get(pk=device.pk)


def test_copier_rotate_key_encrypts_the_authenticators_key_again(settings, django_user_model):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.COPIER_ENCRYPTION_KEY = old
    device = authenticator(django_user_model.objects.create_user("op"))
    key = AuthenticatorDevice.objects.get(pk=device.pk).key
    settings.COPIER_ENCRYPTION_KEY = f"{new},{old}"
    out = io.StringIO()
    call_command("copier_rotate_key", stdout=out)
    assert "copier.AuthenticatorDevice.key: 1 encrypted again" in out.getvalue()
    assert key not in out.getvalue()
    [stored] = _column("SELECT key FROM copier_authenticatordevice WHERE id = %s", device.pk)
    assert Fernet(new.encode()).decrypt(stored.encode()).decode() == key
    settings.COPIER_ENCRYPTION_KEY = new
    code = code_now(device)
    assert second_factor.second_factor_check(user=device.user, code=code).device == device
