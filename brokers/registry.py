"""Broker kind -> adapter class, by dotted path (one place feeds the admin choices too).

`adapter_for` keeps one adapter per account and process: an adapter holds a warm
HTTP connection pool and the session it read, and building one per order would
throw both away. The instance is refreshed with the account row it is given, and
replaced when the account's broker kind or credentials change (told by the digest
of the stored token, `credentials_md5` of the account's row, which needs no decryption).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from django.utils.module_loading import import_string

from core.fields import Secret

if TYPE_CHECKING:
    from brokers.base import AccountData, BrokerAdapter

BROKERS: dict[str, tuple[str, str]] = {
    "sim": ("brokers.sim.SimBroker", "Sim (paper broker)"),
    "projectx": ("brokers.projectx.ProjectXBroker", "ProjectX Gateway (TopstepX, prop firms)"),
    "tradovate": ("brokers.tradovate.TradovateBroker", "Tradovate / NinjaTrader"),
}


def broker_choices() -> list[tuple[str, str]]:
    return [(kind, label) for kind, (_path, label) in BROKERS.items()]


@cache
def adapter_class(kind: str) -> type[BrokerAdapter]:
    try:
        path, _label = BROKERS[kind]
    except KeyError:
        raise ValueError(f"unknown broker kind {kind!r}; known: {', '.join(BROKERS)}") from None
    adapter: type[BrokerAdapter] = import_string(path)
    return adapter


@dataclass(frozen=True, slots=True)
class _Cached:
    broker: str
    credentials: str  # as the adapter was built with them
    digest: str | None  # of the stored token, where read with the row (see adapter_for)
    adapter: BrokerAdapter


_adapters: dict[int, _Cached] = {}
_adapters_lock = threading.Lock()


def adapter_for(account: AccountData) -> BrokerAdapter:
    """This process's adapter of the account (see the module's docstring).

    An account row read with its credentials is compared by them. One read without
    them (the copy's lock statement leaves them out) is compared by the stored token's
    digest, which the same read brought (`credentials_md5`), and gets
    the cached credentials: no second read and decryption per order. A digest is only
    trusted from such a read: on an instance saved in this process it may be stale.
    """
    if account.pk is None:
        return adapter_class(account.broker)(account)
    loaded = "credentials" in account.__dict__
    with _adapters_lock:
        cached = _adapters.get(account.pk)
        if cached is not None and cached.broker == account.broker and (
                cached.credentials == str(account.credentials or "") if loaded
                else cached.digest is not None and cached.digest == account.credentials_md5):
            if not loaded:
                account.credentials = Secret(cached.credentials)
            cached.adapter.account = account
            return cached.adapter
        digest = None if loaded else account.credentials_md5
        adapter = adapter_class(account.broker)(account)
        _adapters[account.pk] = _Cached(account.broker, str(account.credentials or ""), digest,
                                        adapter)
        return adapter


def adapters_forget() -> None:
    """Drop every cached adapter (tests that rebuild the database; a forked child)."""
    with _adapters_lock:
        _adapters.clear()
