"""A venue's contract ids and names, learned once per process in both directions.

The copier's symbol is the contract's name (`ESZ6`); each venue numbers its contracts in
its own way, and one venue's environments (a demo and a live host, a prop firm's own
gateway) number them alike but not equally: every entry is keyed by the venue's base URL.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

Id = TypeVar("Id", int, str)


class ContractBook(Generic[Id]):
    """contract id <-> name, per base URL; safe across a worker's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._names: dict[tuple[str, Id], str] = {}
        self._ids: dict[tuple[str, str], Id] = {}

    def name(self, base: str, contract_id: Id) -> str | None:
        with self._lock:
            return self._names.get((base, contract_id))

    def id(self, base: str, name: str) -> Id | None:
        with self._lock:
            return self._ids.get((base, name))

    def learn(self, base: str, contract_id: Id, name: str) -> None:
        with self._lock:
            self._names[(base, contract_id)] = name
            self._ids[(base, name)] = contract_id
