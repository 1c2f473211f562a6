"""Venue sessions at rest: the owning listener writes them, the workers read them.

A worker caches the session it read until shortly before it expires, so an
order costs no database read for it; a 401 from the venue (renewed elsewhere,
revoked) makes the adapter call `session_load(fresh=True)`.
"""

from __future__ import annotations

import datetime as dt
import threading

from brokers.base import Session
from brokers.models import BrokerSession
from copier import clock

# Read again this long before expiry: the listener renews well before that.
STALE_BEFORE_EXPIRY = dt.timedelta(minutes=2)

_cache: dict[int, Session] = {}
_cache_lock = threading.Lock()


def session_load(account_id: int, *, fresh: bool = False) -> Session | None:
    """The account's session if one is stored and still good, else None."""
    now = clock.now()
    if not fresh:
        with _cache_lock:
            cached = _cache.get(account_id)
        if cached is not None and cached.expires_at - STALE_BEFORE_EXPIRY > now:
            return cached
    row = BrokerSession.objects.filter(account_id=account_id, expires_at__gt=now).first()
    session = None if row is None else Session(token=str(row.token), expires_at=row.expires_at,
                                               data=dict(row.data))
    with _cache_lock:
        if session is None:
            _cache.pop(account_id, None)
        else:
            _cache[account_id] = session
    return session


def session_save(account_id: int, session: Session, *, obtained_by: str = "") -> None:
    BrokerSession.objects.update_or_create(
        account_id=account_id,
        defaults={"token": session.token, "expires_at": session.expires_at,
                  "data": dict(session.data), "obtained_at": clock.now(),
                  "obtained_by": obtained_by[:128]},
    )
    with _cache_lock:
        _cache[account_id] = session


def session_drop(account_id: int) -> None:
    """Forget a session the venue refused (revoked, logged out elsewhere)."""
    BrokerSession.objects.filter(account_id=account_id).delete()
    with _cache_lock:
        _cache.pop(account_id, None)
