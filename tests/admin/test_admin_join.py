"""Joining through the admin's group form: a follower starts with its new leader's next event
(docs/rules.md#joining-settings-and-crashes), however the form's rows are saved (issue 18, item 8).

The group's form saves the group first (its `save` moves the followers' start), then the
inline rows it loaded before: a row that changed was saved with the start it was rendered
with, and the follower then replayed every earlier fill of its new leader.
"""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.test import Client
from django.urls import reverse

from copier.models import CopyGroup, Decision, Follower, LeaderEvent, Order, current_event_watermark
from tests.factories import account, connect, group, leader_fill

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"),
              pytest.mark.usefixtures("eager_tasks")]


class _FormValues(HTMLParser):
    """What a browser posts for the page's form, as rendered (no JavaScript)."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        name = a.get("name")
        if tag == "input" and name:
            kind = a.get("type", "text")
            if kind in ("checkbox", "radio"):
                if "checked" in a:
                    self.values[name] = a.get("value") or "on"
            elif kind not in ("submit", "button", "file"):
                self.values[name] = a.get("value", "")
        elif tag == "select" and name:
            self._select = name
            self.values.setdefault(name, "")
        elif tag == "option" and self._select and "selected" in a:
            self.values[self._select] = a.get("value", "")
        elif tag == "textarea" and name:
            self._textarea = name
            self.values[name] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data: str) -> None:
        if self._textarea:
            self.values[self._textarea] += data


def _rendered(client: Client, url: str) -> dict[str, str]:
    page = client.get(url)
    assert page.status_code == 200
    parser = _FormValues()
    parser.feed(page.content.decode())
    return {k: v for k, v in parser.values.items()
            if k != "csrfmiddlewaretoken" and "__prefix__" not in k}


@pytest.fixture
def client(client, django_user_model):
    user = django_user_model.objects.create_superuser("boss", "b@example.com", "pw-123456")
    client.force_login(user)
    return client


@pytest.fixture
def world():
    """F1 follows L1; L2 leads another group and has a history of 11 fills (after F1
    joined L1): fills that were never F1's."""
    l1, l2, f1, f2 = account("L1"), account("L2"), account("F1"), account("F2")
    g = group("g", l1, {f1: "1"})
    group("g2", l2, {f2: "1"})
    connect(l1, l2, f1, f2)
    for i in range(11):
        leader_fill(l2, "ES", "buy" if i % 2 == 0 else "sell", 1 + i % 3)
    return g, l2, f1


def _assert_joined_now(g: CopyGroup, l2, f1) -> None:
    """F1 starts with L2's next event: that one is decided for it, none before."""
    follower = Follower.objects.get(account=f1)
    assert follower.group_id == g.pk
    watermark = current_event_watermark()
    assert follower.start_event_id == watermark
    leader_fill(l2, "ES", "buy", 1)
    newest = LeaderEvent.objects.latest("id")
    assert newest.pk > watermark
    decided = list(Decision.objects.filter(account=f1).values_list("event_id", flat=True))
    assert decided == [newest.pk], "F1 was decided on its new leader's history"
    assert list(Order.objects.filter(account=f1).values_list("decision__event_id", flat=True)) \
        in ([], [newest.pk])


def test_a_new_leader_with_a_follower_row_edited_in_the_same_save_replays_nothing(client, world):
    g, l2, f1 = world
    url = reverse("admin:copier_copygroup_change", args=[g.pk])
    data = _rendered(client, url)
    assert data["followers-0-multiplier"] == "1.0000"
    data["leader"] = str(l2.pk)
    data["followers-0-multiplier"] = "2"  # the row changed: the formset saves it
    page = client.post(url, data)
    assert page.status_code == 302, page.content.decode()[-3000:]
    g.refresh_from_db()
    assert g.leader_id == l2.pk
    assert str(Follower.objects.get(account=f1).multiplier) == "2.0000"
    _assert_joined_now(g, l2, f1)


def test_a_new_leader_with_the_rows_posted_as_rendered_replays_nothing(client, world):
    g, l2, f1 = world
    url = reverse("admin:copier_copygroup_change", args=[g.pk])
    data = _rendered(client, url)
    data["leader"] = str(l2.pk)
    page = client.post(url, data)
    assert page.status_code == 302, page.content.decode()[-3000:]
    _assert_joined_now(g, l2, f1)


def test_a_follower_saved_from_an_instance_loaded_before_its_group_changed_leader(world):
    """The same stale save outside the admin: a script holding the follower from before."""
    g, l2, f1 = world
    stale = Follower.objects.get(account=f1)
    g.leader = l2
    g.save()
    stale.multiplier = 3
    stale.save()
    _assert_joined_now(g, l2, f1)


def test_a_leader_changed_by_a_queryset_update_still_makes_its_followers_join(world):
    """No model `save` ran for the group: the database moves its followers' start."""
    g, l2, f1 = world
    CopyGroup.objects.filter(pk=g.pk).update(leader=l2)
    _assert_joined_now(g, l2, f1)


def test_a_follower_moved_or_given_another_account_joins_now_and_a_stale_save_keeps_it(world):
    """The other joins: moved to L2's group (a stale copy saved after keeps the new
    start), and its account replaced by a bulk update that bypasses `save`."""
    _g, l2, f1 = world
    g2 = CopyGroup.objects.get(name="g2")
    stale = Follower.objects.get(account=f1)
    moved = Follower.objects.get(account=f1)
    moved.group = g2
    moved.save()
    stale.group = g2
    stale.multiplier = 2
    Follower.objects.bulk_update([stale], ["group", "multiplier", "start_event_id"])
    _assert_joined_now(g2, l2, f1)
    f3 = account("F3")
    before = current_event_watermark()
    row = Follower.objects.get(account=f1)
    Follower.objects.filter(pk=row.pk).update(account=f3)
    assert Follower.objects.get(pk=row.pk).start_event_id == before
