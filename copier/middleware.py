"""Middleware of the copier's own."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from copier.views import healthz

HEALTH_PATH = "/healthz"


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
