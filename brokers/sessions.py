"""Venue sessions at rest: the owning listener writes them, the workers read them.

A worker caches the session it read until shortly before it expires, so an
order costs no database read for it; a 401 from the venue (renewed elsewhere,
revoked) makes the adapter call `session_load(fresh=True)`. A venue whose 401 means
the token itself is refused (ProjectX) drops the stored session when the fresh one is
refused as well (`session_drop`): the owning listener sees it gone at its next scan and
logs in again, instead of reopening its stream with a dead token until its expiry.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterable

from django.db import transaction

from brokers.base import Session
from brokers.models import BrokerSession
from core import clock

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


def session_drop(account_id: int, *, token: str | None = None) -> bool:
    """Forget a session the venue refused (revoked, logged out elsewhere); True if dropped.

    `token`: only if the stored session is still that one, so that a worker holding a
    refused token never drops the new session the listener has just stored. The token is
    encrypted at rest (no SQL comparison): the row is locked, read and compared.
    """
    with _cache_lock:
        cached = _cache.get(account_id)
        if token is None or (cached is not None and cached.token == token):
            _cache.pop(account_id, None)
    with transaction.atomic():
        row = BrokerSession.objects.select_for_update().filter(account_id=account_id).first()
        if row is None or (token is not None and str(row.token) != token):
            return False
        row.delete()
    return True


def sessions_stored(account_ids: Iterable[int]) -> set[int]:
    """Which of these accounts have a session stored (one query: the listener's scan)."""
    return set(BrokerSession.objects.filter(account_id__in=list(account_ids))
               .values_list("account_id", flat=True))
