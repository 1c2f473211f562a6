"""The venues' HTTP: a keep-alive pool per process, and what a failed request means.

Both REST venues (ProjectX, Tradovate) speak to their servers the same way, so the two
rules that decide the copier's next step live here once:

- A request that never left (connection refused, a connect or pool timeout) is plain
  transient: nothing ran. One that left and got no answer may have run: for a placement
  that is `OrderOutcomeUnknown`, and the copier looks the order up before sending again.
- An HTTP 5xx is not documented by either venue as "nothing ran": on a placement it is
  `OrderOutcomeUnknown` too. A 401 is `Unauthorized` (the request did not run; the venue
  re-reads its session), a rate limit is transient with the venue's wait, any other
  refusal is permanent and names the status, never the body: whatever answered may not
  be the venue, and its page is not for the admin to read through the copier.

`where` is the venue and the path ("ProjectX /api/Order/place"), the start of every message.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

import httpx

from brokers.base import (
    BrokerError,
    OrderOutcomeUnknown,
    PermanentBrokerError,
    TransientBrokerError,
    status_phrase,
)

# Short: a reconnect holds the account's position locks while it asks the venue.
TIMEOUT = httpx.Timeout(connect=2.0, read=5.0, write=5.0, pool=2.0)


class Unauthorized(TransientBrokerError):
    """HTTP 401: the token is refused (expired, renewed elsewhere, revoked); the request
    did not run, so sending it again with another token is safe."""


class Pool:
    """A venue's keep-alive pool in this process; a forked child builds its own, since
    sockets inherited across fork are shared with the parent."""

    def __init__(self, limits: httpx.Limits) -> None:
        self._limits = limits
        self._clients: dict[int, httpx.Client] = {}
        self._lock = threading.Lock()

    def client(self) -> httpx.Client:
        pid = os.getpid()
        with self._lock:
            client = self._clients.get(pid)
            if client is None:
                self._clients.clear()  # the parent's: never used, never closed here
                client = self._clients[pid] = httpx.Client(timeout=TIMEOUT,
                                                           limits=self._limits)
            return client


def lost(message: str, *, sending_order: bool) -> BrokerError:
    """A request that may have run: for an order, its outcome is unknown."""
    return OrderOutcomeUnknown(message) if sending_order else TransientBrokerError(message)


def request(client: httpx.Client, method: str, url: str, *, where: str, sending_order: bool,
            **kwargs: Any) -> httpx.Response:
    """The response, or the error a request that got none raises (see the docstring)."""
    try:
        return client.request(method, url, **kwargs)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise TransientBrokerError(f"{where}: unreachable ({type(exc).__name__})") from None
    except httpx.TransportError as exc:  # sent: it may have run
        raise lost(f"{where}: no answer ({type(exc).__name__})",
                   sending_order=sending_order) from None


def retry_after(response: httpx.Response, default: float | None) -> float | None:
    """The Retry-After seconds a venue sent, else `default` (a date or garbage is not a wait)."""
    value = response.headers.get("Retry-After", "").strip()
    return float(value) if value.replace(".", "", 1).isdigit() else default


def status_check(response: httpx.Response, *, where: str, sending_order: bool,
                 rate_limits: Mapping[int, float | None]) -> None:
    """Nothing for a 2xx; else the error the status means (see the module docstring).
    `rate_limits`: the venue's rate-limit statuses, with its wait when none is sent."""
    status = response.status_code
    if 200 <= status < 300:
        return
    if status == 401:
        raise Unauthorized(f"{where}: the session was refused (HTTP 401)")
    if status in rate_limits:
        raise TransientBrokerError(f"{where}: rate limited (HTTP {status})",
                                   retry_after=retry_after(response, rate_limits[status]))
    if status >= 500:
        message = f"{where}: HTTP {status}"
        raise lost(f"{message} after the order was sent: it may have executed"
                   if sending_order else message, sending_order=sending_order)
    raise PermanentBrokerError(f"{where}: HTTP {status} {status_phrase(status)}".strip())


def json_of(response: httpx.Response, *, where: str, sending_order: bool) -> Any:
    """The answer's JSON; an answer that is not JSON was garbled on its way, or came from
    something that is not the venue: for an order, what ran is unknown."""
    try:
        return response.json()
    except ValueError:
        raise lost(f"{where}: the answer is not JSON (HTTP {response.status_code})",
                   sending_order=sending_order) from None
