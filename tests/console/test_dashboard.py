"""The dashboard: the first page after login answers "is every follower in sync, and if
not, what is wrong and what do I click"; its parts refresh; the follower switch is a
permission-gated CSRF POST that changes nothing on bad input."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from accounts.models import Position
from copier.console.latency import latency_cache_clear
from copier.models import Follower
from core import clock
from tests.console.console_world import world_build
from tests.factories import T0

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("frozen_clock")]


@pytest.fixture(autouse=True)
def _fresh_latency_cache():
    latency_cache_clear()
    yield
    latency_cache_clear()


@pytest.fixture
def world():
    clock.freeze(T0 + dt.timedelta(minutes=10))  # F4 has been disconnected for 10 minutes
    return world_build()


@pytest.fixture
def boss(client, django_user_model):
    user = django_user_model.objects.create_superuser("boss", "b@example.com", "pw-123456")
    client.force_login(user)
    return client


@pytest.fixture
def viewer(django_user_model):
    """Staff who may look but not switch followers."""
    user = django_user_model.objects.create_user("eve", "e@example.com", "pw-123456",
                                                 is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__startswith="view_"))
    c = Client()
    c.force_login(user)
    return c


def _card(html: str, follower: Follower) -> str:
    m = re.search(rf'<article [^>]*data-testid="follower-{follower.pk}"(.*?)</article>', html,
                  re.S)
    assert m, f"no card for {follower.account.name}"
    return m.group(0)


def _status(html: str, follower: Follower) -> str:
    return re.search(r'data-status="(\w+)"', _card(html, follower)).group(1)


def test_the_first_page_after_login_is_the_dashboard(client, world, django_user_model):
    page = client.get("/")
    assert page.status_code == 302
    assert "/login/" in page["Location"]
    django_user_model.objects.create_superuser("boss", "b@example.com", "pw-123456")
    page = client.post("/login/?next=/", {"username": "boss", "password": "pw-123456"},
                       follow=True)
    assert page.redirect_chain[-1][0] == "/"
    assert 'data-testid="dashboard-title"' in page.content.decode()


def test_each_follower_shows_its_state_and_colour(boss, world):
    html = boss.get("/").content.decode()
    assert _status(html, world.ok) == "green"
    assert _status(html, world.quarantined) == "red"
    assert _status(html, world.paused) == "red"
    assert _status(html, world.down) == "red"
    assert _status(html, world.exiting) == "amber"
    assert _status(html, world.off) == "off"
    # the quarantined follower: -8 beside the +4 expected for the leader's +2 at x2, and why
    card = _card(html, world.quarantined)
    assert re.search(rf'data-testid="follower-{world.quarantined.pk}-held-MNQ">-8<', card)
    assert re.search(rf'data-testid="follower-{world.quarantined.pk}-expected-MNQ">\+4<', card)
    assert "MNQ quarantined: on the opposite side of the leader" in card
    assert "Connected" in card  # connection alone no longer reads as "all is well"
    paused = _card(html, world.paused)
    assert f'data-testid="follower-{world.paused.pk}-paused"' in paused
    assert "MNQ: copier +2, broker +5" in paused
    exiting = _card(html, world.exiting)
    assert "1 queued" in exiting
    assert "exit of 1 queued" in exiting
    assert "Disconnected" in _card(html, world.down)
    # in sync, with its last copy's latency and the way to its decisions
    ok = _card(html, world.ok)
    assert re.search(r"last copy <a [^>]*>87 ms</a>", ok)
    assert f"/copier/decision/?account__id__exact={world.ok.account_id}" in ok
    assert 'data-testid="group-' in html
    assert "times in <strong" in html


def test_a_short_disconnect_is_amber_a_long_one_red(boss, world):
    clock.freeze(T0 + dt.timedelta(seconds=30))
    assert _status(boss.get("/").content.decode(), world.down) == "amber"
    clock.freeze(T0 + dt.timedelta(seconds=121))
    assert _status(boss.get("/").content.decode(), world.down) == "red"


def test_out_of_line_is_amber_while_the_leader_move_is_being_copied(boss, world):
    from accounts.models import Position
    from copier.models import LeaderEvent

    Position.objects.filter(account=world.leader).update(qty=3)
    assert _status(boss.get("/").content.decode(), world.ok) == "red"
    LeaderEvent.objects.create(account=world.leader, fill_id="x2", symbol="MNQ", side="buy",
                               qty=1, p0=2, p1=3, received_at=clock.now())
    assert _status(boss.get("/").content.decode(), world.ok) == "amber"


def test_the_grid_and_latency_parts_answer_for_polling(boss, world):
    page = boss.get("/").content.decode()
    assert 'data-refresh-url="/console/groups/"' in page
    assert 'data-refresh-url="/console/latency/"' in page
    assert "copier/console.js" in page
    grid = boss.get("/console/groups/")
    assert grid.status_code == 200
    assert "<html" not in grid.content.decode()
    assert f'data-testid="follower-{world.ok.pk}"' in grid.content.decode()
    latency = boss.get("/console/latency/").content.decode()
    assert 'data-testid="latency-hour-p50">p50 87 ms' in latency
    assert "<svg" in latency
    assert 'data-testid="latency-histogram-day"' in latency
    assert boss.get("/console/groups/", secure=False).status_code == 200
    assert Client().get("/console/groups/").status_code == 302  # signed out: to the login


def test_the_switch_turns_a_flat_follower_off_and_on(boss, world):
    Position.objects.filter(account=world.ok.account).update(qty=0)
    url = f"/console/followers/{world.ok.pk}/enabled/"
    page = boss.post(url, {"enabled": "off"}, follow=True)
    assert page.redirect_chain[-1][0] == "/"
    world.ok.refresh_from_db()
    assert not world.ok.enabled
    assert "F1: copying off" in page.content.decode()
    assert _status(page.content.decode(), world.ok) == "off"
    boss.post(url, {"enabled": "off"})  # sent twice: still off, not flipped back
    world.ok.refresh_from_db()
    assert not world.ok.enabled
    boss.post(url, {"enabled": "on"})
    world.ok.refresh_from_db()
    assert world.ok.enabled


def test_switching_off_a_follower_that_holds_positions_winds_it_down_instead(boss, world):
    """Off would strand what it holds (its exits would no longer be copied): it goes to
    exits only, as the admin's question defaults to; switched on again, it is active."""
    url = f"/console/followers/{world.ok.pk}/enabled/"
    page = boss.post(url, {"enabled": "off"}, follow=True)
    world.ok.refresh_from_db()
    assert (world.ok.enabled, world.ok.mode) == (True, "exits_only")
    assert "F1 holds MNQ +2: set to exits only" in page.content.decode()
    boss.post(url, {"enabled": "on"})
    world.ok.refresh_from_db()
    assert (world.ok.enabled, world.ok.mode) == (True, "active")


@pytest.mark.parametrize("data", [{}, {"enabled": "toggle"}, {"enabled": "1"},
                                  {"enabled": ""}])
def test_bad_input_to_the_switch_changes_nothing(boss, world, data):
    response = boss.post(f"/console/followers/{world.ok.pk}/enabled/", data)
    assert response.status_code == 400
    world.ok.refresh_from_db()
    assert world.ok.enabled


def test_the_switch_needs_post_a_known_follower_the_permission_and_csrf(boss, viewer, world,
                                                                       django_user_model):
    url = f"/console/followers/{world.ok.pk}/enabled/"
    assert boss.get(url).status_code == 405
    assert boss.post("/console/followers/99999/enabled/", {"enabled": "off"}).status_code == 404
    assert viewer.post(url, {"enabled": "off"}).status_code == 403
    page = viewer.get("/").content.decode()
    assert f'data-testid="follower-{world.ok.pk}"' in page  # may look ...
    assert 'data-testid="follower-' + str(world.ok.pk) + '-switch"' not in page  # ... not switch
    # a forged cross-site POST without the token
    forger = Client(enforce_csrf_checks=True)
    forger.force_login(django_user_model.objects.get(username="boss"))
    assert forger.post(url, {"enabled": "off"}).status_code == 403
    world.ok.refresh_from_db()
    assert world.ok.enabled
    # with the token the page gave it, the same client may
    page = forger.get("/").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    assert forger.post(url, {"enabled": "off", "csrfmiddlewaretoken": token}).status_code == 302
    world.ok.refresh_from_db()
    assert world.ok.mode == "exits_only"  # it holds a position: wound down, not stranded


def test_kill_switch_buttons_show_only_to_who_may_use_them(boss, viewer, world):
    html = boss.get("/").content.decode()
    assert f'data-testid="group-{world.group.pk}-kill-switch"' in html
    for action in ("stop_entries", "resume_entries", "flatten_and_stop"):
        button = re.search(rf'<form method="post" action="/copier/copygroup/"[^>]*>.*?'
                           rf'data-testid="group-{world.group.pk}-{action}"', html, re.S)
        assert button, action
        assert f'name="_selected_action" value="{world.group.pk}"' in button.group(0)
    html = viewer.get("/").content.decode()
    assert f'data-testid="group-{world.group.pk}-stop_entries"' not in html
    assert f'data-testid="group-{world.group.pk}-flatten_and_stop"' not in html


def test_an_empty_install_says_what_to_do(boss):
    html = boss.get("/").content.decode()
    assert 'data-testid="no-groups"' in html
    assert "/copier/copygroup/add/" in html


def test_the_dashboard_reads_in_a_fixed_number_of_queries(world, django_assert_max_num_queries):
    from copier.console.selectors import dashboard_groups

    # the 9th: the followers' symbol mappings; the 10th: the daily loss limits' locks; the
    # 11th: the account guards
    with django_assert_max_num_queries(11):
        panels = dashboard_groups()
    assert len(panels[0].cards) == 6


def test_a_wound_down_follower_is_shown_exits_only_not_out_of_line(boss, world):
    """After stop entries or a flatten, a follower holding less than the leader calls for
    (or nothing) is as intended: an exits-only badge, not the red "out of line"."""
    world.group.mode = "exits_only"
    world.group.save(update_fields=["mode"])
    Position.objects.filter(account=world.ok.account).update(qty=0)  # flattened
    html = boss.get("/").content.decode()
    assert f'data-testid="group-{world.group.pk}-exits-only"' in html
    assert f'data-testid="follower-{world.ok.pk}-exits-only"' in html
    assert _status(html, world.ok) == "green"
    Position.objects.filter(account=world.ok.account).update(qty=-3)  # the wrong side: red
    assert _status(boss.get("/").content.decode(), world.ok) == "red"


def test_a_follower_locked_by_its_daily_loss_limit_says_so_until_when(boss, world):
    from decimal import Decimal

    from copier.models import SessionLoss

    now = clock.now()
    SessionLoss.objects.create(
        follower=world.ok, session_start=now - dt.timedelta(hours=2),
        realized=Decimal(-700), read_at=now, limit=Decimal(500), reached_at=now,
        locked_at=now, locked_until=now + dt.timedelta(hours=3))
    card = _card(boss.get("/").content.decode(), world.ok)
    assert "daily loss limit reached: no entry is copied until" in card
    assert _status(boss.get("/").content.decode(), world.ok) == "amber"
    SessionLoss.objects.update(locked_until=now)  # lifted (or the session ended)
    assert "daily loss limit" not in _card(boss.get("/").content.decode(), world.ok)


def test_a_guarded_follower_shows_its_room_above_the_line_as_a_coloured_bar(boss, world):
    from decimal import Decimal

    from copier.models import AccountGuard

    g = AccountGuard.objects.create(
        account=world.ok.account, starting_balance=Decimal(50000), drawdown=Decimal(2000),
        preset="topstep-50k", source_url="https://help.topstep.com/x",
        equity=Decimal(50000), line=Decimal(48000), balance=Decimal(50000),
        open_pnl=Decimal(0), equity_source="sim: fills at average cost, last prices",
        read_at=clock.now())
    card = _card(boss.get("/").content.decode(), world.ok)
    bar = re.search(r'data-testid="follower-\d+-guard" data-status="(\w+)"', card)
    assert bar
    assert bar.group(1) == "green"
    assert 'aria-valuenow="100"' in card
    assert "equity $50,000.00, line $48,000.00, $2,000.00 above it (buffer $150.00)" in card
    assert "topstep-50k" in card
    assert "numbers never checked" in card
    Follower.objects.filter(pk=world.ok.pk).update(daily_loss_limit=500)
    card = _card(boss.get("/").content.decode(), world.ok)
    assert "daily loss limit 500.00 realised (lock)" in card  # today's limit, in the profile
    AccountGuard.objects.filter(pk=g.pk).update(equity=Decimal(48300))  # inside the warning
    card = _card(boss.get("/").content.decode(), world.ok)
    assert 'data-status="amber"' in card
    assert 'aria-valuenow="15"' in card
    AccountGuard.objects.filter(pk=g.pk).update(
        equity=Decimal(48100), state="locked",
        findings=[{"trip": "drawdown", "equity": "48100", "line": "48000", "buffer": "150"}])
    html = boss.get("/").content.decode()
    assert _status(html, world.ok) == "red"
    assert ("account guard locked: equity $48,100, line $48,000, buffer $150"
            in _card(html, world.ok))
