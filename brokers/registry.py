"""Broker kind -> adapter class, by dotted path (one place feeds the admin choices too).

`adapter_for` keeps one adapter per account and process: an adapter holds a warm
HTTP connection pool and the session it read, and building one per order would
throw both away. The instance is refreshed with the account row it is given, and
replaced when the account's broker kind or credentials change.
"""

from __future__ import annotations

import threading
from functools import cache
from typing import TYPE_CHECKING

from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from accounts.models import TradingAccount
    from brokers.base import BrokerAdapter

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


_adapters: dict[int, tuple[str, str, BrokerAdapter]] = {}
_adapters_lock = threading.Lock()


def adapter_for(account: TradingAccount) -> BrokerAdapter:
    """This process's adapter of the account (see the module's docstring)."""
    if account.pk is None:
        return adapter_class(account.broker)(account)
    identity = (account.broker, str(account.credentials or ""))
    with _adapters_lock:
        cached = _adapters.get(account.pk)
        if cached is not None and cached[:2] == identity:
            adapter = cached[2]
            adapter.account = account
            return adapter
        adapter = adapter_class(account.broker)(account)
        _adapters[account.pk] = (*identity, adapter)
        return adapter


def adapters_forget() -> None:
    """Drop every cached adapter (tests that rebuild the database; a forked child)."""
    with _adapters_lock:
        _adapters.clear()
