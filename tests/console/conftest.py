"""Fixtures of the console tests: the local SMTP server and webhook receiver, wired in."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.console.servers import SmtpServer, WebhookReceiver


@pytest.fixture
def smtp(settings) -> Iterator[SmtpServer]:
    """Django's mail goes to a real SMTP server on loopback (pytest-django's default is an
    in-memory outbox, which would prove nothing about delivery)."""
    server = SmtpServer().start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", server.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_TIMEOUT = 5
    yield server
    server.stop()


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture
def loopback_webhooks(settings) -> None:
    """The receivers above listen on loopback, which webhooks may not reach unless the
    operator allows it (copier.outbound): these tests allow it, as an operator would."""
    settings.COPIER_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
