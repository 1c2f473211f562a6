"""The Gateway's records as the copier reads them: order statuses, sides, sizes, amounts.

Shared by the adapter (REST answers) and the stream (the hub's pushes), which carry the
same shapes: an order's `status` (ORDER_STATUS), `size` and `fillVolume`, a trade's
`side` (0 buy, 1 sell), a position's `type` (1 long, 2 short) and `size`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from brokers.base import OrderStatus, PermanentBrokerError, TransientBrokerError
from core.trading import Side

ORDER_STATUS: dict[Any, str] = {0: "none", 1: "open", 2: "filled", 3: "cancelled", 4: "expired",
                5: "rejected", 6: "pending"}
# The venue's order status -> the copier's, for an order that will not change any more.
SETTLED: dict[str, OrderStatus] = {
    "filled": OrderStatus.FILLED, "cancelled": OrderStatus.CANCELLED,
    "expired": OrderStatus.CANCELLED, "rejected": OrderStatus.REJECTED}
# Order/place errorCode -> (name, permanent). Permanent: a person must act (wrong
# account or contract, funds, rules, hours) and retrying the same order cannot help.
# OrderPending (6) and UnknownError (7) are transient: the venue did not say no to the
# order itself, and the copier's retry of an exit uses a new client order id.
PLACE_ERRORS: dict[int, tuple[str, bool]] = {
    1: ("AccountNotFound", True), 2: ("OrderRejected", True), 3: ("InsufficientFunds", True),
    4: ("AccountViolation", True), 5: ("OutsideTradingHours", True),
    6: ("OrderPending", False), 7: ("UnknownError", False), 8: ("ContractNotFound", True),
    9: ("ContractNotActive", True), 10: ("AccountRejected", True),
}


def when(stamp: Any) -> dt.datetime:
    """A venue time stamp; one without a zone is UTC, one it cannot read is now."""
    try:
        moment = dt.datetime.fromisoformat(str(stamp))
    except ValueError:
        return dt.datetime.now(dt.UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def since(delta: dt.timedelta) -> str:
    """A search's start, with the explicit +00:00 offset the Gateway is sent."""
    return (dt.datetime.now(dt.UTC) - delta).isoformat()


def side_of(value: Any) -> Side:
    if value == 0:
        return Side.BUY
    if value == 1:
        return Side.SELL
    raise TransientBrokerError(f"ProjectX: unknown side {value!r} in the venue's data")


def money(value: Any, trade: Mapping[str, Any]) -> Decimal:
    """An amount of a trade as the venue wrote it; one that is not a number is unreadable,
    and the whole P&L with it (a skipped trade would be a made-up total)."""
    try:
        amount = Decimal(str(value)) if not isinstance(value, bool) else None
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite():
        raise TransientBrokerError(
            f"ProjectX: trade {trade.get('id')} has an amount that is not a number: {value!r}")
    return amount


def amount(value: Any, what: str) -> Decimal:
    """A number of the venue's (a balance, a price, a tick size) as the copier values money
    with; one that is not a finite number cannot be valued, and nothing built on it either:
    PermanentBrokerError naming `what`, never a stand-in."""
    try:
        number = (Decimal(str(value)) if isinstance(value, int | float | str)
                  and not isinstance(value, bool) else None)
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite():
        raise PermanentBrokerError(f"ProjectX: {what} is not a number: {value!r}")
    return number


def filled_of(order: Mapping[str, Any]) -> int:
    """What an order filled so far, as the order itself says (`fillVolume`, or the alias
    `filledSize` some clients read)."""
    value = order.get("fillVolume", order.get("filledSize"))
    return int(value or 0) if not isinstance(value, bool) else 0


def settlement(status: OrderStatus, size: int, filled: int) -> tuple[OrderStatus, int]:
    """The copier's status and filled quantity of an order: a cancel that came after all
    of it filled is a fill; a rejected order filled nothing."""
    if status == "filled" or (status == "cancelled" and size and filled >= size):
        return OrderStatus.FILLED, filled or size
    if status == "rejected":
        return OrderStatus.REJECTED, 0
    return status, filled


def position_signed(data: Mapping[str, Any]) -> int:
    """The signed size of a position record; ValueError for one the venue did not document
    (a record, not the stream or the read, is then unreadable)."""
    size = data.get("size") or 0
    if isinstance(size, bool) or not isinstance(size, int):
        raise ValueError(f"ProjectX: position size {size!r} is not a whole number")
    if data.get("type") == 2:
        return -size
    if data.get("type") == 1 or size == 0:
        return size
    raise ValueError(f"ProjectX: position of undefined type {data.get('type')!r}")
