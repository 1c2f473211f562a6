"""The admin around the dashboard: /admin/ answers, a name, a "System" section, sim books
named by account, icons that read the right way round, decision and event pages that say
what happened in words with latencies and links both ways, times to the millisecond."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.contrib import admin
from django.test import override_settings

from accounts.models import TradingAccount
from brokers.models import SimAccount
from copier.console.display import time_display
from copier.models import Decision
from tests.console.console_world import world_build
from tests.factories import T0

pytestmark = pytest.mark.django_db


@pytest.fixture
def boss(client, django_user_model):
    user = django_user_model.objects.create_superuser("boss", "b@example.com", "pw-123456")
    client.force_login(user)
    return client


@pytest.fixture
def world():
    return world_build()


def test_admin_slash_lists_every_table_under_a_named_site(boss):
    page = boss.get("/admin/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<title>All tables | Trade copier</title>" in html
    assert 'data-testid="site-header">Trade copier<' in html
    sections = re.findall(r'<caption>\s*<a [^>]*class="section"[^>]*>([^<]+)</a>', html)
    assert sections[:3] == ["Copier", "Trading accounts", "Brokers (sim paper broker)"]
    assert sections[-1] == "System"
    system = html[html.index(">System<"):]
    for name in ("Groups", "Users", "Periodic tasks", "Crontabs"):
        assert name in system
    assert ">Copy groups<" not in system


def test_old_admin_addresses_under_admin_slash_land_on_their_page(boss):
    response = boss.get("/admin/copier/decision/?reason__exact=copied")
    assert response.status_code == 301
    assert response["Location"] == "/copier/decision/?reason__exact=copied"


def test_the_favicon_is_served(boss, client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301
    svg = client.get(response["Location"])
    assert svg.status_code == 200
    assert b"<svg" in b"".join(svg.streaming_content)
    assert 'rel="icon"' in boss.get("/admin/").content.decode()


def test_sim_books_are_named_by_their_account():
    acct = TradingAccount.objects.create(name="Alice-Apex", broker="sim")
    book = SimAccount.objects.create(account=acct)
    assert str(book) == "sim book of Alice-Apex"


def test_the_accounts_list_has_a_healthy_column_that_reads_the_right_way(boss, world):
    html = boss.get("/accounts/tradingaccount/").content.decode()
    rows = {m.group(1): m.group(0) for m in re.finditer(
        r'<tr>.*?<a href="/accounts/tradingaccount/\d+/change/">([^<]+)</a>.*?</tr>', html, re.S)}
    assert "icon-yes" in rows["F1"]  # connected, copying: a tick
    assert "icon-no" in rows["F3"]  # paused: a cross
    assert "icon-no" in rows["F4"]  # disconnected: a cross
    assert "column-copy_paused" not in html  # no "paused" tick column any more
    assert "column-healthy" in html
    assert f"/copier/decision/?account__id__exact={world.ok.account_id}" in rows["F1"]


# the sim broker writes on its own connection: committed rows, and the auth tables kept
@pytest.mark.django_db(transaction=True, databases="__all__", available_apps=None)
def test_restoring_a_still_paused_sim_account_is_an_error_not_a_success(boss, world):
    SimAccount.objects.create(account=world.paused.account)
    SimAccount.objects.create(account=world.ok.account)
    page = boss.post("/accounts/tradingaccount/", {
        "action": "sim_restore",
        "_selected_action": [world.paused.account_id, world.ok.account_id]}, follow=True)
    html = page.content.decode()
    assert re.search(r'<li class="error">F3: sim broker reachable again, but the account is '
                     r"still PAUSED", html)
    assert re.search(r'<li class="success">F1: sim broker reachable again', html)


def test_the_decision_list_is_a_few_readable_columns(boss, world):
    html = boss.get("/copier/decision/").content.decode()
    thead = re.search(r'<table id="result_list">\s*<thead>(.*?)</thead>', html, re.S).group(1)
    headers = re.findall(r'<div class="text">(?:<a [^>]*>|<span>)([^<]+)<', thead)
    assert [h.strip() for h in headers] == ["Time", "Event", "Follower", "Symbol",
                                            "What happened"]
    assert ("F2 held -8, expected +4: on the opposite side of the leader, quarantined MNQ; "
            "nothing sent.") in html
    d = Decision.objects.get(account=world.ok.account)
    assert time_display(d.created_at) == "2026-03-02 15:00:00.040 UTC"
    assert "2026-03-02 15:00:00.040 UTC" in html
    assert f'href="/copier/leaderevent/{world.event.pk}/change/"' in html
    assert f'href="/accounts/tradingaccount/{world.ok.account_id}/change/"' in html


def test_an_accounts_decisions_are_one_click_away_and_filter(boss, world):
    html = boss.get(f"/copier/decision/?account__id__exact={world.ok.account_id}")
    assert html.status_code == 200
    text = html.content.decode()
    assert "F1 held 0, in line with the leader" in text
    assert "F2 held" not in text
    for url in (f"/copier/decision/?event__id__exact={world.event.pk}",
                f"/copier/order/?decision__event__id__exact={world.event.pk}",
                f"/copier/order/?account__id__exact={world.ok.account_id}",
                f"/copier/quarantine/?account__id__exact={world.quarantined.account_id}",
                f"/copier/failedexit/?account__id__exact={world.exiting.account_id}&symbol=MNQ",
                f"/copier/leaderevent/?account__id__exact={world.leader.pk}"):
        assert boss.get(url).status_code == 200, url


def test_the_decision_page_says_it_in_words_with_legs_orders_and_latency(boss, world):
    d = Decision.objects.get(account=world.ok.account)
    html = boss.get(f"/copier/decision/{d.pk}/change/").content.decode()
    assert "F1 held 0, in line with the leader; the leader went 0 \u2192 +2, so F1 moves to " \
        "+2: buy 2 (sent); now +2." in html
    assert "buy 2 (sent)" in html
    assert re.search(r'<span class="latency" data-testid="latency">87 ms</span>', html)
    order = d.orders.get()
    assert f"/copier/order/{order.pk}/change/" in html
    order_page = boss.get(f"/copier/order/{order.pk}/change/").content.decode()
    assert f"/copier/decision/{d.pk}/change/" in order_page
    assert "87 ms" in order_page


def test_the_event_page_shows_each_followers_sentence_and_latency(boss, world):
    html = boss.get(f"/copier/leaderevent/{world.event.pk}/change/").content.decode()
    assert "buy 2 MNQ: 0 \u2192 +2" in html
    assert "on the opposite side of the leader" in html
    assert "87 ms" in html
    assert f"/copier/decision/?event__id__exact={world.event.pk}" in html
    assert "2026-03-02 15:00:00.000 UTC" in html


def test_a_slow_copy_stands_out(boss, world):
    from copier.models import Order

    Order.objects.update(completed_at=T0 + dt.timedelta(milliseconds=900))
    html = boss.get(f"/copier/leaderevent/{world.event.pk}/change/").content.decode()
    assert re.search(r'class="latency slow" data-testid="latency" title="slower than 250 ms">'
                     r"900 ms", html)


@override_settings(COPIER_DISPLAY_TZ="America/New_York")
def test_times_show_in_the_operators_zone_with_its_name(boss, world):
    d = Decision.objects.get(account=world.ok.account)
    assert time_display(d.created_at) == "2026-03-02 10:00:00.040 EST"
    assert "2026-03-02 10:00:00.040 EST" in boss.get("/copier/decision/").content.decode()
    assert "America/New_York" in boss.get("/").content.decode()


def test_a_display_zone_that_does_not_exist_is_refused_with_what_to_use():
    from django.core.exceptions import ImproperlyConfigured

    from copier.console.display import display_zone

    with override_settings(COPIER_DISPLAY_TZ="Mars/Olympus"), \
            pytest.raises(ImproperlyConfigured, match="IANA name"):
        display_zone()


def test_every_console_model_page_answers(boss, world):
    for model in ("copier/decision", "copier/order", "copier/leaderevent",
                  "copier/quarantine", "copier/failedexit", "brokers/simaccount"):
        assert boss.get(f"/{model}/").status_code == 200, model
    assert admin.site.site_header == "Trade copier"

