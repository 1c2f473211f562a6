"""Sending one order to a broker through the Order state machine.

Shared by the copy engine and the Failed Exit Queue. The client order id is
deterministic, so a resend after a crash is recognised by the broker; where
an earlier try may have reached the broker (`look_up_first`, or an order whose
outcome was unknown), the broker is asked by client order id before anything
is sent again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from accounts.models import TradingAccount
from brokers.base import (
    BrokerAdapter,
    BrokerError,
    OrderOutcomeUnknown,
    OrderRequest,
    OrderResult,
    PermanentBrokerError,
)
from copier import clock, rules
from copier.models import Decision, FailedExit, Order

log = logging.getLogger(__name__)

ORDER_ID_PREFIXES = ("cp", "fx")


def is_copier_order_id(client_order_id: str | None) -> bool:
    """Fills carrying one of our ids are already counted when the order settles."""
    return bool(client_order_id) and client_order_id.startswith(ORDER_ID_PREFIXES)


def copy_order_id(event_id: int, account_id: int, leg_index: int) -> str:
    return f"cp{event_id}-{account_id}-{leg_index}"


def retry_order_id(failed_exit_id: int, attempt: int) -> str:
    return f"fx{failed_exit_id}-{attempt}"


@dataclass(frozen=True, slots=True)
class Sent:
    """What became of one order: filled quantity, or the error that stopped it."""

    order: Order
    filled: int
    error: BrokerError | None = None

    @property
    def permanent(self) -> bool:
        return self.error is not None and self.error.permanent


def _apply(order: Order, result: OrderResult) -> int:
    order.broker_order_id = result.broker_order_id
    order.message = result.message
    if result.status == "rejected":
        order.move_to(Order.Status.REJECTED)
        return 0
    order.filled_qty = result.filled_qty
    order.move_to(Order.Status.FILLED if result.status == "filled" else Order.Status.ACCEPTED)
    return result.filled_qty


def order_send(
    *,
    adapter: BrokerAdapter,
    account: TradingAccount,
    client_order_id: str,
    symbol: str,
    leg: rules.Leg,
    decision: Decision | None = None,
    failed_exit: FailedExit | None = None,
    look_up_first: bool = False,
) -> Sent:
    """Place one market order and record it; the caller holds the (account, symbol) lock."""
    now = clock.now()
    order = Order(
        client_order_id=client_order_id, account=account, symbol=symbol, side=leg.side,
        qty=leg.qty, kind=leg.kind, decision=decision, failed_exit=failed_exit, created_at=now,
    )
    order.move_to(Order.Status.SUBMITTING)
    order.submitted_at = now
    error: BrokerError | None = None
    filled = 0
    try:
        found = adapter.find_order(client_order_id) if look_up_first else None
        if found is None:
            found = adapter.place_order(
                OrderRequest(client_order_id, symbol, leg.side.value, leg.qty)  # type: ignore[arg-type]
            )
        filled = _apply(order, found)
    except OrderOutcomeUnknown as exc:
        filled, error = _resolve_unknown(adapter, order, exc)
    except PermanentBrokerError as exc:
        order.move_to(Order.Status.REJECTED)
        order.message = exc.message
        error = exc
    except BrokerError as exc:
        order.move_to(Order.Status.FAILED)
        order.message = exc.message
        error = exc
    order.completed_at = clock.now()
    if order.status != Order.Status.FAILED:
        # An attempt that never reached the broker is no order (COPY_RULES.md);
        # its error lives on the decision or the failed exit instead.
        order.save()
    if error is not None:
        log.warning("order %s on %s: %s", client_order_id, account.name, error.message)
    return Sent(order, filled, error)


def _resolve_unknown(
    adapter: BrokerAdapter, order: Order, exc: OrderOutcomeUnknown
) -> tuple[int, BrokerError | None]:
    """A timeout: ask the broker once whether the order exists before deciding anything."""
    order.move_to(Order.Status.UNKNOWN)
    order.message = exc.message
    try:
        found = adapter.find_order(order.client_order_id)
    except BrokerError as lookup_error:
        log.warning("look-up of %s failed: %s", order.client_order_id, lookup_error.message)
        return 0, exc
    if found is None:
        order.move_to(Order.Status.FAILED)
        return 0, exc
    return _apply(order, found), None


def unknown_orders_resolve(
    *, adapter: BrokerAdapter, failed_exit: FailedExit
) -> int:
    """Settle a failed exit's orders left `unknown`; returns the quantity they filled."""
    filled = 0
    for order in Order.objects.filter(failed_exit=failed_exit, status=Order.Status.UNKNOWN):
        found = adapter.find_order(order.client_order_id)
        if found is None:
            order.move_to(Order.Status.FAILED)
            order.message = "not found at the broker after a timeout"
        else:
            filled += _apply(order, found)
        order.completed_at = clock.now()
        order.save()
    return filled
