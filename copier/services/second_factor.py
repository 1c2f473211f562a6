"""The operator's second factor: who must have one, enrolling, checking a code, resetting.

A user logs in with a password; one with a confirmed device (an authenticator app, TOTP)
is then asked for a code (or one of the recovery codes, each usable once) before any page
(copier.shell.middleware.SecondFactorMiddleware). Where COPIER_REQUIRE_2FA is on, a user who may
trade must enrol first: whoever can stop, resume or flatten, fill at the sim broker, change
what an account logs in with or which accounts a group trades, or give themselves any of
that (users, groups). Devices are the copier's own django-otp devices
(copier.models.AuthenticatorDevice, RecoveryCodeDevice): the TOTP check is django-otp's (the
window, a code refused once used, a device slowed down after wrong codes), the key is
encrypted at rest and the recovery codes are kept only hashed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django_otp import devices_for_user, user_has_device
from django_otp.models import Device

from copier.models import AuditEntry, AuthenticatorDevice, RecoveryCode, RecoveryCodeDevice
from copier.services.audit import audit_record

# What lets a user trade, or make themselves able to: each one makes the second factor
# compulsory where it is required. Changing a group or a follower decides which accounts
# trade and how much; changing users or groups grants any permission.
TRADING_PERMISSIONS = (
    "copier.kill_switch", "copier.flatten",
    "brokers.change_simaccount",  # sim fills, fault switches (copier.console.accounts_admin)
    "accounts.add_tradingaccount", "accounts.change_tradingaccount",
    "accounts.delete_tradingaccount",
    "copier.add_copygroup", "copier.change_copygroup",
    "copier.add_follower", "copier.change_follower",
    "auth.add_user", "auth.change_user", "auth.change_group",
)
RECOVERY_CODES = 10
TOTP_DIGITS = 6  # django-otp's default, what every app shows; recovery codes have 8
TOTP_NAME = "authenticator app"
RECOVERY_NAME = "recovery codes"
_SPACES = re.compile(r"[\s-]+")


def user_may_trade(user: Any) -> bool:
    """A superuser, or a user holding any of TRADING_PERMISSIONS (directly or by group)."""
    if not (user.is_authenticated and user.is_active):
        return False
    return bool(user.is_superuser or any(user.has_perm(p) for p in TRADING_PERMISSIONS))


def enrolment_required(user: Any) -> bool:
    """Must this user enrol before reaching any page (the setting on, and may trade)?"""
    return bool(settings.COPIER_REQUIRE_2FA) and user_may_trade(user)


def has_second_factor(user: Any) -> bool:
    """A confirmed device of any kind: the login asks for a code."""
    return bool(user_has_device(user, confirmed=True))


def second_factor_owed(user: Any) -> str | None:
    """What the session still owes before any page: "code", "enrol" or nothing.

    A session that passed a code (OTPMiddleware's is_verified) owes nothing. Otherwise a
    user with a device owes a code; one without, where it is required, an enrolment."""
    if not user.is_authenticated:
        return None
    is_verified = getattr(user, "is_verified", None)
    if is_verified is not None and is_verified():
        return None
    if has_second_factor(user):
        return "code"
    if enrolment_required(user):
        return "enrol"
    return None


def totp_device_pending(*, user: Any) -> AuthenticatorDevice:
    """The authenticator device being set up: one unconfirmed device per user, kept while
    the page is reloaded (the QR code the app scanned stays valid), made when missing."""
    found = (AuthenticatorDevice.objects.devices_for_user(user, confirmed=False)
             .order_by("pk").first())
    if found is None:
        found = AuthenticatorDevice.objects.create(user=user, name=TOTP_NAME, confirmed=False)
    return found


def _recovery_codes_new(user: Any) -> list[str]:
    """A fresh set of recovery codes in place of any older one (in the caller's
    transaction). Shown once, kept only as digests; each works once (the device deletes
    a code it accepts)."""
    RecoveryCodeDevice.objects.filter(user=user).delete()
    device = RecoveryCodeDevice.objects.create(user=user, name=RECOVERY_NAME, confirmed=True)
    codes = [RecoveryCode.random_code() for _ in range(RECOVERY_CODES)]
    RecoveryCode.objects.bulk_create(
        RecoveryCode(device=device, digest=RecoveryCode.digest_of(c)) for c in codes)
    return codes


@dataclass(frozen=True)
class Enrolled:
    device: AuthenticatorDevice
    recovery_codes: list[str]


def totp_enrol_confirm(*, user: Any, code: str) -> Enrolled | None:
    """The first code from the app proves it holds the secret: the device is confirmed
    (any other authenticator device of the user is removed) and recovery codes are made.
    None: the code was not right (or the device waits after wrong ones)."""
    with transaction.atomic():
        device = (AuthenticatorDevice.objects.devices_for_user(user, confirmed=False)
                  .select_for_update().order_by("pk").first())
        if device is None or not device.verify_token(_normalised(code)):
            return None
        AuthenticatorDevice.objects.filter(user=user).exclude(pk=device.pk).delete()
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        codes = _recovery_codes_new(user)
        audit_record(by=user, action=AuditEntry.Action.SECOND_FACTOR_ENROL,
                     object_type="auth.user", object_id=user.pk,
                     object_repr=user.get_username(),
                     detail=f"authenticator app confirmed; {len(codes)} recovery codes made")
    return Enrolled(device, codes)


def _normalised(code: str) -> str:
    return _SPACES.sub("", code or "").lower()


@dataclass(frozen=True)
class Checked:
    """The device that accepted the code (None: refused); `wait` when refused because the
    device is throttled after wrong codes; recovery codes left when one was used."""

    device: Device | None
    wait: bool = False
    recovery_left: int | None = None


def second_factor_check(*, user: Any, code: str) -> Checked:
    """A code typed at login: six digits go to the authenticator device, anything else to
    the recovery codes, which are eight characters (a wrong guess slows down only the
    device it was meant for)."""
    token = _normalised(code)
    app = token.isdigit() and len(token) == TOTP_DIGITS
    kind = AuthenticatorDevice if app else RecoveryCodeDevice
    with transaction.atomic():
        devices = [d for d in devices_for_user(user, confirmed=True, for_verify=True)
                   if isinstance(d, kind)]
        waiting = False
        for device in devices:
            allowed, _why = device.verify_is_allowed()
            if not allowed:
                waiting = True
                continue
            if device.verify_token(token):
                return _accepted(user, device)
    return Checked(None, wait=waiting)


def _accepted(user: Any, device: Device) -> Checked:
    if not isinstance(device, RecoveryCodeDevice):
        return Checked(device)
    left = device.codes.count()
    audit_record(by=user, action=AuditEntry.Action.RECOVERY_CODE_USED,
                 object_type="auth.user", object_id=user.pk, object_repr=user.get_username(),
                 detail=f"{left} recovery codes left")
    return Checked(device, recovery_left=left)


def recovery_codes_renew(*, user: Any, code: str) -> list[str] | None:
    """New recovery codes for a user who proves the authenticator with a current code."""
    with transaction.atomic():
        device = (AuthenticatorDevice.objects.devices_for_user(user, confirmed=True)
                  .select_for_update().first())
        if device is None or not device.verify_token(_normalised(code)):
            return None
        codes = _recovery_codes_new(user)
        audit_record(by=user, action=AuditEntry.Action.RECOVERY_CODES,
                     object_type="auth.user", object_id=user.pk,
                     object_repr=user.get_username(),
                     detail=f"{len(codes)} new recovery codes; the old ones no longer work")
    return codes


def recovery_codes_left(user: Any) -> int:
    return RecoveryCode.objects.filter(device__user=user, device__confirmed=True).count()


def second_factor_reset(*, user: Any, by: Any) -> int:
    """Remove every device of `user` (a lost phone): the next login asks for no code, and
    where it is required, for a new enrolment. Recorded as `by` (a superuser, or
    cli:<login>). The number of devices removed."""
    with transaction.atomic():
        removed = 0
        for model in (AuthenticatorDevice, RecoveryCodeDevice):
            _total, per_model = model.objects.filter(user=user).delete()  # tokens cascade
            removed += per_model.get(model._meta.label, 0)
        audit_record(by=by, action=AuditEntry.Action.SECOND_FACTOR_RESET,
                     object_type="auth.user", object_id=user.pk,
                     object_repr=user.get_username(),
                     detail=f"removed {removed} device(s): authenticator app and recovery "
                            "codes; the next login asks for no code until enrolled again")
    return removed
