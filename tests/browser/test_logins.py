"""The operator's login in headless Chromium: the code after the password, the compulsory
enrolment (QR code, first code, recovery codes once) and a recovery code, and the lockout
after repeated failures, each through the real forms, under the Content-Security-Policy
(the console fixture fails a test on any violation Chromium reports).

Its own web server, with COPIER_REQUIRE_2FA=1 as production has it; no worker or listener,
nothing here copies a trade. The test touches the database only to make the users (and a
device whose key it then knows, as the phone would).
"""

from __future__ import annotations

import base64
import re
import secrets
import shutil
from collections.abc import Iterator

import pytest

pytest.importorskip("playwright.sync_api", reason="the Python package playwright is missing "
                    "(pip install -e '.[dev]')")

from django.contrib.auth import get_user_model
from django_otp.oath import TOTP
from playwright.sync_api import Page, expect

from tests.browser.conftest import Console, LiveStack, _browser_missing
from tests.browser.helpers import ARTIFACTS, Shots, WebServer, db_call

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.django_db(transaction=True, databases="__all__")]


@pytest.fixture(scope="module")
def live_stack(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[LiveStack]:
    """The web alone, requiring a second factor of whoever may trade."""
    missing = _browser_missing()
    if missing:
        import os

        if os.environ.get("CI"):
            pytest.fail(f"browser tests cannot run in CI: {missing}")
        pytest.skip(missing)
    shots = ARTIFACTS / "logins"
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    web = WebServer(tmp_path_factory.mktemp("browser-logins"), env={"COPIER_REQUIRE_2FA": "1"})
    try:
        web.start()
        yield LiveStack(url=web.url, shots=Shots(shots), logs={"web": web.logfile})
    finally:
        web.stop()


def _superuser(name: str) -> str:
    password = secrets.token_urlsafe(16)
    db_call(lambda: get_user_model().objects.create_superuser(
        name, f"{name}@example.com", password))
    return password


def _code(key: bytes) -> str:
    """What the phone shows now for this key."""
    return f"{TOTP(key).token():06d}"


def _password(page: Page, url: str, name: str, password: str) -> None:
    page.goto(f"{url}/login/?next=/")
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_log_in_with_the_code_after_the_password(console: Console) -> None:
    from copier.models import AuthenticatorDevice

    password = _superuser("trader")
    key = db_call(lambda: AuthenticatorDevice.objects.create(
        user=get_user_model().objects.get(username="trader"), name="authenticator app",
        confirmed=True).bin_key)
    page = console.page
    page.goto(f"{console.url}/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/$"))
    _password(page, console.url, "trader", password)
    # the password alone opens nothing: the code page, the dashboard kept as where next
    expect(page).to_have_url(re.compile(r"/login/code/\?next=%2F$"))
    console.shot("login-code")
    page.get_by_label("Code").fill("000000" if _code(key) != "000000" else "111111")
    page.get_by_role("button", name="Verify").click()
    expect(page.locator(".errorlist")).to_contain_text("That code is not right")
    page.goto(f"{console.url}/copier/copygroup/")
    expect(page).to_have_url(re.compile(r"/login/code/\?next="))
    # a wrong code holds the device for a second (django-otp's throttle doubles after each
    # wrong one): a person retyping takes longer than that, Playwright does not
    page.wait_for_timeout(1200)
    page.get_by_label("Code").fill(_code(key))
    page.get_by_role("button", name="Verify").click()
    expect(page).to_have_url(f"{console.url}/copier/copygroup/")
    page.get_by_test_id("nav-dashboard").click()
    expect(page.get_by_test_id("dashboard-title")).to_have_text("Followers")
    console.shot("login-code-dashboard")


def test_a_trader_enrols_at_the_first_login_then_uses_a_recovery_code(console: Console
                                                                     ) -> None:
    password = _superuser("newbie")
    page = console.page
    _password(page, console.url, "newbie", password)
    expect(page).to_have_url(re.compile(r"/two-factor/\?next=%2F$"))
    expect(page.get_by_test_id("otp-required")).to_be_visible()
    qr = page.locator("svg.otp-qr")
    expect(qr).to_be_visible()  # drawn inline: nothing for the policy to refuse
    box = qr.bounding_box()
    assert box is not None
    assert box["width"] > 100, box
    console.shot("enrol")
    # nothing else opens meanwhile
    page.goto(f"{console.url}/copier/copygroup/")
    expect(page).to_have_url(re.compile(r"/two-factor/\?next="))
    secret = (page.get_by_test_id("otp-secret").text_content() or "").replace(" ", "")
    key = base64.b32decode(secret)
    page.get_by_label("Code").fill(_code(key))
    page.get_by_role("button", name="Turn on two-factor login").click()
    codes = page.get_by_test_id("otp-recovery-codes").locator("li")
    expect(codes).to_have_count(10)
    recovery = [c.strip() for c in codes.all_text_contents()]
    console.shot("recovery-codes")
    page.get_by_test_id("otp-continue").click()
    expect(page).to_have_url(f"{console.url}/copier/copygroup/")
    # the codes are not shown again
    page.goto(f"{console.url}/two-factor/")
    expect(page.get_by_test_id("otp-on")).to_be_visible()
    expect(page.get_by_test_id("otp-recovery-left")).to_have_text("10")
    assert not any(code in page.content() for code in recovery)

    page.locator("#logout-form button").click()
    _password(page, console.url, "newbie", password)
    expect(page).to_have_url(re.compile(r"/login/code/\?next=%2F$"))
    page.get_by_label("Code").fill(recovery[0].upper())
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_test_id("dashboard-title")).to_have_text("Followers")
    expect(page.locator("ul.messagelist li.warning")).to_contain_text(
        "You logged in with a recovery code; 9 left")
    console.shot("recovery-code-used")


def test_five_wrong_passwords_lock_the_login_even_for_the_right_one(console: Console) -> None:
    password = _superuser("victim")
    page = console.page
    for attempt in range(1, 6):
        _password(page, console.url, "victim", f"wrong-{attempt}")
        if attempt < 5:
            expect(page.locator(".errornote")).to_contain_text("Please enter the correct")
    locked = page.get_by_test_id("login-locked")
    expect(locked).to_have_text(re.compile(
        r"Too many failed logins for this user from this address: logging in is refused "
        r"for 30 minutes\."))
    console.shot("locked")
    _password(page, console.url, "victim", password)
    expect(locked).to_be_visible()
    page.goto(f"{console.url}/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/$"))  # never logged in
