"""Two-factor login (issue 19, "The operator's login"): the code after the password for a
user with an authenticator, recovery codes once each, the enrolment page, compulsory
enrolment for whoever may trade where COPIER_REQUIRE_2FA says so, and a superuser's reset,
recorded. Through Django's test client and the real login form; codes computed as an
authenticator app computes them (django_otp.oath.TOTP)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.test import RequestFactory
from django.urls import reverse
from django_otp.oath import TOTP

from copier.models import (
    AuditEntry,
    AuthenticatorDevice,
    Follower,
    RecoveryCode,
    RecoveryCodeDevice,
)
from copier.services import second_factor
from copier.shell.envcheck import second_factor_required
from tests.admin.logins import (
    CODE_PAGE,
    ENROL_PAGE,
    PASSWORD,
    authenticator,
    code_now,
    code_step,
    password_step,
    recovery_codes,
    recovery_codes_working,
    wrong_code,
)
from tests.console.test_headers import refused_in
from tests.factories import account, group

pytestmark = pytest.mark.django_db


@pytest.fixture
def boss(django_user_model):
    return django_user_model.objects.create_superuser("boss", "b@example.com", PASSWORD)


def _staff(django_user_model: Any, name: str, *codenames: str) -> Any:
    user = django_user_model.objects.create_user(name, f"{name}@example.com", PASSWORD,
                                                 is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return django_user_model.objects.get(pk=user.pk)


@pytest.fixture
def required(settings):
    settings.COPIER_REQUIRE_2FA = True


def _to(response: Any) -> str:
    assert response.status_code == 302, (response.status_code, response.content[:300])
    return response["Location"]


# --- the code after the password -----------------------------------------------------------


def test_a_user_with_an_authenticator_is_asked_for_the_code_after_the_password(client, boss):
    device = authenticator(boss)
    assert _to(password_step(client, "boss", next_url="/copier/copygroup/")) == \
        "/copier/copygroup/"
    # logged in by the password, but every page leads to the code first
    for page in ("/", "/copier/copygroup/", "/admin/", "/console/groups/", "/password_change/"):
        assert _to(client.get(page)).startswith(f"{CODE_PAGE}?next="), page
    page = client.get(f"{CODE_PAGE}?next=/copier/copygroup/")
    assert page.status_code == 200
    assert 'name="code"' in page.content.decode()
    assert refused_in(page.content.decode()) == []
    assert "/copier/follower/" not in page.content.decode()  # no tables in a sidebar
    assert _to(code_step(client, code_now(device), next_url="/copier/copygroup/")) == \
        "/copier/copygroup/"
    assert client.get("/copier/copygroup/").status_code == 200
    assert client.get("/").status_code == 200


def test_a_wrong_code_is_refused_and_nothing_opens(client, boss):
    device = authenticator(boss)
    password_step(client, "boss")
    refused = code_step(client, wrong_code(device))
    assert refused.status_code == 200
    assert "That code is not right" in refused.content.decode()
    assert _to(client.get("/")).startswith(CODE_PAGE)
    assert code_step(client, "").status_code == 200  # an empty code is no code
    assert _to(client.get("/copier/copygroup/")).startswith(CODE_PAGE)


def test_a_code_of_the_app_is_taken_once(client, boss, django_user_model):
    """The same six digits a second time (another session, within the same 30 s) are
    refused: a code seen over a shoulder is spent."""
    device = authenticator(boss)
    code = code_now(device)
    password_step(client, "boss")
    assert _to(code_step(client, code)) == "/"
    other = type(client)()
    password_step(other, "boss")
    assert code_step(other, code).status_code == 200
    assert _to(other.get("/")).startswith(CODE_PAGE)


def test_a_recovery_code_logs_in_once_and_is_recorded(client, boss):
    authenticator(boss)
    recovery_codes(boss, "abcd2345", "efgh6723")
    password_step(client, "boss")
    assert _to(code_step(client, "ABCD 2345")) == "/"  # as read off paper: spaces, capitals
    assert client.get("/").status_code == 200
    assert RecoveryCode.objects.count() == 1
    assert recovery_codes_working(boss, "abcd2345", "efgh6723") == ["efgh6723"]
    entry = AuditEntry.objects.get(action=AuditEntry.Action.RECOVERY_CODE_USED)
    assert (entry.who, entry.user_id, entry.detail) == ("boss", boss.pk,
                                                        "1 recovery codes left")
    client.post("/logout/")
    password_step(client, "boss")
    assert code_step(client, "abcd2345").status_code == 200  # spent
    assert _to(client.get("/")).startswith(CODE_PAGE)
    # a wrong code makes the codes wait (1 s, then 2, 4, ...), the right one included
    waiting = code_step(client, "efgh6723")
    assert "Too many wrong codes: wait" in waiting.content.decode()
    _time_passes(RecoveryCodeDevice.objects.get(user=boss), seconds=2)
    assert _to(code_step(client, "efgh6723")) == "/"


def _time_passes(device: Any, seconds: float) -> None:
    """django-otp's throttle counts from the last failure's time: move it back."""
    device.refresh_from_db()
    device.throttling_failure_timestamp -= dt.timedelta(seconds=seconds)
    device.save()


def test_the_code_page_goes_on_only_to_a_page_of_this_site(client, boss):
    device = authenticator(boss)
    password_step(client, "boss")
    assert _to(code_step(client, code_now(device), next_url="//evil.example/")) == "/"


def test_a_session_owing_a_code_is_refused_by_the_admin_site_itself(boss):
    """The net under the middleware: the site's own permission check."""
    authenticator(boss)
    request = RequestFactory().get("/")
    boss.is_verified = lambda: False
    request.user = boss
    assert not admin.site.has_permission(request)
    boss.is_verified = lambda: True
    assert admin.site.has_permission(request)


# --- enrolment --------------------------------------------------------------------------


def _enrol(client: Any, user: Any, next_url: str = "/") -> list[str]:
    """Through the page, as a person does: the QR code, the key, the first code."""
    page = client.get(f"{ENROL_PAGE}?next={next_url}")
    assert page.status_code == 200
    html = page.content.decode()
    assert '<svg width="' in html
    assert 'class="otp-qr"' in html
    assert refused_in(html) == []
    secret = re.search(r'data-testid="otp-secret">([A-Z2-7 ]+)<', html)
    assert secret is not None
    device = AuthenticatorDevice.objects.get(user=user, confirmed=False)
    assert secret.group(1).replace(" ", "") == _b32(device)
    done = client.post(ENROL_PAGE, {"code": code_now(device), "next": next_url})
    assert done.status_code == 200
    shown = done.content.decode()
    assert refused_in(shown) == []
    codes = re.findall(r"<li>([a-z2-7]{8})</li>", shown)
    assert len(codes) == second_factor.RECOVERY_CODES
    assert RecoveryCode.objects.filter(device__user=user).count() == len(codes)
    assert recovery_codes_working(user, *codes) == codes
    return codes


def _b32(device: AuthenticatorDevice) -> str:
    import base64

    return base64.b32encode(device.bin_key).decode()


def test_enrolment_confirms_the_app_and_shows_recovery_codes_once(client, boss):
    client.force_login(boss)
    assert f'href="{ENROL_PAGE}" data-testid="nav-two-factor"' in client.get("/").content.decode()
    codes = _enrol(client, boss)
    device = AuthenticatorDevice.objects.get(user=boss)
    assert device.confirmed
    assert RecoveryCodeDevice.objects.filter(user=boss, confirmed=True).count() == 1
    assert client.get("/").status_code == 200  # this session passed the code
    entry = AuditEntry.objects.get(action=AuditEntry.Action.SECOND_FACTOR_ENROL)
    assert (entry.who, entry.object_repr) == ("boss", "boss")
    # the page now says it is on, and never shows the codes again
    again = client.get(ENROL_PAGE).content.decode()
    assert 'data-testid="otp-on"' in again
    assert 'data-testid="otp-recovery-left">10<' in again
    assert not any(code in again for code in codes)
    # the next login asks for a code
    client.post("/logout/")
    password_step(client, "boss")
    assert _to(client.get("/")).startswith(CODE_PAGE)
    assert _to(code_step(client, codes[0])) == "/"


def test_a_wrong_first_code_enrols_nothing(client, boss):
    client.force_login(boss)
    client.get(ENROL_PAGE)
    device = AuthenticatorDevice.objects.get(user=boss, confirmed=False)
    page = client.post(ENROL_PAGE, {"code": wrong_code(device)})
    assert page.status_code == 200
    assert "That code is not right" in page.content.decode()
    assert not AuthenticatorDevice.objects.filter(confirmed=True).exists()
    assert not RecoveryCodeDevice.objects.exists()
    # reloading keeps the same key: the app that scanned it still works
    client.get(ENROL_PAGE)
    assert AuthenticatorDevice.objects.get(user=boss, confirmed=False).key == device.key


def test_new_recovery_codes_need_a_current_code_and_replace_the_old(client, boss):
    client.force_login(boss)
    old = _enrol(client, boss)
    device = AuthenticatorDevice.objects.get(user=boss)
    device.last_t -= 2  # as if the enrolment's code were a minute old (the same 30 s here)
    device.save()
    assert client.post(ENROL_PAGE, {"code": wrong_code(device)}).status_code == 200
    assert recovery_codes_working(boss, *old) == old
    _time_passes(device, seconds=2)  # the wrong code's wait
    shown = client.post(ENROL_PAGE, {"code": code_now(device)}).content.decode()
    new = re.findall(r"<li>([a-z2-7]{8})</li>", shown)
    assert len(new) == 10
    assert not set(new) & set(old)
    assert RecoveryCode.objects.count() == 10
    assert recovery_codes_working(boss, *new) == new
    assert recovery_codes_working(boss, *old) == []
    assert AuditEntry.objects.filter(action=AuditEntry.Action.RECOVERY_CODES).count() == 1


# --- compulsory for whoever may trade ---------------------------------------------------------


def test_the_default_is_required_in_production_only():
    assert second_factor_required({"COPIER_ENV": "production"})
    assert not second_factor_required({"COPIER_ENV": "production", "COPIER_REQUIRE_2FA": "0"})
    assert not second_factor_required({})
    assert not second_factor_required({"COPIER_ENV": "local"})
    assert second_factor_required({"COPIER_REQUIRE_2FA": "1"})


def test_the_test_settings_do_not_require_it(settings):
    assert settings.COPIER_REQUIRE_2FA is False


TRADERS = [("kill_switch",), ("flatten",), ("change_simaccount",),
           ("view_tradingaccount", "change_tradingaccount"), ("change_follower",),
           ("change_user",)]


@pytest.mark.usefixtures("required")
@pytest.mark.parametrize("codenames", TRADERS, ids=["-".join(c) for c in TRADERS])
def test_a_user_who_may_trade_must_enrol_before_anything_else(client, django_user_model,
                                                              codenames):
    user = _staff(django_user_model, "trader", "view_copygroup", "view_follower", *codenames)
    leader, f1 = account("L"), account("F1")
    group("g", leader, {f1: "1"})
    follower = Follower.objects.get(account=f1)
    assert _to(password_step(client, "trader")) == "/"
    for page in ("/", "/admin/", "/copier/copygroup/", "/console/groups/",
                 f"/copier/follower/{follower.pk}/change/"):
        assert _to(client.get(page)) == f"{ENROL_PAGE}?next={page.replace('/', '%2F')}", page
    # a write is not reached either
    switched = client.post(reverse("follower_enabled", args=[follower.pk]), {"enabled": "off"})
    assert _to(switched).startswith(ENROL_PAGE)
    assert Follower.objects.get(pk=follower.pk).enabled
    page = client.get(ENROL_PAGE).content.decode()
    assert 'data-testid="otp-required"' in page
    assert 'data-testid="nav-dashboard"' not in page  # no way on but the enrolment
    _enrol(client, user)
    assert client.get("/copier/copygroup/").status_code == 200


@pytest.mark.usefixtures("required")
def test_a_superuser_must_enrol(client, boss):
    password_step(client, "boss")
    assert _to(client.get("/")).startswith(ENROL_PAGE)


@pytest.mark.usefixtures("required")
def test_a_view_only_user_is_not_made_to_enrol(client, django_user_model):
    views = [p.codename for p in Permission.objects.filter(codename__startswith="view_")]
    _staff(django_user_model, "reader", *views)
    assert _to(password_step(client, "reader")) == "/"
    assert client.get("/").status_code == 200
    assert client.get("/copier/copygroup/").status_code == 200
    assert not second_factor.user_may_trade(django_user_model.objects.get(username="reader"))


@pytest.mark.usefixtures("required")
def test_a_trader_with_a_device_is_asked_the_code_not_to_enrol(client, django_user_model):
    user = _staff(django_user_model, "trader", "kill_switch", "view_copygroup")
    device = authenticator(user)
    password_step(client, "trader")
    assert _to(client.get("/")).startswith(CODE_PAGE)
    assert _to(client.get(ENROL_PAGE)).startswith(CODE_PAGE)
    assert _to(code_step(client, code_now(device))) == "/"
    assert client.get("/").status_code == 200


def test_not_required_a_trader_without_a_device_logs_in_with_the_password(client, boss):
    assert _to(password_step(client, "boss")) == "/"
    assert client.get("/").status_code == 200


# --- reset -----------------------------------------------------------------------------------


def test_a_superuser_resets_a_users_second_factor_from_the_users_list(client, boss,
                                                                      django_user_model):
    alice = _staff(django_user_model, "alice", "kill_switch")
    authenticator(alice)
    recovery_codes(alice, "abcd2345")
    operator = _staff(django_user_model, "operator",
                      *Permission.objects.values_list("codename", flat=True))
    changelist = reverse("admin:auth_user_changelist")
    client.force_login(operator)  # every permission, not a superuser: not offered
    assert "reset_second_factor" not in client.get(changelist).content.decode()
    client.post(changelist, {"action": "reset_second_factor", "_selected_action": [alice.pk]})
    assert AuthenticatorDevice.objects.filter(user=alice).exists()
    client.force_login(boss)
    listed = client.get(changelist).content.decode()
    assert "reset_second_factor" in listed
    done = client.post(changelist, {"action": "reset_second_factor",
                                    "_selected_action": [alice.pk]}, follow=True)
    assert "Two-factor login reset for alice: 2 device(s) removed" in done.content.decode()
    assert not AuthenticatorDevice.objects.filter(user=alice).exists()
    assert not RecoveryCode.objects.exists()
    entry = AuditEntry.objects.get(action=AuditEntry.Action.SECOND_FACTOR_RESET)
    assert (entry.who, entry.user_id, entry.object_repr, entry.object_id) == (
        "boss", boss.pk, "alice", str(alice.pk))
    # alice logs in with her password alone (not required here)
    other = type(client)()
    password_step(other, "alice")
    assert other.get("/admin/").status_code == 200


def test_the_reset_command_removes_the_devices_and_is_recorded(boss, capsys):
    authenticator(boss)
    recovery_codes(boss, "abcd2345")
    call_command("copier_reset_2fa", "boss")
    assert "boss: 2 device(s) removed" in capsys.readouterr().out
    assert not AuthenticatorDevice.objects.exists()
    entry = AuditEntry.objects.get(action=AuditEntry.Action.SECOND_FACTOR_RESET)
    assert entry.who.startswith("cli")
    assert entry.user_id is None


def test_the_reset_command_names_an_unknown_user(db):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no such user: nobody"):
        call_command("copier_reset_2fa", "nobody")


def test_the_totp_key_is_the_apps(boss):
    """What the QR code carries is what the device checks against (the URL's secret)."""
    device = second_factor.totp_device_pending(user=boss)
    assert f"secret={_b32(device)}" in device.config_url
    assert "issuer=Trade%20copier" in device.config_url
    totp = TOTP(device.bin_key)
    assert device.verify_token(f"{totp.token():06d}")


def test_a_recovery_code_of_digits_only_is_still_a_recovery_code(client, boss):
    """Base32 has digits: a recovery code can be eight of them, never six."""
    authenticator(boss)
    recovery_codes(boss, "23456723")
    password_step(client, "boss")
    assert _to(code_step(client, "23456723")) == "/"
