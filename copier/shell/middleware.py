"""Middleware of the copier's own."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import cached_property

from django.conf import settings
from django.core.exceptions import DisallowedRedirect
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import NoReverseMatch, reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode

from copier.services.second_factor import second_factor_owed
from copier.shell.health import healthz

HEALTH_PATH = "/healthz"


class SecurityHeadersMiddleware:
    """The browser's protections on every answer, /healthz and error pages included.

    First in MIDDLEWARE, so that no answer leaves without them: the health check answers
    ahead of Django's SecurityMiddleware, and an error a middleware raises is turned into a
    page outside the ones behind it. Django's SecurityMiddleware and XFrameOptionsMiddleware
    stay (`check --deploy` looks for them); the values are the same settings they read, set
    here only where they have not set them already.

    The Content-Security-Policy is ours because Django 5.2 has none (6.0 brings one, with
    SECURE_CSP: move to it then). Nothing of the admin or the console runs inline, so the
    policy needs no nonce: scripts, styles and images from this origin only, no plugins,
    no <base>, no framing, forms posted only here (tests/console/test_headers.py reads
    every page for what it would refuse; the browser tests fail on a violation).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.headers = {
            "Content-Security-Policy": "; ".join(
                f"{directive} {value}"
                for directive, value in settings.COPIER_CONTENT_SECURITY_POLICY.items()),
            "X-Frame-Options": settings.X_FRAME_OPTIONS,
            "Referrer-Policy": settings.SECURE_REFERRER_POLICY,
        }
        if settings.SECURE_CONTENT_TYPE_NOSNIFF:
            self.headers["X-Content-Type-Options"] = "nosniff"

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        for name, value in self.headers.items():
            response.headers.setdefault(name, value)
        return response


class SameOriginRedirectMiddleware:
    """No answer sends the browser to another site: a Location must stay on this host.

    `/admin//evil.example/login/` was redirected to `//evil.example/login/`, which a
    browser reads as another host (as it reads `/\\host`, `///host` and a tab or newline
    in between): a link on the copier's own address led to a look-alike login. Each view
    that redirects checks its own target; this is the net under all of them, Django's own
    and those of later code: an absolute or scheme-relative Location to another host, a
    downgrade from https, or another scheme is refused (a 400, logged by Django as
    django.security.DisallowedRedirect) instead of followed.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        location = response.get("Location")
        if location is not None and not location_is_same_origin(location, request):
            raise DisallowedRedirect(f"refused a redirect off this site: {location!r}")
        return response


def location_is_same_origin(location: str, request: HttpRequest) -> bool:
    """A path on this host, or an absolute URL to this host (or to SECURE_SSL_HOST, where the
    https redirect is configured to go), never from https down to http."""
    if url_has_allowed_host_and_scheme(location, allowed_hosts=set()):
        return True  # a path: no host to ask for (a relative one, too)
    hosts = {request.get_host()}
    if settings.SECURE_SSL_HOST:
        hosts.add(settings.SECURE_SSL_HOST)
    return url_has_allowed_host_and_scheme(location, allowed_hosts=hosts,
                                           require_https=request.is_secure())


class HealthCheckMiddleware:
    """Answers /healthz first, before the HTTPS redirect and the ALLOWED_HOSTS check.

    The container's health check asks over plain HTTP on 127.0.0.1, from inside. In
    production SecurityMiddleware answered it with a 301 to https, and the public
    ALLOWED_HOSTS would answer a 400: the check failed on a working web, and what
    waited for it never started. Nothing else is served here, and the answer carries
    no more than which server is unreachable.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info == HEALTH_PATH and request.method in ("GET", "HEAD"):
            return healthz(request)
        return self.get_response(request)


OWED_ATTRIBUTE = "copier_second_factor_owed"  # the request's: what the session still owes


class SecondFactorMiddleware:
    """A user past the password who still owes a code (a confirmed device) or, where
    COPIER_REQUIRE_2FA makes it compulsory, an enrolment, reaches nothing but the page that
    takes it: every other address redirects there, the page first asked for kept as
    `next`. The login, the logout and the static files stay reachable. After
    django_otp's OTPMiddleware, which says whether the session passed a code.

    The admin site refuses such a session too (CopierAdminSite.has_permission): the net
    under this one, should a view be reached some other way.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    @cached_property
    def open_paths(self) -> frozenset[str]:
        """The pages a session owing a code may still open (the URLconf is loaded by the
        first request, not when the middleware is built)."""
        found = set()
        for name in ("otp_verify", "otp_enrol", "admin:login", "admin:logout", "favicon"):
            with contextlib.suppress(NoReverseMatch):  # a URLconf of a test's own
                found.add(reverse(name))
        return frozenset(found)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        if path in self.open_paths or path.startswith(f"/{settings.STATIC_URL.lstrip('/')}"):
            return self.get_response(request)
        owed = second_factor_owed(request.user)
        setattr(request, OWED_ATTRIBUTE, owed)
        if owed is None:
            return self.get_response(request)
        target = reverse("otp_verify" if owed == "code" else "otp_enrol")
        return HttpResponseRedirect(f"{target}?{urlencode({'next': request.get_full_path()})}")
