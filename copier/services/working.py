"""Orders in flight: no decision on a position that a working order will still change.

Real venues acknowledge an order before it fills, fill it in parts and may cancel
the rest. While an order of the copier's works at the broker (`accepted`), its
(follower, symbol) is held: the engine leaves later leader events undecided for
that follower (others go on), the Failed Exit Queue's attempts wait, and the legs
of its plan after a working exit are kept `waiting` on its decision, which stays
open. When the order settles (`placement.order_settled`: its last fill on the
stream, a look-up, the broker's cancel, or the copier's own cancel once
`COPIER_WORKING_ORDER_SECONDS` have passed), `orders_settled_continue` settles the
decision, sends the legs that waited (only after their exit filled in full), and
publishes again what waited: the events in flight for the follower and its due
queued exits, in the events' order, each with its own P0 and P1.

Every step is idempotent against the rows, and a lost message is caught by the
periodic `working_orders_sweep`.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.conf import settings
from django.db import transaction

from accounts.models import Position
from brokers.base import BrokerError
from brokers.registry import adapter_for
from copier import publisher, sql
from copier.domain import rules
from copier.models import Decision, FailedExit, LeaderEvent, Order, Quarantine
from copier.services.engine import event_seats
from copier.services.placement import (
    OrderSpec,
    Sent,
    copy_order_id,
    order_settled,
    orders_place,
    result_apply,
    working_expiry_schedule,
)
from copier.services.positions import position_lock, positions_save
from copier.services.quarantine import quarantine_create
from core import clock
from core.trading import Side, signed

log = logging.getLogger(__name__)

SWEEP_LIMIT = 500


def working_order_expire(*, order_id: int) -> str:
    """Cancel the order at the broker if it is still working after its time; it then
    settles from what filled, like a cancel by the broker. Returns what happened."""
    row = Order.objects.filter(pk=order_id).values("account_id", "symbol").first()
    if row is None:
        return "no such order"
    with transaction.atomic():
        position = position_lock(row["account_id"], row["symbol"])
        order = Order.objects.select_related("failed_exit", "decision").get(pk=order_id)
        if order.status != Order.Status.ACCEPTED:
            return "settled already"
        if order.submitted_at and clock.now() < order.submitted_at + _working_time():
            return "not due"  # an early delivery: the sweep or its own task comes back
        order.account = account = position.account
        if not account.is_connected:
            return "disconnected: asked about at the reconnect"
        try:
            result = adapter_for(account).order_cancel(order.client_order_id)
        except BrokerError as exc:
            log.warning("cancelling working order %s on %s failed: %s",
                        order.client_order_id, account.name, exc.message)
            return f"cancel failed: {exc.message}"
        if result is None:
            log.error("working order %s on %s: the broker does not know it",
                      order.client_order_id, account.name)
            return "not found at the broker"
        filled, _error = result_apply(order, result)
        position.qty += signed(order.side, filled)
        if order.status == Order.Status.ACCEPTED:
            return "still working"
        order.completed_at = clock.now()
        order.message = (f"cancelled by the copier after {_working_time().total_seconds():g} s"
                         f" working; {order.filled_qty} of {order.qty} filled")[:2000]
        order.save()
        order_settled(order)
        positions_save([position])
    log.info("working order %s on %s: %s", order.client_order_id, account.name, order.message)
    return str(order.status)


def _working_time() -> dt.timedelta:
    return dt.timedelta(seconds=settings.COPIER_WORKING_ORDER_SECONDS)


def working_orders_sweep() -> dict[str, int]:
    """The periodic net: working orders past their time (their expiry task was lost), and
    open decisions whose orders have all settled (their continuation was lost)."""
    cutoff = clock.now() - _working_time()
    due = list(Order.objects.filter(status=Order.Status.ACCEPTED, submitted_at__lte=cutoff)
               .order_by("id").values_list("id", flat=True)[:SWEEP_LIMIT])
    for order_id in due:
        working_order_expire(order_id=order_id)
    open_pairs = set(
        Decision.objects.filter(settled_at__isnull=True).exclude(
            account__orders__status=Order.Status.ACCEPTED)
        .values_list("account_id", "symbol")[:SWEEP_LIMIT])
    for account_id, symbol in sorted(open_pairs):
        orders_settled_continue(account_id=account_id, symbol=symbol)
    return {"expired": len(due), "continued": len(open_pairs)}


def orders_settled_continue(*, account_id: int, symbol: str) -> None:
    """What waited for (account, symbol)'s working orders goes on, once none works.

    The open decisions are settled first, oldest first (the legs that waited are sent
    or dropped), then the leader events in flight for the follower and its due queued
    exits are published again: they are decided and attempted on what is held now.
    """
    with transaction.atomic():
        position = position_lock(account_id, symbol)
        if position.working_orders:
            return  # another order still works: its settlement continues
        for decision in (Decision.objects.filter(account_id=account_id, symbol=symbol,
                                                 settled_at__isnull=True)
                         .select_related("event").order_by("id")):
            _decision_settle(decision, position)
        positions_save([position])
    _waiting_publish(account_id, symbol)


def _decision_settle(decision: Decision, position: Position) -> None:
    """Close an open decision: each sent leg's outcome as its order settled, the waiting
    legs sent if every exit before them filled in full, else dropped (`failed`)."""
    legs: list[dict[str, Any]] = [dict(leg) for leg in decision.placed_legs]
    exits_filled = _sent_legs_settle(decision, legs)
    notes = _waiting_legs_settle(decision, position, legs, exits_filled=exits_filled)
    outcomes = [(_leg(leg), rules.LegOutcome(leg["outcome"])) for leg in legs]
    decision.reason = rules.placement_reason(rules.Reason(decision.reason), outcomes)
    decision.placed_legs = legs
    decision.position_after = position.qty
    decision.notes = [*(decision.notes or []), *(note.to_json() for note in notes)]
    decision.settled_at = clock.now()
    decision.save(update_fields=["reason", "placed_legs", "position_after", "notes",
                                 "settled_at"])


def _sent_legs_settle(decision: Decision, legs: list[dict[str, Any]]) -> bool:
    """Each sent leg's outcome as its order settled; whether every exit filled in full
    (only then may the legs that waited for them go)."""
    orders = {o.client_order_id: o for o in decision.orders.all()}
    exits_filled = True
    for index, leg in enumerate(legs):
        order = orders.get(_leg_order_id(decision, index))
        if order is None or leg["outcome"] != rules.LegOutcome.PLACED:
            continue
        leg["outcome"] = _settled_outcome(leg, order)
        if leg["kind"] == rules.LegKind.EXIT and (order.status != Order.Status.FILLED
                                                  or order.unfilled):
            exits_filled = False
    return exits_filled


def _settled_outcome(leg: dict[str, Any], order: Order) -> str:
    """A placed leg's outcome once its order settled (kept `placed` when it filled)."""
    if order.status == Order.Status.REJECTED:
        return rules.LegOutcome.REJECTED
    if leg["kind"] == rules.LegKind.EXIT and order.unfilled:
        return rules.LegOutcome.QUEUED  # the rest: queued when it settled
    if order.status == Order.Status.CANCELLED:
        return rules.LegOutcome.FAILED  # an entry ended unfilled: not resent
    return leg["outcome"]


def _waiting_legs_settle(decision: Decision, position: Position, legs: list[dict[str, Any]],
                         *, exits_filled: bool) -> list[rules.Note]:
    """The legs that waited for their exit: sent if it filled in full and nothing since
    stops copying (`_entries_held`), else dropped (`failed`) with a note saying why."""
    waiting = [i for i, leg in enumerate(legs) if leg["outcome"] == rules.LegOutcome.WAITING]
    if not waiting:
        return []
    held = _entries_held(position) if exits_filled else "the exit before it did not fill"
    if not held:
        return _waiting_send(decision, position, legs, waiting)
    for i in waiting:
        legs[i]["outcome"] = rules.LegOutcome.FAILED
    return [rules.Note.of(rules.NoteKind.ENTRY_HELD, why=held)]


def _entries_held(position: Position) -> str:
    """Why the waiting entries may not go now ('' when they may): what changed while
    the exit worked stops automated copying as it would have stopped the decision."""
    account = position.account
    if account.copy_paused:
        return "the follower was paused meanwhile"
    if not account.is_connected:
        return "the follower is disconnected"
    if Quarantine.objects.filter(account_id=account.pk, symbol=position.symbol,
                                 lifted_at__isnull=True).exists():
        return "the symbol was quarantined meanwhile"
    return ""


def _waiting_send(decision: Decision, position: Position, legs: list[dict[str, Any]],
                  waiting: list[int]) -> list[rules.Note]:
    """Send the legs that waited for their exit; looked up first (a continuation that
    died after sending them left them at the broker, not in our rows)."""
    account = position.account
    specs = [OrderSpec(account=account, symbol=position.symbol, leg=_leg(legs[i]),
                       client_order_id=_leg_order_id(decision, i), decision=decision)
             for i in waiting]
    notes: list[rules.Note] = []
    for i, spec, sent in zip(waiting, specs, orders_place(specs, look_up_first=True),
                             strict=True):
        position.qty += sent.moved
        if sent.order.status != Order.Status.FAILED:
            sent.order.save()
            working_expiry_schedule(sent.order)
        legs[i]["outcome"] = _sent_outcome(spec.leg, sent)
        if sent.error is not None:
            notes.append(rules.Note.of(
                rules.NoteKind.LEG_FAILED, leg=spec.leg.kind.value, side=spec.leg.side.value,
                qty=spec.leg.qty, error=sent.error.message))
            if sent.permanent:
                quarantine_create(account=account, symbol=position.symbol,
                                  event=decision.event, reason=Quarantine.Reason.REJECTED,
                                  detail=sent.error.message)
    return notes


def _sent_outcome(leg: rules.Leg, sent: Sent) -> rules.LegOutcome:
    if sent.error is None and sent.order.status == Order.Status.CANCELLED:
        return rules.LegOutcome.FAILED  # an entry the broker ended unfilled: not sent again
    return rules.leg_outcome(leg, failed=sent.error is not None, permanent=sent.permanent)


def _leg(leg: dict[str, Any]) -> rules.Leg:
    return rules.Leg(Side(leg["side"]), int(leg["qty"]), rules.LegKind(leg["kind"]))


def _leg_order_id(decision: Decision, index: int) -> str:
    assert decision.event_id is not None  # an operator action's decision never waits
    return copy_order_id(decision.event_id, decision.account_id, index)


def _waiting_publish(account_id: int, symbol: str) -> None:
    """The leader events in flight for the follower, then its due queued exits."""
    for event_id in sql.events_in_flight(account_id=account_id):
        event = LeaderEvent.objects.filter(pk=event_id).first()
        if event is None:
            continue
        followers = [s.follower_id for s in event_seats(event) if s.account_id == account_id]
        if followers:
            publisher.batch_publish(event_id, followers)
    now = clock.now()
    for fe_id in (FailedExit.objects.filter(account_id=account_id, symbol=symbol,
                                            status=FailedExit.Status.PENDING,
                                            next_attempt_at__lte=now)
                  .order_by("id").values_list("id", flat=True)):
        publisher.failed_exit_retry_publish(fe_id)
