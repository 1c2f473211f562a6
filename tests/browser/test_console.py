"""A trader's session in the console, in headless Chromium, on the live local stack.

Logging in is a test of its own. The rest is one session whose steps continue each other
(a step is meaningless without the group and positions the ones before it made): set up a
group with two followers in the admin's forms; a leader trade copied; a follower that did
not copy, and why; its quarantine lifted; the kill switch; the flatten read back in the audit
log. A failure names its step. Every page the trader sees is kept as a screenshot under
test-artifacts/browser/.

Everything the trader does is done through the pages. The test touches the database only
to make the superuser, to learn the new accounts' ids, and to check behind the pages that
the sim broker holds what the dashboard says.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Iterator

import pytest

pytest.importorskip("playwright.sync_api", reason="the Python package playwright is missing "
                    "(pip install -e '.[dev]')")

from django.contrib.auth import get_user_model
from playwright.sync_api import Page, expect

from accounts.models import TradingAccount
from tests.browser.conftest import Console
from tests.browser.helpers import (
    COPY_TIMEOUT_MS,
    autocomplete_pick,
    dashboard,
    db_call,
    follower_testid,
    mouse_away,
    reload_until,
)
from tests.factories import broker_position

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.worker,  # a Celery worker on the shared private Redis: not under -n
              # the stack's processes read and write the test database: a transactional
              # test, flushed after (the admin's users and permissions included)
              pytest.mark.django_db(transaction=True, databases="__all__")]

LEADER, F1, F2 = "DESK-LEADER", "DESK-F1", "DESK-F2"


def _message(page: Page) -> None:
    """The admin's green message after an action: the click did what it says."""
    expect(page.locator("ul.messagelist li.success")).to_have_count(1)


def _sim_fill(console: Console, account: str, side: str, qty: int, symbol: str) -> None:
    """The account's page, its "Sim fill…" button, the form: a fill at the sim broker."""
    page = console.page
    page.goto(f"{console.url}/accounts/tradingaccount/{console.known[account]}/change/")
    page.get_by_role("link", name="Sim fill…").click()
    page.get_by_label("Symbol:", exact=True).fill(symbol)
    page.get_by_label("Side:", exact=True).select_option(side)
    page.get_by_label("Qty:", exact=True).fill(str(qty))
    console.shot(f"sim-fill-{account}-{side}-{qty}-{symbol}")
    page.get_by_role("button", name="Fill at the sim broker").click()
    expect(page.locator("ul.messagelist")).to_contain_text(
        f"{side} {qty} {symbol} filled at the sim broker")


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """A failure says which step of the session it is in."""
    try:
        yield
    except BaseException as exc:
        exc.add_note(f"in the step: {name}")
        raise


def _log_in(console: Console, shots: bool = False) -> None:
    """A superuser made for the test, signed in through the login form."""
    password = secrets.token_urlsafe(16)
    db_call(lambda: get_user_model().objects.create_superuser(
        "trader", "trader@example.com", password))
    page = console.page
    page.goto(f"{console.url}/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/$"))
    page.get_by_label("Username").fill("trader")
    page.get_by_label("Password").fill(password)
    if shots:
        console.shot("login")
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{console.url}/")
    expect(page.get_by_test_id("dashboard-title")).to_have_text("Followers")


def test_log_in_through_the_form_and_land_on_the_dashboard(console: Console) -> None:
    _log_in(console, shots=True)
    expect(console.page.get_by_test_id("no-groups")).to_contain_text("No copy group yet")
    console.shot("dashboard-empty")


def test_a_session_group_copy_quarantine_lift_and_kill_switch(console: Console) -> None:
    _log_in(console)
    with step("2: sim accounts and a group with two followers from the admin's forms"):
        _group_set_up(console)
    with step("3: a leader trade copied, green on the dashboard"):
        _leader_trade_copied(console)
    with step("4: a follower on the opposite side is not copied, and its decision says why"):
        _opposite_side_quarantined(console)
    with step("5: the quarantine lifted from the quarantine list"):
        _quarantine_lifted(console)
    with step("6: the kill switch: stop entries, then flatten and stop"):
        _kill_switch(console)
    with step("7: the flatten in the audit log: who, what, what was held"):
        _flatten_in_the_audit_log(console)


def _group_set_up(console: Console) -> None:
    page = console.page
    for name in (LEADER, F1, F2):
        page.goto(f"{console.url}/accounts/tradingaccount/add/")
        page.get_by_label("Name:", exact=True).fill(name)
        page.get_by_label("Broker:", exact=True).select_option("sim")
        if name == LEADER:
            console.shot("account-add")
        page.locator("input[name=_save]").click()
        _message(page)
    console.shot("accounts")
    accounts = db_call(lambda: dict(TradingAccount.objects.values_list("name", "pk")))
    console.known.update({name: str(pk) for name, pk in accounts.items()})

    page.goto(f"{console.url}/copier/copygroup/add/")
    page.get_by_label("Name:", exact=True).fill("desk")
    autocomplete_pick(page, "id_leader", LEADER)
    autocomplete_pick(page, "id_followers-0-account", F1)
    page.locator("#id_followers-0-multiplier").fill("1")
    page.get_by_text("Add another Follower").click()
    autocomplete_pick(page, "id_followers-1-account", F2)
    page.locator("#id_followers-1-multiplier").fill("2")
    console.shot("group-add")
    page.locator("input[name=_save]").click()
    _message(page)
    console.shot("groups")

    dashboard(page, console.url)
    group = page.locator("section.group-panel", has=page.get_by_role("link", name="desk"))
    expect(group).to_have_count(1)
    gid = group.get_attribute("data-testid") or ""
    f1, f2 = follower_testid(page, F1), follower_testid(page, F2)
    console.known.update(group=gid, f1=f1, f2=f2)
    # the listener finds the new group on its next scan and connects all three streams
    for conn in (f"{gid}-leader-connection", f"{f1}-connection", f"{f2}-connection"):
        expect(page.get_by_test_id(conn)).to_have_text("Connected", timeout=COPY_TIMEOUT_MS)
    expect(page.get_by_test_id(f"{f1}-flat")).to_be_visible()
    console.shot("dashboard-connected")


def _leader_trade_copied(console: Console) -> None:
    page = console.page
    f1, f2 = console.known["f1"], console.known["f2"]
    _sim_fill(console, LEADER, "buy", 1, "MNQ")
    dashboard(page, console.url)
    # the page refreshes itself: no reload from here on
    for card, qty in ((f1, "+1"), (f2, "+2")):
        expect(page.get_by_test_id(f"{card}-held-MNQ")).to_have_text(
            qty, timeout=COPY_TIMEOUT_MS)
        expect(page.get_by_test_id(f"{card}-expected-MNQ")).to_have_text(qty)
        expect(page.get_by_test_id(f"{card}-row-MNQ")).to_have_attribute("data-status", "green")
        expect(page.get_by_test_id(card)).to_have_attribute("data-status", "green")
    expect(page.get_by_test_id(f"{f2}-latency")).to_contain_text(re.compile(r"\d+ ms"))
    console.shot("dashboard-copied")


def _opposite_side_quarantined(console: Console) -> None:
    page = console.page
    f1 = console.known["f1"]
    # a manual trade on F1, short MES, before the leader enters long MES
    _sim_fill(console, F1, "sell", 1, "MES")
    dashboard(page, console.url)
    expect(page.get_by_test_id(f"{f1}-held-MES")).to_have_text("-1", timeout=COPY_TIMEOUT_MS)
    _sim_fill(console, LEADER, "buy", 1, "MES")
    dashboard(page, console.url)
    badge = page.get_by_test_id(f"{f1}-quarantine-MES")
    expect(badge).to_be_visible(timeout=COPY_TIMEOUT_MS)
    expect(badge).to_contain_text("MES quarantined")
    expect(page.get_by_test_id(f1)).to_have_attribute("data-status", "red")
    expect(page.get_by_test_id(f"{f1}-row-MES")).to_have_attribute("data-status", "red")
    # F2 copied the same entry
    expect(page.get_by_test_id(f"{console.known['f2']}-held-MES")).to_have_text(
        "+2", timeout=COPY_TIMEOUT_MS)
    console.shot("dashboard-quarantined")

    page.get_by_test_id(f"{f1}-decisions").click()
    sentence = page.get_by_test_id("decision-sentence").filter(has_text="MES")
    expect(sentence.filter(
        has_text="on the opposite side of the leader, quarantined MES; nothing sent")
    ).to_have_count(1)
    console.shot("decisions-opposite-side")


def _quarantine_lifted(console: Console) -> None:
    page = console.page
    f1 = console.known["f1"]
    page.goto(f"{console.url}/copier/quarantine/")
    row = page.locator("#result_list tbody tr", has_text=F1)
    expect(row).to_have_count(1)
    expect(row).to_contain_text("active")
    row.locator("input.action-select").check()
    page.locator("select[name=action]").select_option("lift")
    console.shot("quarantine-list")
    page.locator("button[name=index]").click()
    expect(page.locator("ul.messagelist")).to_contain_text("1 quarantine(s) lifted.")
    expect(row).not_to_contain_text("active")
    console.shot("quarantine-lifted")

    dashboard(page, console.url)
    expect(page.get_by_test_id(f"{f1}-quarantine-MES")).to_have_count(0)
    console.shot("dashboard-quarantine-lifted")


def _kill_switch(console: Console) -> None:
    page = console.page
    gid, f1, f2 = console.known["group"], console.known["f1"], console.known["f2"]
    dashboard(page, console.url)
    page.get_by_test_id(f"{gid}-stop_entries").click()
    expect(page.locator("ul.messagelist li.success")).to_contain_text("desk")
    console.shot("entries-stopped")

    # an entry by the leader now: the followers copy exits only, so it is not copied
    _sim_fill(console, LEADER, "buy", 1, "MNQ")
    page.goto(f"{console.url}/copier/decision/?account__id__exact={console.known[F2]}")
    reload_until(page, page.get_by_test_id("decision-sentence").filter(
        has_text="copies exits only (winding down); the leader went +1 → +2, and no entry "
                 "is copied to it: nothing sent"))
    console.shot("decisions-exits-only")
    dashboard(page, console.url)
    expect(page.get_by_test_id(f"{f2}-held-MNQ")).to_have_text("+2")

    page.get_by_test_id(f"{gid}-flatten_and_stop").click()
    expect(page.locator("h1")).to_have_text("Flatten and stop entries?")
    plan = page.locator("#content table tbody")
    # F1: long 1 MNQ, short 1 MES; F2: long 2 MNQ, long 2 MES
    for account, symbol, side, qty in ((F1, "MNQ", "sell", "1"), (F1, "MES", "buy", "1"),
                                       (F2, "MNQ", "sell", "2"), (F2, "MES", "sell", "2")):
        expect(plan.locator("tr", has_text=account).filter(has_text=symbol)).to_contain_text(
            re.compile(rf"{side}\s+{qty}"))
    expect(plan.locator("tr")).to_have_count(4)
    console.shot("flatten-confirm")
    page.get_by_role("button", name="Yes, flatten and stop entries").click()
    expect(page.locator("ul.messagelist li.success")).to_contain_text(
        "Flattened and left exits only")
    console.shot("flattened")

    dashboard(page, console.url)
    for card in (f1, f2):
        for symbol in ("MNQ", "MES"):
            expect(page.get_by_test_id(f"{card}-held-{symbol}")).to_have_text(
                "0", timeout=COPY_TIMEOUT_MS)
    mouse_away(page)
    console.shot("dashboard-flat")
    # the dashboard does not show a follower's mode: the followers' list does
    page.goto(f"{console.url}/copier/follower/")
    for name in (F1, F2):
        expect(page.locator("#result_list tbody tr", has_text=name)).to_contain_text(
            "Exits only")
    console.shot("followers-exits-only")
    # behind the page: the sim broker holds nothing on either follower
    held = db_call(lambda: {
        (name, symbol): broker_position(TradingAccount.objects.get(name=name), symbol)
        for name in (F1, F2) for symbol in ("MNQ", "MES")})
    assert set(held.values()) == {0}, held


def _flatten_in_the_audit_log(console: Console) -> None:
    page = console.page
    dashboard(page, console.url)
    page.get_by_test_id("nav-audit").click()
    expect(page).to_have_url(f"{console.url}/copier/auditentry/")
    page.locator("#changelist-filter").get_by_role("link", name="flattened", exact=True).click()
    expect(page).to_have_url(re.compile(r"action__exact=flatten"))
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(1)
    row = rows.first
    expect(row.locator(".field-who")).to_have_text("trader")
    expect(row.locator(".field-action")).to_have_text("flattened")
    expect(row.locator(".field-object_repr")).to_have_text("flatten groups: desk")
    console.shot("audit-log-flattened")
    row.locator("th a, td a").first.click()
    detail = page.locator(".field-detail .readonly")
    expect(detail).to_contain_text("positions held then:")
    for name in (F1, F2):
        expect(detail).to_contain_text(name)
    expect(page.locator(".field-who .readonly")).to_have_text("trader")
    console.shot("audit-entry-flatten")


def test_the_admin_works_under_the_content_security_policy(console: Console) -> None:
    """Every page is served with a policy allowing scripts and styles of this origin only
    (copier.shell.middleware); the pages' own scripts still run, django_celery_beat's periodic
    task form included (its inline script moved to a static file), and Chromium refuses
    nothing on the way (the console fixture fails the test on any violation it logs)."""
    from django_celery_beat.models import CrontabSchedule

    crontab = db_call(lambda: CrontabSchedule.objects.create(minute="30", hour="17"))
    _log_in(console)
    page = console.page
    for address in ("/", "/admin/", "/copier/copygroup/add/", "/accounts/tradingaccount/add/",
                    "/copier/decision/", "/django_celery_beat/periodictask/"):
        response = page.goto(f"{console.url}{address}")
        assert response is not None, address
        assert response.ok, address
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy, policy
        assert "unsafe" not in policy, policy
        assert response.headers["x-frame-options"] == "DENY"
    page.goto(f"{console.url}/django_celery_beat/periodictask/add/")
    expect(page.locator(".field-crontab_translation")).to_be_hidden()  # the script ran
    page.locator("#id_crontab").select_option(str(crontab.pk))
    expect(page.locator(".field-crontab .help")).to_contain_text("Translation: At 05:30 PM")
    console.shot("periodic-task-form-under-csp")
