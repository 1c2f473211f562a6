"""The alert webhook's URL is the channel's token: write-only like a broker login (issue 19,
defect 6). No admin page shows it (set / not set only), a blank field keeps it, removing it
is a box of its own, and no export writes it in the clear."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.urls import reverse

from copier.models import AlertConfig
from tests.factories import account, group

pytestmark = pytest.mark.django_db

TOKEN = "T0KEN-webhook-9f8e7d"
URL = f"https://hooks.example.com/services/{TOKEN}"


def _staff(client, django_user_model, *codenames: str):
    user = django_user_model.objects.create_user("ops", "o@example.com", "pw-123456",
                                                 is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client.force_login(user)
    return client


@pytest.fixture
def config() -> AlertConfig:
    g = group("g", account("L"), {account("F1"): "1"})
    return AlertConfig.objects.create(group=g, emails="ops@example.com", webhook_url=URL)


def _pages(config: AlertConfig) -> list[str]:
    return [reverse("admin:copier_alertconfig_changelist"),
            reverse("admin:copier_alertconfig_change", args=[config.pk]),
            reverse("admin:copier_alertconfig_history", args=[config.pk])]


def test_a_view_only_user_reads_set_or_not_set_never_the_url(client, django_user_model,
                                                             config):
    viewer = _staff(client, django_user_model, "view_alertconfig")
    bare = AlertConfig.objects.create(group=group("h", account("L2"), {}), emails="")
    for url in _pages(config):
        page = viewer.get(url)
        assert page.status_code == 200, url
        body = page.content.decode()
        assert TOKEN not in body, url
        assert "hooks.example.com" not in body, url
    change = viewer.get(reverse("admin:copier_alertconfig_change", args=[config.pk]))
    assert ">set<" in change.content.decode()
    other = viewer.get(reverse("admin:copier_alertconfig_change", args=[bare.pk]))
    assert ">not set<" in other.content.decode()
    listed = viewer.get(reverse("admin:copier_alertconfig_changelist")).content.decode()
    assert ">set<" in listed
    assert ">not set<" in listed


def _post(editor, config: AlertConfig, **fields: str):
    data = {"group": config.group_id, "emails": config.emails, "webhook_url": "",
            "disconnect_after_seconds": "120", "on_quarantine": "on", **fields}
    return editor.post(reverse("admin:copier_alertconfig_change", args=[config.pk]), data)


def test_who_may_change_it_never_gets_it_back_and_a_blank_field_keeps_it(
        client, django_user_model, config):
    editor = _staff(client, django_user_model, "view_alertconfig", "change_alertconfig")
    for url in _pages(config):
        assert TOKEN not in editor.get(url).content.decode(), url
    assert _post(editor, config, emails="desk@example.com").status_code == 302
    config.refresh_from_db()
    assert (config.emails, config.webhook_url) == ("desk@example.com", URL)
    history = editor.get(reverse("admin:copier_alertconfig_history", args=[config.pk]))
    assert "Changed Emails" in history.content.decode()  # the kept URL is no change
    assert TOKEN not in history.content.decode()

    new = "https://hooks.example.com/services/NEW-token"
    assert _post(editor, config, webhook_url=new).status_code == 302
    config.refresh_from_db()
    assert config.webhook_url == new

    both = _post(editor, config, webhook_url=URL, webhook_clear="on")
    assert both.status_code == 200
    assert "not both" in both.content.decode()
    assert "NEW-token" not in both.content.decode()  # not even in the form sent back
    config.refresh_from_db()
    assert config.webhook_url == new

    assert _post(editor, config, webhook_clear="on").status_code == 302
    config.refresh_from_db()
    assert config.webhook_url == ""


@pytest.mark.parametrize("fmt", ["json", "xml", "yaml"])
def test_no_export_writes_the_url(config, fmt):
    out = io.StringIO()
    call_command("dumpdata", "copier.alertconfig", format=fmt, stdout=out)
    assert TOKEN not in out.getvalue()
    assert "fernet:" in out.getvalue()
