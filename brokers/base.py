"""The broker adapter interface every venue implements, and its two error kinds.

The copy engine talks to brokers only through `BrokerAdapter`. Errors say
whether retrying can help, because that decides between the Failed Exit
Queue (transient) and a quarantine (permanent): see COPY_RULES.md.

An adapter module provides (the checklist for adding a broker, see README):

| member            | required | why                                                        |
|-------------------|----------|------------------------------------------------------------|
| `kind`            | yes      | registry key, stored on `TradingAccount.broker`            |
| `place_order`     | yes      | market order carrying the copier's client order id         |
| `find_order`      | yes      | look-up by client order id before anything is resent       |
| `positions`       | yes      | the Sync Divergence Guard compares these on reconnect      |
| `poll_events`     | yes      | the stream: fills, position updates, a lost connection     |
| `connect`/`disconnect` | yes | the listener's session lifecycle                           |
| `fills_cursor`    | no       | newest fill in the last `positions()`: late fills not recounted |

A `Fill` carries the broker's `seq` where the venue numbers its fills in order
(sim: its order id; Tradovate: the fill id; ProjectX: the trade id).
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

# The rules' vocabulary, re-exported for adapters: an order's side means one thing from
# the rules to the broker. The rules import only the standard library, so this makes no
# import circle (tests/test_import_graph.py).
from copier.rules import Side as Side
from copier.rules import signed as signed

if TYPE_CHECKING:
    from accounts.models import TradingAccount

PLACE_MANY_THREADS = 32


class BrokerError(Exception):
    """Base of every broker failure; `permanent` tells whether a retry can help."""

    permanent: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TransientBrokerError(BrokerError):
    """Unreachable, timeout, 5xx, rate limit: usually resolves itself, so exits are retried."""


class OrderOutcomeUnknown(TransientBrokerError):
    """The order may or may not have reached the broker (timeout after sending).

    Never resend blindly: look the client order id up first.
    """


class PermanentBrokerError(BrokerError):
    """Rejected for good (unknown symbol, margin, account closed): needs a person."""

    permanent = True


@dataclass(frozen=True, slots=True)
class OrderRequest:
    client_order_id: str
    symbol: str
    side: Side
    qty: int


@dataclass(frozen=True, slots=True)
class OrderResult:
    client_order_id: str
    broker_order_id: str
    status: Literal["filled", "accepted", "rejected"]
    filled_qty: int
    message: str = ""
    # What the broker has on record, where a look-up tells: after a crash the copier may
    # plan differently from the run that sent the order, and what went out is what counts.
    symbol: str | None = None
    side: Side | None = None
    qty: int | None = None


@dataclass(frozen=True, slots=True)
class Fill:
    """A fill seen on the account's stream; ours carry our client order id."""

    fill_id: str
    symbol: str
    side: Side
    qty: int
    time: dt.datetime
    client_order_id: str | None = None
    # The broker's own monotonic number of the fill, where it has one: a fill numbered at
    # or below a reconnect's `fills_cursor()` is already in the positions read then.
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class PositionUpdate:
    """The broker's net position on a symbol, as some venues stream it."""

    symbol: str
    qty: int


@dataclass(frozen=True, slots=True)
class ConnectionLost:
    reason: str = ""


# No "connection restored" event: the listener's next turn reconnects an account that is
# not connected, and only the positions read then say the connection is back.
BrokerEvent = Fill | PositionUpdate | ConnectionLost


class BrokerAdapter(abc.ABC):
    """One account's session at one broker."""

    kind: ClassVar[str]
    label: ClassVar[str]

    def __init__(self, account: TradingAccount) -> None:
        self.account = account

    @abc.abstractmethod
    def connect(self) -> None:
        """Open the session (log in, subscribe to the account's stream)."""

    @abc.abstractmethod
    def disconnect(self) -> None:
        """Close the session."""

    @abc.abstractmethod
    def place_order(self, request: OrderRequest) -> OrderResult:
        """Send a market order. Raises TransientBrokerError / PermanentBrokerError.

        Sending the same client order id twice must never execute twice.
        """

    @classmethod
    def place_many(
        cls, batch: Sequence[tuple[TradingAccount, OrderRequest]]
    ) -> list[OrderResult | BrokerError]:
        """Place orders on many accounts of this broker at once; errors are returned, not raised.

        A fan-out to hundreds of followers must not wait for each order in
        turn: by default the orders go out concurrently on threads (venues
        with an HTTP API spend their time waiting). An adapter with a native
        batch endpoint overrides this.
        """
        def one(item: tuple[TradingAccount, OrderRequest]) -> OrderResult | BrokerError:
            account, request = item
            try:
                return cls(account).place_order(request)
            except BrokerError as exc:
                return exc

        if len(batch) <= 1:
            return [one(item) for item in batch]
        with ThreadPoolExecutor(max_workers=min(PLACE_MANY_THREADS, len(batch))) as pool:
            return list(pool.map(one, batch))

    @abc.abstractmethod
    def find_order(self, client_order_id: str) -> OrderResult | None:
        """The broker's record of an order we sent, or None if it never arrived."""

    @abc.abstractmethod
    def positions(self) -> dict[str, int]:
        """Net position per symbol at the broker, flat symbols omitted."""

    def fills_cursor(self) -> int | None:
        """The `seq` of the newest fill reflected in this adapter's last `positions()` answer.

        A reconnect re-reads the positions, so the fills they include must not be
        counted again when the stream delivers them late. Read in the same snapshot
        as the positions, or a fill in between is counted twice or never. None: the
        broker does not number its fills, and the copier falls back to fill times.
        """
        return None

    @abc.abstractmethod
    def poll_events(self) -> list[BrokerEvent]:
        """Stream events received since the last poll, oldest first."""
