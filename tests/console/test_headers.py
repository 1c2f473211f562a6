"""The security headers on every answer, and pages that keep to their Content-Security-Policy
(issue 19, "Headers").

A policy with no 'unsafe-inline' is only worth having if the pages work under it: every page
of the admin and the console is rendered here and read for what the policy would block
(inline scripts and styles, event-handler attributes, javascript: links, resources from
another origin). The browser tests (tests/browser) then run the console under the policy and
fail on any violation Chromium reports.
"""

from __future__ import annotations

import contextlib
from html.parser import HTMLParser

import pytest
from django.contrib import admin
from django.urls import NoReverseMatch, reverse

from tests.console.console_world import world_build

pytestmark = pytest.mark.django_db

WANTED_CSP = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'none'",
    "frame-ancestors": "'none'",
    "form-action": "'self'",
}


def csp_directives(header: str) -> dict[str, str]:
    parts = (p.strip().split(None, 1) for p in header.split(";") if p.strip())
    return {p[0]: p[1] if len(p) > 1 else "" for p in parts}


def assert_security_headers(response) -> None:
    policy = csp_directives(response["Content-Security-Policy"])
    for directive, value in WANTED_CSP.items():
        assert policy.get(directive) == value, (directive, policy)
    assert "unsafe" not in response["Content-Security-Policy"]
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Content-Type-Options"] == "nosniff"


@pytest.fixture
def boss(client, django_user_model):
    user = django_user_model.objects.create_superuser("boss", "b@example.com", "pw-123456")
    client.force_login(user)
    return client


def test_the_admin_login_page_carries_the_headers(client):
    response = client.get("/login/")
    assert response.status_code == 200
    assert_security_headers(response)


def test_the_console_carries_the_headers(boss):
    world_build()
    for url in ("/", "/console/groups/", "/console/latency/", "/admin/",
                "/copier/copygroup/"):
        response = boss.get(url)
        assert response.status_code == 200, url
        assert_security_headers(response)


def test_healthz_carries_the_headers(client):
    """/healthz is answered ahead of Django's SecurityMiddleware, and still carries them."""
    response = client.get("/healthz")
    assert response.status_code in (200, 503)
    assert_security_headers(response)


def test_redirects_and_errors_carry_the_headers(client, boss):
    assert_security_headers(client.get("/"))  # to the login page
    assert_security_headers(boss.get("/admin/copier/decision/"))  # the old-address redirect
    assert_security_headers(boss.get("/copier/nothing-here/"))  # a 404


# --- the pages keep to the policy -------------------------------------------------------

SCRIPT_TYPES_THAT_RUN = {"", "text/javascript", "module", "application/javascript"}
URL_ATTRIBUTES = {"src", "href", "action", "formaction", "data", "poster"}


class PolicyReader(HTMLParser):
    """What 'self'-only script-src and style-src would refuse, in one page's markup."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.refused: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = {k.lower(): v or "" for k, v in attrs}
        for key, value in named.items():
            if key.startswith("on"):
                self.refused.append(f"<{tag} {key}=...>: an event-handler attribute")
            if key == "style":
                self.refused.append(f"<{tag} style={value!r}>: an inline style")
            if key in URL_ATTRIBUTES and value.strip().lower().startswith("javascript:"):
                self.refused.append(f"<{tag} {key}={value!r}>: a javascript: URL")
            if key in URL_ATTRIBUTES and tag in ("script", "link", "img", "iframe") and (
                    value.startswith("//") or "://" in value):
                self.refused.append(f"<{tag} {key}={value!r}>: from another origin")
        if tag == "style":
            self.refused.append("<style>: an inline style sheet")
        if tag == "script" and "src" not in named and named.get("type", "") in \
                SCRIPT_TYPES_THAT_RUN:
            self._in_script = True

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.refused.append(f"<script>{data.strip()[:60]}...: an inline script")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False


def refused_in(html: str) -> list[str]:
    reader = PolicyReader()
    reader.feed(html)
    return reader.refused


def test_the_reader_finds_what_the_policy_refuses():
    html = ('<script>alert(1)</script><p style="color:red" onclick="x()">'
            '<a href="javascript:x()">x</a><style>p{}</style>'
            '<script src="https://cdn.example/x.js"></script>'
            '<script type="application/json">{"a": 1}</script><script src="/static/a.js">'
            "</script>")
    assert len(refused_in(html)) == 6


def _admin_pages() -> list[str]:
    """Every model's list, add form and the change form of its first row."""
    urls = []
    for model in admin.site._registry:
        info = model._meta.app_label, model._meta.model_name
        urls.append(reverse("admin:{}_{}_changelist".format(*info)))
        with contextlib.suppress(NoReverseMatch):
            urls.append(reverse("admin:{}_{}_add".format(*info)))
        first = model.objects.first()
        if first is not None:
            urls.append(reverse("admin:{}_{}_change".format(*info), args=[first.pk]))
    return urls


def test_every_page_of_the_admin_and_the_console_keeps_to_the_policy(boss):
    world = world_build()
    pages = ["/", "/console/groups/", "/console/latency/", "/admin/", "/password_change/",
             reverse("admin:accounts_tradingaccount_sim_fill", args=[world.leader.pk]),
             *_admin_pages()]
    refused = {}
    for url in pages:
        response = boss.get(url)
        if response.status_code == 403:  # an add form the admin offers nobody
            continue
        assert response.status_code == 200, url
        if found := refused_in(response.content.decode()):
            refused[url] = found
    flatten = boss.post(reverse("admin:copier_copygroup_changelist"),
                        {"action": "flatten_and_stop", "_selected_action": [world.group.pk]})
    assert flatten.status_code == 200
    if found := refused_in(flatten.content.decode()):
        refused["flatten confirmation"] = found
    assert refused == {}


def test_the_login_page_keeps_to_the_policy(client):
    assert refused_in(client.get("/login/").content.decode()) == []
