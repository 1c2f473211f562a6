"""Broker kind -> adapter class, by dotted path (one place feeds the admin choices too)."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from accounts.models import TradingAccount
    from brokers.base import BrokerAdapter

BROKERS: dict[str, tuple[str, str]] = {
    "sim": ("brokers.sim.SimBroker", "Sim (paper broker)"),
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


def adapter_for(account: TradingAccount) -> BrokerAdapter:
    return adapter_class(account.broker)(account)
