"""The client's address, as far as the copier can trust it (login throttling keys on it).

Behind reverse proxies the peer (REMOTE_ADDR) is the nearest proxy, and the client's
address is in X-Forwarded-For, which each proxy extends with the address it was reached
from. Only the entries the operator's own proxies appended can be believed: whatever came
before them the client wrote itself. So the setting is a count, COPIER_TRUSTED_PROXIES:
with N proxies, the client is the N-th entry from the right; with 0 (the default) the
header is ignored, since anyone could send one naming a fresh address for every guess and
never be locked out.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def forwarded_client(remote_addr: str, forwarded_for: str, trusted_proxies: int) -> str:
    """The client's address given the peer, the X-Forwarded-For header and the number of
    trusted proxies in front. A header shorter than the proxies, or an entry that is no
    address, means the request did not come the way the operator said: the peer it is."""
    if trusted_proxies <= 0:
        return remote_addr
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    if len(hops) < trusted_proxies:
        return remote_addr
    try:
        return str(ipaddress.ip_address(hops[-trusted_proxies]))
    except ValueError:
        return remote_addr


def client_ip(request: HttpRequest) -> str:
    """django-axes' AXES_CLIENT_IP_CALLABLE."""
    return forwarded_client(request.META.get("REMOTE_ADDR", ""),
                            request.META.get("HTTP_X_FORWARDED_FOR", ""),
                            settings.COPIER_TRUSTED_PROXIES)
