"""Login throttling (issue 19, "The operator's login"): after five failed logins of one user
from one address (wrong passwords or wrong codes) that pair is locked out, even with the
right password; other addresses and other users are not. The address is the peer's unless
COPIER_TRUSTED_PROXIES says how many proxies' X-Forwarded-For entries to believe. Unlocking
(`copier_unlock`, the admin's action) is recorded; no password reaches a log or a table."""

from __future__ import annotations

import logging

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from copier.models import AuditEntry
from copier.shell.clientip import forwarded_client
from tests.admin.logins import (
    PASSWORD,
    authenticator,
    code_now,
    code_step,
    password_step,
    wrong_code,
)
from tests.console.test_headers import assert_security_headers, refused_in

pytestmark = pytest.mark.django_db

LIMIT = 5
WRONG = "Wrong-pw-Zx93!"


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", "a@example.com", PASSWORD,
                                                 is_staff=True)


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", "b@example.com", PASSWORD,
                                                 is_staff=True)


def _logged_in(client) -> bool:
    return client.get("/admin/").status_code == 200


def _fail(client, username: str, times: int, **extra) -> list[int]:
    return [password_step(client, username, WRONG, **extra).status_code for _ in range(times)]


def _locked_page(response) -> None:
    assert response.status_code == 429
    html = response.content.decode()
    assert 'data-testid="login-locked"' in html
    assert "Too many failed logins for this user from this address" in html
    assert "refused for 30 minutes" in html
    assert refused_in(html) == []
    assert_security_headers(response)


def test_the_settings_lock_per_user_and_address_after_five(settings):
    assert settings.AXES_FAILURE_LIMIT == LIMIT
    assert settings.AXES_LOCKOUT_PARAMETERS == [["username", "ip_address"]]
    assert settings.COPIER_TRUSTED_PROXIES == 0


def test_five_wrong_passwords_lock_that_user_at_that_address(client, alice, bob):
    assert _fail(client, "alice", LIMIT - 1) == [200] * (LIMIT - 1)  # the form, with its error
    _locked_page(password_step(client, "alice", WRONG))
    # now even the right password is refused, and nothing is logged in
    _locked_page(password_step(client, "alice"))
    assert not _logged_in(client)
    # the same user from another address, another user from this one: not locked
    elsewhere = type(client)(REMOTE_ADDR="198.51.100.7")
    assert password_step(elsewhere, "alice").status_code == 302
    assert _logged_in(elsewhere)
    other = type(client)()
    assert password_step(other, "bob").status_code == 302
    assert _logged_in(other)
    attempt = AccessAttempt.objects.get(username="alice", ip_address="127.0.0.1")
    assert attempt.failures_since_start >= LIMIT


def test_four_failures_then_the_right_password_logs_in(client, alice):
    _fail(client, "alice", LIMIT - 1)
    assert password_step(client, "alice").status_code == 302
    assert _logged_in(client)


def test_wrong_codes_count_as_failed_logins_and_end_the_session(client, alice):
    device = authenticator(alice)
    assert password_step(client, "alice").status_code == 302
    for _ in range(LIMIT - 1):
        refused = code_step(client, wrong_code(device))
        assert refused.status_code == 200
    _locked_page(code_step(client, wrong_code(device)))
    assert client.get("/").status_code == 302
    assert client.get("/")["Location"].startswith("/login/")  # logged out, not to the code
    # and the password is refused from here now, the right code would not be asked
    _locked_page(password_step(client, "alice"))
    # a code page reached in another session of the same address is refused too
    other = type(client)()
    other.force_login(alice)
    _locked_page(code_step(other, code_now(device)))


def test_a_forged_x_forwarded_for_does_not_dodge_the_lockout(client, alice):
    """No proxy is trusted by default: each guess naming a fresh address in the header
    still counts against the peer's address."""
    codes = [password_step(client, "alice", WRONG, HTTP_X_FORWARDED_FOR=f"203.0.113.{n}")
             .status_code for n in range(LIMIT)]
    assert codes == [200] * (LIMIT - 1) + [429]
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"127.0.0.1"}
    _locked_page(password_step(client, "alice", HTTP_X_FORWARDED_FOR="203.0.113.99"))


def test_behind_a_trusted_proxy_the_forwarded_address_is_the_clients(client, alice,
                                                                     settings):
    settings.COPIER_TRUSTED_PROXIES = 1
    # the proxy appends the address it was reached from; what the client wrote before it
    # (here a forged 192.0.2.1, different each time) is not believed
    for n in range(LIMIT - 1):
        password_step(client, "alice", WRONG,
                      HTTP_X_FORWARDED_FOR=f"192.0.2.{n}, 203.0.113.9")
    _locked_page(password_step(client, "alice", WRONG, HTTP_X_FORWARDED_FOR="203.0.113.9"))
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"203.0.113.9"}
    # another client behind the same proxy logs in
    assert password_step(client, "alice", HTTP_X_FORWARDED_FOR="203.0.113.10"
                         ).status_code == 302


@pytest.mark.parametrize(("remote", "forwarded", "proxies", "client_address"), [
    ("10.0.0.2", "203.0.113.9", 0, "10.0.0.2"),               # not trusted: the header is ignored
    ("10.0.0.2", "203.0.113.9", 1, "203.0.113.9"),
    ("10.0.0.2", "6.6.6.6, 203.0.113.9", 1, "203.0.113.9"),    # the client's own entry is not
    ("10.0.0.3", "203.0.113.9, 10.0.0.2", 2, "203.0.113.9"),   # two proxies
    ("10.0.0.2", "", 1, "10.0.0.2"),                           # reached the web directly
    ("10.0.0.2", "203.0.113.9", 2, "10.0.0.2"),                # fewer hops than proxies
    ("10.0.0.2", "not-an-address", 1, "10.0.0.2"),
    ("10.0.0.2", " 2001:db8::1 ", 1, "2001:db8::1"),
])
def test_the_client_address_with_and_without_trusted_proxies(remote, forwarded, proxies,
                                                             client_address):
    assert forwarded_client(remote, forwarded, proxies) == client_address


def test_a_bad_trusted_proxies_setting_refuses_to_start():
    import os
    import subprocess
    import sys

    for value in ("one", "-1"):
        done = subprocess.run([sys.executable, "-c", "import copier.shell.settings"],
                              env={**os.environ, "COPIER_TRUSTED_PROXIES": value},
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode != 0
        assert "COPIER_TRUSTED_PROXIES" in done.stderr


# --- unlocking --------------------------------------------------------------------------------


def test_copier_unlock_lets_the_user_in_again_and_is_recorded(client, alice, capsys):
    _fail(client, "alice", LIMIT)
    call_command("copier_unlock", "--list")
    assert "alice from 127.0.0.1: LOCKED" in capsys.readouterr().out
    call_command("copier_unlock", "alice")
    assert "alice: unlocked (1 failed-login record(s) cleared)." in capsys.readouterr().out
    assert password_step(client, "alice").status_code == 302
    assert _logged_in(client)
    entry = AuditEntry.objects.get(action=AuditEntry.Action.LOGIN_UNLOCK)
    assert entry.who.startswith("cli")
    assert entry.object_repr == "user alice"
    call_command("copier_unlock", "--list")
    assert "No failed logins are counted now." in capsys.readouterr().out


def test_copier_unlock_by_address(client, alice, bob, capsys):
    _fail(client, "alice", LIMIT)
    _fail(client, "bob", LIMIT)
    call_command("copier_unlock", "--ip", "127.0.0.1", "--by", "ops")
    assert "127.0.0.1: unlocked (2 failed-login record(s) cleared)." in capsys.readouterr().out
    assert password_step(client, "bob").status_code == 302
    entry = AuditEntry.objects.get(action=AuditEntry.Action.LOGIN_UNLOCK)
    assert (entry.who, entry.object_repr) == ("ops", "address 127.0.0.1")


def test_copier_unlock_needs_someone_to_unlock(db):
    with pytest.raises(CommandError, match="say whom to unlock"):
        call_command("copier_unlock")


def test_the_admins_unlock_action_is_recorded(client, alice, django_user_model):
    _fail(client, "alice", LIMIT)
    ops = django_user_model.objects.create_user("ops", "o@example.com", PASSWORD,
                                                is_staff=True)
    ops.user_permissions.set(Permission.objects.filter(
        codename__in=["view_accessattempt", "delete_accessattempt"]))
    admin_client = type(client)(REMOTE_ADDR="198.51.100.8")
    admin_client.force_login(ops)
    changelist = reverse("admin:axes_accessattempt_changelist")
    listed = admin_client.get(changelist)
    assert listed.status_code == 200
    assert "alice" in listed.content.decode()
    attempt = AccessAttempt.objects.get(username="alice")
    admin_client.post(changelist, {"action": "unlock", "_selected_action": [attempt.pk]})
    assert not AccessAttempt.objects.exists()
    entry = AuditEntry.objects.get(action=AuditEntry.Action.LOGIN_UNLOCK)
    assert (entry.who, entry.object_repr) == ("ops", "user alice from address 127.0.0.1")
    assert password_step(client, "alice").status_code == 302


# --- no password kept ---------------------------------------------------------------------------


def test_failed_and_locked_logins_log_no_password(client, alice, caplog):
    """Not the password of a failed login, not one typed into the user-name field (as
    happens), not a code: in no log line and in none of axes' rows."""
    device = authenticator(alice)
    caplog.set_level(logging.DEBUG)
    typed_as_name = "Secret-typed-as-name-7Qw"
    password_step(client, typed_as_name, WRONG)
    _fail(client, "alice", LIMIT + 1)
    password_step(client, "alice")  # the right one, while locked
    other = type(client)(REMOTE_ADDR="198.51.100.9")
    password_step(other, "alice")
    bad_code = wrong_code(device)
    code_step(other, bad_code)
    logged = "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records)
    assert "AXES" in logged  # the failures were logged...
    kept = "\n".join(f"{a.get_data} {a.post_data}" for a in AccessAttempt.objects.all())
    for secret in (WRONG, PASSWORD, typed_as_name, bad_code):
        assert secret not in logged, secret  # ...without the secrets
        assert secret not in kept, secret
    assert "password=********************" in kept  # axes kept the form, masked
