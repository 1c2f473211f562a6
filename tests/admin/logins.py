"""What the login tests share: a user's authenticator, the code it shows now, a login
through the real form (the password step, then the code step)."""

from __future__ import annotations

from typing import Any

from django.test import Client
from django_otp.oath import TOTP

from copier.models import AuthenticatorDevice, RecoveryCode, RecoveryCodeDevice

PASSWORD = "pw-Kq81-long"
CODE_PAGE = "/login/code/"
ENROL_PAGE = "/two-factor/"


def authenticator(user: Any) -> AuthenticatorDevice:
    """A confirmed authenticator app, as an enrolment leaves it."""
    return AuthenticatorDevice.objects.create(user=user, name="authenticator app", confirmed=True)


def recovery_codes(user: Any, *codes: str) -> RecoveryCodeDevice:
    """Recovery codes as an enrolment keeps them: their digests."""
    device = RecoveryCodeDevice.objects.create(user=user, name="recovery codes", confirmed=True)
    for code in codes:
        RecoveryCode.objects.create(device=device, digest=RecoveryCode.digest_of(code))
    return device


def recovery_codes_working(user: Any, *codes: str) -> list[str]:
    """Which of `codes` the user's stored digests would take (checked, not consumed)."""
    stored = list(RecoveryCode.objects.filter(device__user=user))
    return [code for code in codes if any(row.matches(code) for row in stored)]


def code_now(device: AuthenticatorDevice) -> str:
    """The six digits the app shows now (the device's own parameters, read fresh)."""
    device.refresh_from_db()
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    return f"{totp.token():0{device.digits}d}"


def wrong_code(device: AuthenticatorDevice) -> str:
    """Six digits that are not the code of now, nor of the step before or after."""
    device.refresh_from_db()
    near = set()
    for drift in (-1, 0, 1):
        totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift + drift)
        near.add(totp.token())
    return f"{next(n for n in range(10**6) if n not in near):06d}"


def password_step(client: Client, username: str, password: str = PASSWORD,
                  next_url: str = "/", **extra: Any) -> Any:
    return client.post("/login/", {"username": username, "password": password,
                                   "next": next_url}, **extra)


def code_step(client: Client, code: str, next_url: str = "/", **extra: Any) -> Any:
    return client.post(CODE_PAGE, {"code": code, "next": next_url}, **extra)
