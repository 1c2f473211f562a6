"""The words of a trade every floor uses: a side, a quantity as a position move, an
order's status, and how large a venue's own numbers may be.

Standard library only: the copy rules (copier.domain.rules) build on it and stay free of Django.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from enum import StrEnum

# A venue's own numbers (fill and trade ids, the fills cursor) are kept in 64-bit columns.
MAX_VENUE_ID = 2**63 - 1
# A price is kept with 6 decimals below 10**12 (a DecimalField(max_digits=18, decimal_places=6)).
PRICE_LIMIT = Decimal(10) ** 12
PRICE_STEP = Decimal("0.000001")


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


def signed(side: Side | str, qty: int) -> int:
    """A quantity as a position move: + buys, - sells. The one helper for it, the sim's too."""
    return qty if side == Side.BUY else -qty


def price_clean(price: object) -> Decimal:
    """A price a person, a test or the replay sets (the sim's quotes and fills, a local
    venue's): a finite number > 0 that its column can hold, else ValueError saying so.
    A bool is not a price, though Python counts it a number."""
    try:
        value = (Decimal(str(price)) if isinstance(price, int | float | str | Decimal)
                 and not isinstance(price, bool) else None)
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite() or value <= 0 or value >= PRICE_LIMIT:
        raise ValueError(f"a price must be a finite number > 0, got {price!r}")
    return value.quantize(PRICE_STEP)


class OrderStatus(StrEnum):
    """An order's status: the copier's record (copier.models.Order.Status takes its values
    from here) and a venue's answer (brokers.base.OrderResult) in one vocabulary, so that
    an answer is stored as it came, with no second spelling to drift from the first.

    A venue answers only `filled`, `accepted`, `rejected` or `cancelled` (VENUE_ANSWERS);
    the others are the copier's own: `submitting` while asked, `unknown` when the answer
    was lost, `failed` when it never reached the venue.
    """

    SUBMITTING = "submitting"
    ACCEPTED = "accepted"
    FILLED = "filled"
    REJECTED = "rejected"
    UNKNOWN = "unknown"
    FAILED = "failed"
    CANCELLED = "cancelled"


# What a venue may answer to a placement, a look-up or on its stream.
VENUE_ANSWERS: frozenset[OrderStatus] = frozenset({
    OrderStatus.FILLED, OrderStatus.ACCEPTED, OrderStatus.REJECTED, OrderStatus.CANCELLED})
# The orders whose latency (fill read -> the broker's answer) the console's cards and
# event page and the metrics count: one set, so that the three figures agree.
ANSWERED: frozenset[OrderStatus] = frozenset({
    OrderStatus.FILLED, OrderStatus.ACCEPTED, OrderStatus.REJECTED})
