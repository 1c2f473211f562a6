"""Requests to an address a user typed: only to the public internet, and only where checked.

An alert webhook's URL is typed by whoever may edit a group's alert configuration, and
the worker that posts to it sits inside the operator's network: pointed at loopback, a
private range or a cloud's metadata address (169.254.169.254), it would make the worker
talk to services nobody exposed to that user (SSRF). So every address the host name
resolves to is judged at send time (a DNS answer can change after the form accepted
it), and the connection goes to the address that was judged: the request is sent to
that address, with the name kept in the Host header and for TLS (SNI and the
certificate's check), so the name is never resolved a second time (DNS rebinding).
Redirects are not followed, and no proxy from the environment is used (it would resolve
the name itself).

Addresses are judged after resolution, so every spelling of a host that the resolver
accepts (2130706433, 0x7f.1, 0177.0.0.1, [::ffff:127.0.0.1]) is judged by the address
it means. An operator allows non-public networks in settings: all of them
(`COPIER_WEBHOOK_ALLOW_PRIVATE=1`) or some (`COPIER_WEBHOOK_ALLOWED_NETWORKS`).
Django-free: the settings parse their allow-list with `networks_parse`.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Why an address is not public, tested in this order (0.0.0.0 is also "private" to Python,
# 255.255.255.255 also "reserved": the first word is the telling one).
_KINDS: tuple[tuple[str, Callable[[Address], bool]], ...] = (
    ("unspecified", lambda a: a.is_unspecified),
    ("loopback", lambda a: a.is_loopback),
    ("link-local", lambda a: a.is_link_local),
    ("multicast", lambda a: a.is_multicast),
    ("reserved", lambda a: a.is_reserved),
    ("private", lambda a: a.is_private),
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: an IPv4 address in its low bits
ALLOW_HINT = ("an operator can allow it with COPIER_WEBHOOK_ALLOWED_NETWORKS "
              "(e.g. 10.0.0.0/8) or COPIER_WEBHOOK_ALLOW_PRIVATE=1")


class BadUrl(ValueError):
    """Not an http(s) URL with a host. The message never repeats the URL (its token)."""


class AddressRefused(ValueError):
    """The URL's host is, or resolves to, an address that may not be spoken to."""


class HostUnresolved(OSError):
    """The host name has no address now (a typo, or DNS down): not a refusal."""


def networks_parse(value: str | Iterable[str]) -> tuple[Network, ...]:
    """`10.0.0.0/8, fd00::/8, 127.0.0.1` as networks; ValueError naming the bad entry."""
    items = value.split(",") if isinstance(value, str) else list(value)
    networks = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item))
        except ValueError:
            raise ValueError(
                f"COPIER_WEBHOOK_ALLOWED_NETWORKS: {item!r} is not a network (write e.g. "
                "10.0.0.0/8, fd00::/8 or 127.0.0.1, separated by commas)") from None
    return tuple(networks)


@dataclass(frozen=True, slots=True)
class Policy:
    """Which non-public addresses the operator allows: all, or those in `networks`."""

    allow_private: bool = False
    networks: tuple[Network, ...] = ()

    @classmethod
    def of(cls, *, allow_private: bool, networks: str | Iterable[str]) -> Policy:
        return cls(bool(allow_private), networks_parse(networks))

    def refusal(self, address: Address) -> str | None:
        """Why the address is refused, or None. An IPv6 address that carries an IPv4 one
        (mapped, 6to4, NAT64, Teredo) is judged by what it carries too."""
        if self.allow_private:
            return None
        for meaning in _meanings(address):
            kind = address_kind(meaning)
            if kind is not None and not any(meaning in n for n in self.networks):
                carried = f" (it carries {meaning})" if meaning != address else ""
                article = "an" if kind[0] in "aeiou" else "a"
                return f"{article} {kind} address{carried}"
        return None


def address_kind(address: Address) -> str | None:
    """What makes the address non-public ('loopback', 'private', ...); None when public."""
    for kind, test in _KINDS:
        if test(address):
            return kind
    return None if address.is_global else "non-public"


def _meanings(address: Address) -> list[Address]:
    if not isinstance(address, ipaddress.IPv6Address):
        return [address]
    if address.ipv4_mapped is not None:  # ::ffff:a.b.c.d is a.b.c.d on the wire
        return [address.ipv4_mapped]
    carried: list[Address] = [address]
    if address.sixtofour is not None:
        carried.append(address.sixtofour)
    if address.teredo is not None:
        carried.extend(address.teredo)
    if address in _NAT64:
        carried.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return carried


@dataclass(frozen=True, slots=True)
class Target:
    """A URL and the addresses its host was resolved to and judged by: where to connect."""

    url: httpx.URL
    addresses: tuple[Address, ...]


def url_target(url: str, policy: Policy) -> Target:
    """Resolve the URL's host now and judge every address it has (one refused refuses the
    URL: a name that also answers 127.0.0.1 is not a webhook's)."""
    try:
        parsed = httpx.URL(str(url))
    except (httpx.InvalidURL, ValueError, TypeError):
        raise BadUrl("is not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.raw_host:
        raise BadUrl("is not an http(s) URL with a host")
    host = parsed.raw_host.decode("ascii")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    addresses = host_resolve(host, port)
    for address in addresses:
        reason = policy.refusal(address)
        if reason is not None:
            said = "is" if _literal(host, address) else f"resolves to {address},"
            raise AddressRefused(f"the host {host} {said} {reason}")
    return Target(parsed, addresses)


def _literal(host: str, address: Address) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")) == address
    except ValueError:
        return False


def host_resolve(host: str, port: int) -> tuple[Address, ...]:
    """Every address of the host, in the resolver's order, each once."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise HostUnresolved("the host name does not resolve") from None
    found: dict[Address, None] = {}
    for _family, _type, _proto, _canon, sockaddr in infos:
        found[ipaddress.ip_address(str(sockaddr[0]).split("%")[0])] = None
    if not found:
        raise HostUnresolved("the host name has no address")
    return tuple(found)


def post_json(target: Target, payload: Mapping[str, Any], *, timeout: float,
              verify: ssl.SSLContext | bool = True) -> httpx.Response:
    """POST to the target's judged addresses, the next one only when one refuses the
    connection; never a redirect followed, never the name resolved again. Over https the
    certificate is checked against the name (SNI), not the address connected to."""
    url = target.url
    headers = {"Host": url.netloc.decode("ascii")}
    extensions = ({"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https"
                  else {})
    refused: httpx.ConnectError | None = None
    with httpx.Client(trust_env=False, follow_redirects=False, timeout=timeout,
                      verify=verify) as client:
        for address in target.addresses:
            try:
                return client.post(url.copy_with(host=str(address)), json=dict(payload),
                                   headers=headers, extensions=extensions)
            except httpx.ConnectError as exc:
                refused = exc
    assert refused is not None  # a target has at least one address
    raise refused
