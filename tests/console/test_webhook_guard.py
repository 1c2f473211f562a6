"""Alert webhooks go to public addresses only (issue 19, defect 4: SSRF).

A user who may edit a group's alert configuration must not make the worker POST to
loopback, the operator's network or a cloud's metadata address. The webhook receiver
here listens on loopback, standing in for such a host: unless the operator allows it in
settings, it receives nothing, whatever spelling of the address the URL uses, whatever
the DNS answers after the form accepted the URL.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
from typing import Any

import httpx
import pytest

from copier import alerts, outbound
from copier.admin import AlertConfigForm
from copier.models import Alert, AlertConfig
from core import clock
from tests.console.servers import WebhookReceiver
from tests.factories import account, group

TOKEN = "T0KEN-ssrf-secret"
HINT = outbound.ALLOW_HINT
db = pytest.mark.django_db(transaction=True, databases="__all__")


def _hooked(url: str) -> Alert:
    """A group whose only alert destination is `url` (stored as it is, past the form: the
    send must judge it by itself), and one alert for it, sent now."""
    g = group("g", account("L"), {account("F1"): "1"})
    AlertConfig.objects.create(group=g, emails="", webhook_url=url)
    alerts.alert_raise(kind="kill_switch", group=g, text="kill switch pulled by alice")
    alerts.alerts_send()
    return Alert.objects.get()


def _later() -> None:
    clock.freeze(clock.now() + dt.timedelta(hours=2))


# --- at send time -------------------------------------------------------------------------


@db
@pytest.mark.parametrize(("host", "reason"), [
    ("127.0.0.1", "the host 127.0.0.1 is a loopback address"),
    ("localhost", "the host localhost resolves to "),
    ("2130706433", "the host 2130706433 resolves to 127.0.0.1, a loopback address"),
    ("0x7f.0.0.1", "the host 0x7f.0.0.1 resolves to 127.0.0.1, a loopback address"),
    ("127.1", "the host 127.1 resolves to 127.0.0.1, a loopback address"),
    ("0.0.0.0", "the host 0.0.0.0 is an unspecified address"),  # noqa: S104 (a URL's host)
    ("[::ffff:127.0.0.1]",
     "the host ::ffff:127.0.0.1 is a loopback address (it carries 127.0.0.1)"),
    ("[::1]", "the host ::1 is a loopback address"),
], ids=["dotted", "name", "decimal", "hex", "short", "unspecified", "v4-mapped", "v6"])
def test_a_webhook_on_loopback_receives_nothing_and_the_alert_says_why(
        frozen_clock, webhook, host, reason):
    alert = _hooked(f"http://{host}:{webhook.port}/hooks/{TOKEN}")
    assert webhook.hosts == []  # not a byte arrived
    assert (alert.status, alert.delivered, alert.attempts) == ("pending", [], 1)
    assert alert.last_error.startswith(f"webhook: webhook refused: {reason}")
    assert alert.last_error.endswith(f"({HINT})")
    assert TOKEN not in alert.last_error
    _later()
    alerts.alerts_send()  # judged again at each attempt
    assert webhook.hosts == []


@db
def test_an_octal_spelling_is_not_sent_either(frozen_clock, webhook):
    """httpx refuses 0177.0.0.1 as a URL (the resolver would read it as 127.0.0.1)."""
    alert = _hooked(f"http://0177.0.0.1:{webhook.port}/hooks/{TOKEN}")
    assert webhook.hosts == []
    assert alert.last_error == "webhook: webhook URL is not a valid URL"


@db
def test_allowed_by_the_operator_it_is_delivered(frozen_clock, webhook, settings):
    settings.COPIER_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    alert = _hooked(webhook.url(f"/hooks/{TOKEN}"))
    assert (alert.status, alert.delivered) == ("sent", ["webhook"])
    assert webhook.paths == [f"/hooks/{TOKEN}"]


@db
def test_allow_private_lets_every_address_through(frozen_clock, webhook, settings):
    settings.COPIER_WEBHOOK_ALLOW_PRIVATE = True
    alert = _hooked(f"http://localhost:{webhook.port}/hooks/{TOKEN}")
    assert alert.status == "sent"
    assert webhook.hosts == [f"localhost:{webhook.port}"]  # the name, not the address


@db
def test_an_allow_list_allows_only_its_networks(frozen_clock, webhook, settings):
    settings.COPIER_WEBHOOK_ALLOWED_NETWORKS = ["10.0.0.0/8", "::1/128"]
    alert = _hooked(webhook.url(f"/hooks/{TOKEN}"))
    assert webhook.hosts == []
    assert alert.last_error.startswith(
        "webhook: webhook refused: the host 127.0.0.1 is a loopback address")


@pytest.fixture
def rebinding_dns(monkeypatch) -> list[str]:
    """`rebind.test` answers 127.0.0.2 (an address the operator allowed) the first time and
    127.0.0.1 (where the receiver is) afterwards: a DNS server that changes its answer
    between the check and the connection. Returns the names asked for."""
    asked: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "rebind.test":
            return real(host, port, *args, **kwargs)
        asked.append(host)
        address = "127.0.0.2" if len(asked) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port)))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


@db
def test_the_connection_goes_to_the_address_that_was_checked(
        frozen_clock, webhook, settings, rebinding_dns):
    settings.COPIER_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.2/32"]
    alert = _hooked(f"http://rebind.test:{webhook.port}/hooks/{TOKEN}")
    assert webhook.hosts == []  # 127.0.0.2 has no receiver: the second answer was not used
    assert rebinding_dns == ["rebind.test"]  # resolved once, by the check
    assert alert.last_error == "webhook: webhook unreachable (ConnectError)"


@db
def test_a_redirect_is_not_followed(frozen_clock, webhook, loopback_webhooks):
    elsewhere = WebhookReceiver()
    try:
        webhook.statuses = [302]
        webhook.location = elsewhere.url("/internal/admin")
        alert = _hooked(webhook.url(f"/hooks/{TOKEN}"))
        assert len(webhook.hosts) == 1
        assert elsewhere.hosts == []
        assert alert.last_error == (
            "webhook: webhook answered HTTP 302, a redirect (not followed)")
    finally:
        elsewhere.stop()


# --- in the form --------------------------------------------------------------------------


@db
@pytest.mark.parametrize(("url", "reason"), [
    ("http://127.0.0.1:8000/hooks/T0KEN", "the host 127.0.0.1 is a loopback address"),
    ("http://169.254.169.254/latest/meta-data/", "the host 169.254.169.254 is a link-local"),
    ("https://10.1.2.3/hooks/T0KEN", "the host 10.1.2.3 is a private address"),
    ("http://[fd00::1]/hooks/T0KEN", "the host fd00::1 is a private address"),
    ("http://localhost/hooks/T0KEN", "the host localhost resolves to "),
    ("http://2130706433/hooks/T0KEN", "the host 2130706433 resolves to 127.0.0.1, a loopback"),
])
def test_the_form_says_why_an_address_is_refused(frozen_clock, url, reason):
    g = group("g", account("L"), {account("F1"): "1"})
    form = AlertConfigForm(data={"group": g.pk, "emails": "", "webhook_url": url,
                                 "disconnect_after_seconds": 120})
    assert not form.is_valid()
    [message] = form.errors["webhook_url"]
    assert message.startswith(f"Refused: {reason}")
    assert message.endswith(f"Alerts are sent to public addresses only; {HINT}.")
    assert "T0KEN" not in message
    assert "meta-data" not in message
    assert not AlertConfig.objects.exists()


@db
def test_the_form_accepts_an_address_the_operator_allowed(frozen_clock, settings):
    settings.COPIER_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    g = group("g", account("L"), {account("F1"): "1"})
    form = AlertConfigForm(data={"group": g.pk, "emails": "",
                                 "webhook_url": "http://127.0.0.1:8000/hooks/x",
                                 "disconnect_after_seconds": 120})
    assert form.is_valid(), form.errors


# --- the judgement itself (no database) ---------------------------------------------------


@pytest.mark.parametrize(("address", "kind"), [
    ("8.8.8.8", None), ("2606:4700:4700::1111", None),
    ("127.0.0.1", "loopback"), ("127.255.0.9", "loopback"), ("::1", "loopback"),
    ("10.0.0.1", "private"), ("172.16.5.4", "private"), ("192.168.1.1", "private"),
    ("fc00::1", "private"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),  # noqa: S104 (judged, not bound)
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"), ("255.255.255.255", "reserved"),
    ("100.64.0.1", "non-public"), ("192.0.2.1", "private"),
])
def test_what_makes_an_address_non_public(address, kind):
    assert outbound.address_kind(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize(("address", "refusal"), [
    ("::ffff:10.0.0.1", "a private address (it carries 10.0.0.1)"),
    ("::ffff:8.8.8.8", None),
    ("2002:7f00:1::", "a loopback address (it carries 127.0.0.1)"),  # 6to4
    ("64:ff9b::7f00:1", "a reserved address"),  # NAT64, in ::/8
])
def test_an_ipv6_address_is_judged_by_the_ipv4_one_it_carries(address, refusal):
    assert outbound.Policy().refusal(ipaddress.ip_address(address)) == refusal


def test_an_allow_list_covers_the_carried_address_too():
    policy = outbound.Policy.of(allow_private=False, networks="127.0.0.0/8")
    assert policy.refusal(ipaddress.ip_address("::ffff:127.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("10.0.0.1")) == "a private address"
    assert outbound.Policy.of(allow_private=True, networks="").refusal(
        ipaddress.ip_address("10.0.0.1")) is None


@pytest.mark.parametrize("value", ["10.0.0.0/33", "localhost", "10.0.0.1/8", "fd00::/8;x"])
def test_a_bad_allow_list_is_a_clear_error(value):
    with pytest.raises(ValueError, match=r"COPIER_WEBHOOK_ALLOWED_NETWORKS: .* is not a network"):
        outbound.networks_parse(f"127.0.0.1, {value}")


# --- over https: the name is kept for TLS -------------------------------------------------


@pytest.fixture
def tls_receiver(tmp_path) -> Any:
    """An https receiver on 127.0.0.1 whose certificate names `hook.test` only, and a client
    context trusting it: the SNI and Host it was asked with are recorded."""
    import ssl
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hook.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("hook.test")]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    seen: dict[str, list[str]] = {"sni": [], "host": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen["host"].append(self.headers.get("Host", ""))
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    context.sni_callback = lambda _sock, sni, _ctx: seen["sni"].append(sni or "")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    yield server.server_address[1], ssl.create_default_context(cafile=str(cert_file)), seen
    server.shutdown()
    server.server_close()


def test_over_https_the_name_is_the_sni_and_the_certificate_is_checked_against_it(
        tls_receiver, monkeypatch):
    port, trusting, seen = tls_receiver
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, p: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "hook.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", int(p)))]
        return real(host, p, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    policy = outbound.Policy.of(allow_private=False, networks="127.0.0.0/8")
    target = outbound.url_target(f"https://hook.test:{port}/hooks/{TOKEN}", policy)
    assert target.addresses == (ipaddress.ip_address("127.0.0.1"),)
    response = outbound.post_json(target, {"text": "hi"}, timeout=5, verify=trusting)
    assert response.status_code == 200
    assert seen == {"sni": ["hook.test"], "host": [f"hook.test:{port}"]}
    # the certificate names hook.test, not the address: asked by address, it is refused
    by_address = outbound.url_target(f"https://127.0.0.1:{port}/hooks/{TOKEN}", policy)
    with pytest.raises(httpx.ConnectError):
        outbound.post_json(by_address, {"text": "hi"}, timeout=5, verify=trusting)
