"""No answer of the copier sends a browser to another site (issue 19, defect 2).

`/admin//evil.example/login/` answered `301 Location: //evil.example/login/` without a
login: a browser reads a Location starting with two slashes (or a slash and a backslash,
or three slashes) as another host, so a link on the copier's own address led to a look-
alike login page. Every variant below must answer with no redirect at all, or one whose
target, resolved the way a browser resolves it, is on the copier's own host.
"""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

import pytest
from django.core.exceptions import DisallowedRedirect
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.test import RequestFactory
from django.urls import path as url_path

from copier.shell.middleware import SameOriginRedirectMiddleware

pytestmark = pytest.mark.django_db

HOST = "testserver"

# What a client may send as the path (the test client decodes %-escapes as a WSGI server
# does, so the encoded forms arrive as a server would hand them over).
OFF_SITE_PATHS = [
    "/admin//evil.example/login/",
    "/admin/%2Fevil.example/login/",
    "/admin/%2F%2Fevil.example/login/",
    "/admin///evil.example/login/",
    "/admin/\\evil.example/login/",
    "/admin/%5Cevil.example/login/",
    "/admin/%5C%5Cevil.example/login/",
    "/admin/\\/evil.example/login/",
    "/admin/%2F%5Cevil.example/",
    "/admin/%09/evil.example/",
    "/admin//evil.example",
    "/admin/%2Fevil.example",
    "/admin/https://evil.example/",
    "/admin/http:evil.example/",
    "/admin//evil.example/login/?next=/",
]
# Paths with a doubled leading slash reach Django as PATH_INFO unchanged (a real server
# does not collapse them); the test client would read `//host` as a host, so they are
# passed as PATH_INFO.
DOUBLE_SLASH_PATHS = [
    "//evil.example/login/",
    "//evil.example",
    "///evil.example/",
    "/\\evil.example/",
    "//evil.example/admin/",
    "//evil.example/copier/decision",
]


def browser_target(request_path: str, location: str) -> str:
    """Where a browser goes: tabs and newlines dropped, backslashes read as slashes (the
    WHATWG URL parser, for http and https), then resolved against the page's address."""
    cleaned = location.replace("\t", "").replace("\n", "").replace("\r", "").replace("\\", "/")
    return urljoin(f"http://{HOST}{request_path}", cleaned)


def assert_stays_on_site(request_path: str, response: HttpResponse) -> None:
    location = response.get("Location")
    if location is None:
        assert response.status_code not in (301, 302, 303, 307, 308), response
        return
    target = urlsplit(browser_target(request_path, location))
    assert target.netloc == HOST, (request_path, location)
    assert target.scheme in ("http", "https"), (request_path, location)


@pytest.fixture
def boss(client, django_user_model):
    user = django_user_model.objects.create_superuser("boss", "b@example.com", "pw-123456")
    client.force_login(user)
    return client


@pytest.mark.parametrize("path", OFF_SITE_PATHS)
@pytest.mark.parametrize("logged_in", [False, True], ids=["anonymous", "staff"])
def test_no_admin_address_redirects_off_site(client, django_user_model, path, logged_in):
    if logged_in:
        client.force_login(django_user_model.objects.create_superuser("boss", "", "pw-123456"))
    response = client.get(path)
    assert_stays_on_site(path, response)


@pytest.mark.parametrize("path", DOUBLE_SLASH_PATHS)
@pytest.mark.parametrize("logged_in", [False, True], ids=["anonymous", "staff"])
def test_no_doubled_leading_slash_redirects_off_site(client, django_user_model, path,
                                                     logged_in):
    if logged_in:
        client.force_login(django_user_model.objects.create_superuser("boss", "", "pw-123456"))
    response = client.get("/", PATH_INFO=path)
    assert_stays_on_site(path, response)


def test_the_reported_redirect_is_refused(client):
    """The issue's two reproductions: no redirect to `//evil.example` any more."""
    for path in ("/admin//evil.example/login/", "/admin/%2Fevil.example/login/"):
        response = client.get(path)
        assert response.status_code == 404
        assert not response.has_header("Location")


def test_old_admin_addresses_still_land_on_their_page(boss):
    response = boss.get("/admin/copier/decision/?reason__exact=copied")
    assert response.status_code == 301
    assert response["Location"] == "/copier/decision/?reason__exact=copied"
    response = boss.get("/admin/copier/decision/%E2%82%AC/")  # an escape stays escaped
    assert response["Location"] == "/copier/decision/%E2%82%AC/"


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/",
                                    "/\\evil.example/", "///evil.example/",
                                    "http:evil.example", "\\\\evil.example"])
def test_login_never_follows_next_off_site(client, django_user_model, target):
    django_user_model.objects.create_superuser("boss", "", "pw-123456")
    response = client.post("/login/", {"username": "boss", "password": "pw-123456",
                                       "next": target})
    assert response.status_code == 302
    assert response["Location"] == "/"  # the dashboard, not Django's /accounts/profile/
    assert_stays_on_site("/login/", response)


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/"])
def test_logout_never_follows_next_off_site(boss, target):
    response = boss.post(f"/logout/?next={target}")
    assert_stays_on_site("/logout/", response)


# --- the guard in front of every response ------------------------------------------------

def _guarded(location: str, **meta: str) -> HttpResponse:
    def view(request: HttpRequest) -> HttpResponse:
        response = HttpResponseRedirect("/")
        response["Location"] = location  # as any code could set it, past Django's checks
        return response

    request = RequestFactory().get("/somewhere/", **meta)
    return SameOriginRedirectMiddleware(view)(request)


@pytest.mark.parametrize("location", ["//evil.example/", "///evil.example/",
                                      "/\\evil.example/", "\\\\evil.example/",
                                      "https://evil.example/", "http://evil.example/",
                                      "https://testserver.evil.example/",
                                      "\t//evil.example/", "/\t/evil.example/",
                                      "javascript:alert(1)", "data:text/html,x"])
def test_the_guard_refuses_any_redirect_off_site(location):
    with pytest.raises(DisallowedRedirect):
        _guarded(location)


@pytest.mark.parametrize("location", ["/", "/copier/decision/?a=1", "../", "?page=2",
                                      "http://testserver/login/", "https://testserver/x",
                                      "/%2Fevil.example/"])
def test_the_guard_lets_same_site_redirects_through(location):
    assert _guarded(location)["Location"] == location


def test_the_guard_refuses_a_downgrade_to_http():
    with pytest.raises(DisallowedRedirect):
        _guarded("http://testserver/", **{"wsgi.url_scheme": "https"})


def test_the_https_redirect_of_production_passes_the_guard(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    response = client.get("/copier/decision/?a=1")
    assert response.status_code == 301
    assert response["Location"] == "https://testserver/copier/decision/?a=1"


def test_the_https_redirect_to_the_configured_ssl_host_passes_the_guard(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_SSL_HOST = "copier.example.com"  # the operator's own choice
    response = client.get("/copier/decision/")
    assert response["Location"] == "https://copier.example.com/copier/decision/"


def _away(request: HttpRequest) -> HttpResponse:
    response = HttpResponse(status=302)
    response["Location"] = "//evil.example/"
    return response


urlpatterns = [url_path("away/", _away)]


@pytest.mark.urls(__name__)
def test_a_refused_redirect_answers_400_through_the_stack(client, caplog):
    """Through Django's handler: the guard's refusal is a 400, logged as suspicious."""
    response = client.get("/away/")
    assert response.status_code == 400
    assert not response.has_header("Location")
    assert any(r.name == "django.security.DisallowedRedirect" for r in caplog.records)
