"""Sending one order to a broker through the Order state machine.

Shared by the copy engine and the Failed Exit Queue. The client order id is
deterministic, so a resend after a crash is recognised by the broker; where
an earlier try may have reached the broker (`look_up_first`, or an order whose
outcome was unknown), the broker is asked by client order id before anything
is sent again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from accounts.models import TradingAccount
from brokers.base import (
    BrokerAdapter,
    BrokerError,
    OrderOutcomeUnknown,
    OrderRequest,
    OrderResult,
)
from brokers.registry import adapter_class, adapter_for
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


@dataclass(frozen=True, slots=True)
class OrderSpec:
    """One order to place: where, what, and what it belongs to."""

    account: TradingAccount
    client_order_id: str
    symbol: str
    leg: rules.Leg
    decision: Decision | None = None
    failed_exit: FailedExit | None = None


def orders_place(specs: Sequence[OrderSpec], *, look_up_first: bool = False) -> list[Sent]:
    """Place many orders, batched per broker kind; the Order rows are returned unsaved.

    The caller holds the (account, symbol) locks and saves the rows (in bulk).
    `look_up_first`: an earlier run may have reached the broker (a crash), so
    each client order id is looked up before anything is sent.
    """
    now = clock.now()
    orders = []
    for spec in specs:
        order = Order(
            client_order_id=spec.client_order_id, account=spec.account, symbol=spec.symbol,
            side=spec.leg.side, qty=spec.leg.qty, kind=spec.leg.kind, decision=spec.decision,
            failed_exit=spec.failed_exit, created_at=now, submitted_at=now,
        )
        order.move_to(Order.Status.SUBMITTING)
        orders.append(order)
    outcomes: list[OrderResult | BrokerError | None] = [None] * len(specs)
    if look_up_first:
        for i, spec in enumerate(specs):
            outcomes[i] = _look_up(spec)
    by_kind: dict[str, list[int]] = {}
    for i, spec in enumerate(specs):
        if outcomes[i] is None:
            by_kind.setdefault(spec.account.broker, []).append(i)
    for kind, indexes in by_kind.items():
        results = adapter_class(kind).place_many(
            [(specs[i].account, _request(specs[i])) for i in indexes]
        )
        for i, result in zip(indexes, results, strict=True):
            outcomes[i] = result
    return [_settle(spec, order, outcome)  # type: ignore[arg-type]
            for spec, order, outcome in zip(specs, orders, outcomes, strict=True)]


def order_send(spec: OrderSpec, *, look_up_first: bool = False) -> Sent:
    """Place one order and save its row (the Failed Exit Queue's path)."""
    sent = orders_place([spec], look_up_first=look_up_first)[0]
    if sent.order.status != Order.Status.FAILED:
        sent.order.save()
    return sent


def _request(spec: OrderSpec) -> OrderRequest:
    return OrderRequest(spec.client_order_id, spec.symbol, spec.leg.side.value,  # type: ignore[arg-type]
                        spec.leg.qty)


def _look_up(spec: OrderSpec) -> OrderResult | BrokerError | None:
    try:
        return adapter_for(spec.account).find_order(spec.client_order_id)
    except BrokerError as exc:
        return exc


def _settle(spec: OrderSpec, order: Order, outcome: OrderResult | BrokerError) -> Sent:
    """Move the order's state machine to what the broker said."""
    error: BrokerError | None = None
    filled = 0
    if isinstance(outcome, OrderResult):
        filled = _apply(order, outcome)
    elif isinstance(outcome, OrderOutcomeUnknown):
        filled, error = _resolve_unknown(adapter_for(spec.account), order, outcome)
    else:
        order.move_to(Order.Status.REJECTED if outcome.permanent else Order.Status.FAILED)
        order.message = outcome.message
        error = outcome
    # An attempt that never reached the broker (FAILED) is no order (COPY_RULES.md):
    # callers do not save it; its error lives on the decision or the failed exit.
    order.completed_at = clock.now()
    if error is not None:
        log.warning("order %s on %s: %s", order.client_order_id, spec.account.name,
                    error.message)
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
