"""Sending one order to a broker through the Order state machine.

Shared by the copy engine and the Failed Exit Queue. The client order id is
deterministic, so a resend after a crash is recognised by the broker; where
an earlier try may have reached the broker (`look_up_first`, or an order whose
outcome was unknown), the broker is asked by client order id before anything
is sent again.

An order whose outcome the copier could not establish (a timeout, then a
look-up that failed too) is kept `unknown` until the broker says what
happened; whatever settles it (a look-up, the stream's fill) settles the
queued exit it left behind too, and nothing more is sent for that
(follower, symbol) meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from accounts.models import TradingAccount
from brokers.base import (
    BrokerError,
    Fill,
    OrderOutcomeUnknown,
    OrderRequest,
    OrderResult,
    PermanentBrokerError,
    TransientBrokerError,
)
from brokers.registry import adapter_class, adapter_for
from copier import clock, rules, sql
from copier.models import Decision, FailedExit, Order, Quarantine
from copier.services.quarantine import quarantine_create

log = logging.getLogger(__name__)

def order_of_fill(account: TradingAccount, fill: Fill) -> Order | None:
    """The copier's order a follower's fill belongs to; None: the fill is the trader's.

    An order of the copier's is one it recorded on that account: the fill names it by our
    exact client order id, or by the broker's id for it (a venue whose stream could not
    learn the tag). What a tag looks like decides nothing: a trader's script may name its
    orders anything, `cp123-...` or `flatten-all-0931` (COPY_RULES "Current follower
    position"). The caller holds the position's lock: an order being placed for it is on
    record (committed) by then, or never will be (rolled back).
    """
    orders = Order.objects.filter(account=account).select_related("failed_exit")
    if fill.client_order_id:
        order = orders.filter(client_order_id=fill.client_order_id).first()
        if order is not None:
            return order
    if fill.broker_order_id:
        return orders.filter(broker_order_id=fill.broker_order_id).first()
    return None


def _fills_claimed(order: Order, result: OrderResult) -> int:
    """What fills the stream counted as the trader's hold of this order, now recorded.

    They came while no row of the copier's owned them: the run that sent the order
    crashed after the broker executed it and its transaction rolled back. Their move
    is in the position already; the order is recorded with them counted, so that the
    look-up that found it moves the position by the rest only (never twice). Only an
    order not yet counted in part can have such fills (a new row, or one `unknown`).
    """
    if result.status == "rejected" or order.status not in (Order.Status.SUBMITTING,
                                                            Order.Status.UNKNOWN):
        return 0
    return sql.follower_fills_claim(account_id=order.account_id,
                                    side=str(result.side or order.side),
                                    client_order_id=order.client_order_id,
                                    broker_order_id=result.broker_order_id or "")


def copy_order_id(event_id: int, account_id: int, leg_index: int) -> str:
    return f"cp{event_id}-{account_id}-{leg_index}"


def retry_order_id(failed_exit_id: int, attempt: int) -> str:
    return f"fx{failed_exit_id}-{attempt}"


def flatten_order_id(action_id: int, account_id: int, position_id: int) -> str:
    """A flatten's closing order: one per (action, account, symbol), the symbol by its
    position row (a symbol may hold characters a venue refuses in a client id)."""
    return f"fl{action_id}-{account_id}-{position_id}"


class LookUpFailed(OrderOutcomeUnknown):
    """The broker could not be asked whether an earlier try of this order went out."""


@dataclass(frozen=True, slots=True)
class Sent:
    """What became of one order: filled quantity, or the error that stopped it."""

    order: Order
    filled: int
    error: BrokerError | None = None

    @property
    def permanent(self) -> bool:
        return self.error is not None and self.error.permanent

    @property
    def moved(self) -> int:
        """The signed move of the position: the side the broker executed, not the plan's."""
        return rules.signed(self.order.side, self.filled)


def result_apply(order: Order, result: OrderResult, *,
                 looked_up: bool = False) -> tuple[int, BrokerError | None]:
    """The broker's answer, from a placement or a look-up: a rejection is a rejection
    however the copier learns of it. Returns (quantity newly filled, error).

    Newly: an order the copier already counted in part (a working order's fills seen
    on the stream) moves the position only by what the broker reports beyond that.
    `looked_up`: the answer is a look-up's, about an order an earlier try may have sent:
    fills of it the stream counted as the trader's, before it was on record, are its
    own (`_fills_claimed`). A placement's own answer needs no such search: the fills of
    an order being placed wait on the position's lock until its row is committed.
    """
    claimed = _fills_claimed(order, result) if looked_up else 0
    order.broker_order_id = result.broker_order_id
    order.message = result.message
    if result.acknowledged_at is not None:
        order.acknowledged_at = result.acknowledged_at
    if result.side is not None and result.qty:  # what went out is what counts
        order.side, order.qty = result.side, result.qty
    if result.status == "rejected":
        order.move_to(Order.Status.REJECTED)
        return 0, PermanentBrokerError(result.message or "rejected by the broker")
    counted = order.filled_qty if order.status == Order.Status.ACCEPTED else claimed
    order.filled_qty = max(counted, result.filled_qty)
    order.move_to(Order.Status.FILLED if result.status == "filled" else Order.Status.ACCEPTED)
    return order.filled_qty - counted, None


@dataclass(frozen=True, slots=True)
class OrderSpec:
    """One order to place: where, what, and what it belongs to."""

    account: TradingAccount
    client_order_id: str
    symbol: str
    leg: rules.Leg
    decision: Decision | None = None
    failed_exit: FailedExit | None = None

    def order(self) -> Order:
        now = clock.now()
        order = Order(
            client_order_id=self.client_order_id, account=self.account, symbol=self.symbol,
            side=self.leg.side, qty=self.leg.qty, kind=self.leg.kind, decision=self.decision,
            failed_exit=self.failed_exit, created_at=now, submitted_at=now,
            status=Order.Status.SUBMITTING,  # while the broker is asked; never stored so
        )
        return order


Outcome = OrderResult | BrokerError | None


def orders_place(specs: Sequence[OrderSpec], *, look_up_first: bool = False) -> list[Sent]:
    """Place many orders, batched per broker kind; the Order rows are returned unsaved.

    The caller holds the (account, symbol) locks and saves the rows (in bulk),
    except those left `failed` (never reached the broker: no order).
    `look_up_first`: an earlier run may have reached the broker (a crash), so
    each client order id is looked up before anything is sent; one that cannot
    be looked up is not sent and stays `unknown`.
    """
    orders = [spec.order() for spec in specs]
    outcomes: list[Outcome] = [None] * len(specs)
    if look_up_first:
        for i, spec in enumerate(specs):
            outcomes[i] = _look_up(spec.account, spec.client_order_id)
    by_kind: dict[str, list[int]] = {}
    for i, spec in enumerate(specs):
        if outcomes[i] is None:
            by_kind.setdefault(spec.account.broker, []).append(i)
    for kind, indexes in by_kind.items():
        for i, result in zip(indexes, _place_many(kind, [specs[i] for i in indexes]), strict=True):
            outcomes[i] = result
    return [_settle(spec, order, outcome, looked_up=look_up_first)
            for spec, order, outcome in zip(specs, orders, outcomes, strict=True)]


def order_not_sent(spec: OrderSpec, error: BrokerError) -> Sent:
    """An order the copier itself holds back (denied, or blocked behind an unknown one):
    it never reaches the broker, so it is no order; its error decides what follows."""
    order = spec.order()
    order.move_to(Order.Status.FAILED)
    order.message = error.message
    order.completed_at = clock.now()
    return Sent(order, 0, error)


def order_in_doubt(spec: OrderSpec, reason: str) -> Sent:
    """An order an earlier run may have sent, that cannot be asked about now: on record as
    `unknown`, so that it is looked up before anything else goes out."""
    order = spec.order()
    order.move_to(Order.Status.UNKNOWN)
    order.message = reason
    return Sent(order, 0, OrderOutcomeUnknown(reason))


COMPARISON_PENDING = ("the broker differs from the copier since the reconnect, whose "
                      "comparison waits for a copy in flight: nothing new is sent until then")


def order_looked_up_only(spec: OrderSpec, reason: str) -> Sent:
    """An order that may go no further than a look-up: what an earlier try sent is asked
    about by its client order id and recorded as the broker reports it; an order the
    broker never had is not sent (`reason`, transient: an exit waits in the queue); one
    that cannot be asked about is on record `unknown`, as after any failed look-up."""
    found = _look_up(spec.account, spec.client_order_id)
    if found is None:
        return order_not_sent(spec, TransientBrokerError(reason))
    return _settle(spec, spec.order(), found, looked_up=True)


def order_send(spec: OrderSpec, *, look_up_first: bool = False) -> Sent:
    """Place one order and save its row (the Failed Exit Queue's path)."""
    sent = orders_place([spec], look_up_first=look_up_first)[0]
    if sent.order.status != Order.Status.FAILED:
        sent.order.save()
    return sent


def _place_many(kind: str, specs: Sequence[OrderSpec]) -> list[OrderResult | BrokerError]:
    batch = [(spec.account, _request(spec)) for spec in specs]
    try:
        return adapter_class(kind).place_many(batch)
    except Exception as exc:  # an adapter's bug must not fail the other followers
        log.exception("%s adapter failed placing %d orders", kind, len(batch))
        return [OrderOutcomeUnknown(f"adapter error: {exc}") for _ in batch]


def _request(spec: OrderSpec) -> OrderRequest:
    return OrderRequest(spec.client_order_id, spec.symbol, spec.leg.side, spec.leg.qty)


def _look_up(account: TradingAccount, client_order_id: str) -> OrderResult | BrokerError | None:
    try:
        return adapter_for(account).find_order(client_order_id)
    except Exception as exc:  # BrokerError or an adapter's bug: either way, not known
        message = exc.message if isinstance(exc, BrokerError) else repr(exc)
        return LookUpFailed(f"look-up of {client_order_id} failed: {message}")


def _settle(spec: OrderSpec, order: Order, outcome: Outcome, *, looked_up: bool) -> Sent:
    """Move the order's state machine to what the broker said (`looked_up`: a look-up's
    answer, see `result_apply`)."""
    error: BrokerError | None = None
    filled = 0
    if isinstance(outcome, OrderResult):
        filled, error = result_apply(order, outcome, looked_up=looked_up)
    elif isinstance(outcome, LookUpFailed):
        order.move_to(Order.Status.UNKNOWN)
        order.message, error = outcome.message, outcome
    elif isinstance(outcome, OrderOutcomeUnknown):
        filled, error = _resolve_unknown(spec.account, order, outcome)
    elif outcome is not None:
        order.move_to(Order.Status.REJECTED if outcome.permanent else Order.Status.FAILED)
        order.message = outcome.message
        error = outcome
    # An attempt that never reached the broker (FAILED) is no order (COPY_RULES.md):
    # callers do not save it; its error lives on the decision or the failed exit.
    if order.status != Order.Status.UNKNOWN:
        order.completed_at = clock.now()
    if error is not None:
        log.warning("order %s on %s: %s", order.client_order_id, spec.account.name,
                    error.message)
    return Sent(order, filled, error)


def _resolve_unknown(
    account: TradingAccount, order: Order, exc: OrderOutcomeUnknown
) -> tuple[int, BrokerError | None]:
    """A timeout: ask the broker once whether the order exists before deciding anything."""
    order.move_to(Order.Status.UNKNOWN)
    order.message = exc.message
    found = _look_up(account, order.client_order_id)
    if isinstance(found, BrokerError):
        log.warning("%s", found.message)
        return 0, exc
    if found is None:
        order.move_to(Order.Status.FAILED)
        return 0, exc
    return result_apply(order, found, looked_up=True)


@dataclass(frozen=True, slots=True)
class Settled:
    """What asking the broker about a (follower, symbol)'s unknown orders found."""

    moved: int = 0  # signed move of the position by the orders that filled
    blocked: str = ""  # why nothing may be sent yet: an order whose outcome is still unknown
    exits: dict[int, str] = field(default_factory=dict)  # queued exits settled: id -> status


def unknown_orders_settle(*, account: TradingAccount, symbol: str,
                          working_too: bool = False) -> Settled:
    """Ask the broker about every order of (account, symbol) whose outcome is unknown.

    The caller holds the position's lock and moves it by `moved`. An order the
    broker filled or rejected settles the queued exit it left behind; one that
    never arrived is `failed` (its queued exit will send it); one that still
    cannot be asked about stays `unknown` and blocks the (follower, symbol).
    `working_too`: orders accepted and not yet filled are asked about as well (a
    reconnect: their fills may have happened while the stream was down, and the
    positions read then would show them as nobody's).
    """
    statuses = [Order.Status.UNKNOWN, *([Order.Status.ACCEPTED] if working_too else [])]
    moved, blocked, exits = 0, "", {}
    for order in (Order.objects.filter(account=account, symbol=symbol, status__in=statuses)
                  .select_related("failed_exit").order_by("id")):
        order.account = account
        found = _look_up(account, order.client_order_id)
        if isinstance(found, BrokerError):
            if order.status == Order.Status.UNKNOWN:
                blocked = f"order {order.client_order_id}: outcome unknown ({found.message})"
            else:  # a working order stays what it is; its fills still come on the stream
                blocked = f"order {order.client_order_id}: look-up failed ({found.message})"
            continue
        if found is None:
            if order.status == Order.Status.ACCEPTED:
                continue  # the broker acknowledged it: a look-up that misses it proves nothing
            order.move_to(Order.Status.FAILED)
            order.message = "not found at the broker after a timeout"
        else:
            filled, _error = result_apply(order, found, looked_up=True)
            moved += rules.signed(order.side, filled)
            settled = order_failed_exit_settle(order)
            if settled and order.failed_exit_id is not None:
                exits[order.failed_exit_id] = settled
        if order.status != Order.Status.ACCEPTED:
            order.completed_at = clock.now()
        order.save()
    return Settled(moved, blocked, exits)


def order_fill_add(order: Order, qty: int) -> int:
    """A fill of our order seen on the stream, for an order left unknown or working:
    counted toward it, up to what was ordered; the order is filled once all of it is, and
    a queued exit it was sent for is settled. The caller holds the position's lock and
    moves it by the quantity returned (a venue may fill an order in several parts)."""
    if order.status == Order.Status.UNKNOWN:  # its first fill seen: any counted before?
        counted = sql.follower_fills_claim(account_id=order.account_id, side=order.side,
                                           client_order_id=order.client_order_id,
                                           broker_order_id=order.broker_order_id)
    else:
        counted = order.filled_qty if order.status == Order.Status.ACCEPTED else 0
    added = max(0, min(qty, order.qty - counted))
    order.filled_qty = counted + added
    done = order.filled_qty >= order.qty
    order.move_to(Order.Status.FILLED if done else Order.Status.ACCEPTED)
    if done:
        order.completed_at = clock.now()
    order.save(update_fields=["status", "filled_qty", "completed_at"])
    order_failed_exit_settle(order)
    return added


def order_failed_exit_settle(order: Order) -> str:
    """A queued exit whose order turned out filled is done; rejected, it is rejected.
    Returns the status it was given ('' when untouched)."""
    if order.status == Order.Status.FILLED or (
        order.status == Order.Status.ACCEPTED and order.filled_qty
    ):
        status, note = FailedExit.Status.DONE, f"settled: {order.client_order_id} filled"
    elif order.status == Order.Status.REJECTED:
        status, note = FailedExit.Status.REJECTED, order.message
    else:
        return ""
    fe = order.failed_exit
    if fe is None or not fe.can_move_to(status):  # nothing queued for it, or settled already
        return ""
    # Conditional on the row too: its status in the table may have moved since it was read
    # (a claim for an attempt), and it must still be one that may move there.
    if not FailedExit.objects.filter(pk=fe.pk, status__in=FailedExit.moving_to(status)).update(
        status=status, last_error=note[:2000], in_flight_since=None, updated_at=clock.now()
    ):
        return ""
    fe.move_to(status)
    if status == FailedExit.Status.REJECTED:
        quarantine_create(account=order.account, symbol=order.symbol, event=fe.event,
                          reason=Quarantine.Reason.REJECTED, detail=order.message)
    log.info("failed exit %s %s: %s", fe.pk, status, note)
    return status
