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
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction

from accounts.models import FollowerFill, TradingAccount
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
from copier import publisher, sql
from copier.domain import rules
from copier.models import Decision, FailedExit, Order, Quarantine
from copier.services import exit_queue
from copier.services.exit_queue import failed_exit_queue
from copier.services.quarantine import quarantine_create
from core import clock
from core.trading import Side, signed

log = logging.getLogger(__name__)

def order_of_fill(account: TradingAccount, fill: Fill) -> Order | None:
    """The copier's order a follower's fill belongs to; None: the fill is the trader's.

    An order of the copier's is one it recorded on that account: the fill names it by our
    exact client order id, or by the broker's id for it (a venue whose stream could not
    learn the tag). What a tag looks like decides nothing: a trader's script may name its
    orders anything, `cp123-...` or `flatten-all-0931` (docs/rules.md#whose-fill-it-is). The
    caller holds the position's lock: an order being placed for it is on record (committed)
    by then, or never will be (rolled back).
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
    if result.status == Order.Status.REJECTED or order.status not in (Order.Status.SUBMITTING,
                                                            Order.Status.UNKNOWN):
        return 0
    return sql.follower_fills_claim(account_id=order.account_id,
                                    side=str(result.side or order.side),
                                    client_order_id=order.client_order_id,
                                    broker_order_id=result.broker_order_id or "")


# A plan has at most two legs (a reversal's exit, then its entry): the client order ids a
# run of an event can have sent for one follower.
PLAN_LEGS_MAX = 2


@dataclass(frozen=True, slots=True)
class Recovered:
    """What `crashed_run_orders_record` found: the position's move beyond the fills already
    counted, and whether one of the orders still works at the broker."""

    moved: int = 0
    working: bool = False


def crashed_run_suspects(*, event_id: int, account_ids: Collection[int]) -> set[int]:
    """The accounts among `account_ids` holding a fill counted as the trader's that carries
    one of this event's client order ids: one query for a whole batch, so that a re-run
    asks the broker only about those (`crashed_run_orders_record`)."""
    ids = [copy_order_id(event_id, a, i) for a in account_ids for i in range(PLAN_LEGS_MAX)]
    if not ids:
        return set()
    return set(FollowerFill.objects.filter(client_order_id__in=ids, qty__gt=0)
               .values_list("account_id", flat=True))


def crashed_run_orders_record(*, event_id: int, account: TradingAccount, symbol: str,
                              position_qty: int, first_leg: int = 0) -> Recovered:
    """A re-run of an event after a crash: the orders an earlier run sent for this follower
    whose fills the stream counted as the trader's are recorded as the copier's now.

    That run's transaction rolled back after the broker executed its order, so no row
    owned the fills when they came (docs/rules.md#whose-fill-it-is): they moved the
    position as the trader's. The re-run, judging that position, may find nothing left to
    send, and the order would never be on record. So, before its own orders go out, each
    of this event's client order ids that a kept trader's fill carries is looked up at
    the broker and recorded from the answer, claiming those fills (`result_apply`); the
    position moves only by what the broker reports beyond them. One still working holds the
    symbol as any working order does; one that cannot be asked about is kept `unknown`
    (looked up before anything else is sent). Only ids this event itself would use for
    this account: never a prefix match (a trader's own tags stay the trader's).
    `first_leg`: the re-run sends legs below it itself, looking them up first.
    The caller holds the position's lock.
    """
    ids = [copy_order_id(event_id, account.pk, i) for i in range(first_leg, PLAN_LEGS_MAX)]
    if not ids:
        return Recovered()
    kept = _trader_fills_kept(account, ids)
    if not kept:
        return Recovered()
    recorded = set(Order.objects.filter(client_order_id__in=kept)
                   .values_list("client_order_id", flat=True))
    kinds = _crashed_leg_kinds(kept, position_qty)
    moved, working = 0, False
    for cid, (side, qty) in sorted(kept.items()):
        if cid in recorded:
            continue  # its row is there: its own settling claims the fills
        order, filled = _crashed_order_recorded(
            OrderSpec(account=account, client_order_id=cid, symbol=symbol,
                      leg=rules.Leg(Side(side), qty, kinds[cid])), event_id=event_id)
        moved += filled
        working = working or order.status == Order.Status.ACCEPTED
    return Recovered(moved, working)


def _trader_fills_kept(account: TradingAccount, ids: list[str]) -> dict[str, tuple[str, int]]:
    """The fills counted as the trader's that carry one of `ids`, summed per client order
    id as (side, quantity): what each order of the crashed run moved the position by."""
    kept: dict[str, tuple[str, int]] = {}
    for cid, side, qty in (FollowerFill.objects.filter(account=account, client_order_id__in=ids,
                                                       qty__gt=0)
                           .values_list("client_order_id", "side", "qty")):
        before = kept.get(cid, (side, 0))
        kept[cid] = (before[0], before[1] + qty)
    return kept


def _crashed_leg_kinds(kept: dict[str, tuple[str, int]],
                       position_qty: int) -> dict[str, rules.LegKind]:
    """Whether each order of the crashed run was an exit or an entry, as it was sent.

    Where the follower stood before the crashed run's orders, then before each of them
    in the order it sent them (leg 0, then 1): an order against that side was an exit.
    """
    kinds: dict[str, rules.LegKind] = {}
    prior = position_qty - sum(signed(side, qty) for side, qty in kept.values())
    for cid, (side, qty) in sorted(kept.items()):
        kinds[cid] = (rules.LegKind.EXIT if prior and signed(side, 1) * prior < 0
                      else rules.LegKind.ENTRY)
        prior += signed(side, qty)
    return kinds


def _crashed_order_recorded(spec: OrderSpec, *, event_id: int) -> tuple[Order, int]:
    """One order of the crashed run, looked up at the broker and saved from its answer;
    returns it with the position's move beyond the fills it claimed. One the broker cannot
    say anything of is kept `unknown`: its fills say it ran, so it is asked about again
    before anything else is sent."""
    account, cid = spec.account, spec.client_order_id
    order = spec.order()
    moved = 0
    found = _look_up(account, cid)
    if isinstance(found, OrderResult):
        filled, _error = result_apply(order, found, looked_up=True)
        moved = signed(order.side, filled)
        order.message = ("sent by a run that crashed before recording it; recorded by "
                         "the re-run" + (f"; {order.message}" if order.message else ""))
    else:  # the broker cannot say now, or does not find it (its fills say it ran)
        order.move_to(Order.Status.UNKNOWN)
        order.message = ("sent by a run that crashed before recording it; its fills "
                         "came; " + (found.message if isinstance(found, BrokerError)
                                     else "the broker did not find it")
                         + ": looked up again before anything else is sent")
    if order.status != Order.Status.ACCEPTED and order.status != Order.Status.UNKNOWN:
        order.completed_at = clock.now()
    order.save()
    log.warning("%s: order %s of event %s was sent by a run that crashed before "
                "recording it: recorded now as %s", account.name, cid, event_id,
                order.status)
    return order, moved


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
        return signed(self.order.side, self.filled)


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
    if result.status == Order.Status.REJECTED:
        order.move_to(Order.Status.REJECTED)
        return 0, PermanentBrokerError(result.message or "rejected by the broker")
    counted = order.filled_qty if order.status == Order.Status.ACCEPTED else claimed
    order.filled_qty = min(order.qty, max(counted, result.filled_qty))
    order.move_to(_settled_status(result, order.filled_qty, order.qty))
    return order.filled_qty - counted, None


def _settled_status(result: OrderResult, filled: int, qty: int) -> str:
    """An order settles by the sum of its fills: one the broker ended (cancelled, expired)
    after a part filled is `filled` for that part, with nothing filled `cancelled`."""
    if result.status == Order.Status.FILLED and filled >= qty:
        return Order.Status.FILLED
    if result.status in (Order.Status.CANCELLED, Order.Status.FILLED):
        # "filled" short of the order: all it ever will (a venue that says so)
        return Order.Status.FILLED if filled else Order.Status.CANCELLED
    return Order.Status.ACCEPTED


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
    # An attempt that never reached the broker (FAILED) is no order (docs/rules.md#output):
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
    working: bool = False  # an order asked about is working at the broker


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
    moved, blocked, exits, working = 0, "", {}, False
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
                working = True  # the broker acknowledged it: a miss proves nothing
                continue
            order.move_to(Order.Status.FAILED)
            order.message = "not found at the broker after a timeout"
        else:
            filled, _error = result_apply(order, found, looked_up=True)
            moved += signed(order.side, filled)
        if order.status != Order.Status.ACCEPTED:
            order.completed_at = clock.now()
        order.save()
        if order.status == Order.Status.ACCEPTED:
            working = True
            continue
        settled = order_settled(order)
        if settled and order.failed_exit_id is not None:
            exits[order.failed_exit_id] = settled
    return Settled(moved, blocked, exits, working)


def order_fill_add(order: Order, qty: int) -> int:
    """A fill of our order seen on the stream, for an order left unknown or working:
    counted toward it, up to what was ordered; the order is filled once all of it is, and
    what waited for it follows (`order_settled`). The caller holds the position's lock
    and moves it by the quantity returned (a venue may fill an order in several parts)."""
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
    if done:
        order_settled(order)
    return added


def order_settled(order: Order) -> str:
    """An order that worked at the broker has settled (its last part filled on the stream,
    a look-up, the broker's cancel, the copier's own cancel after its time ran out).

    What it left is recorded now, in the caller's transaction (which holds the position's
    lock): an exit's unfilled rest goes to the Failed Exit Queue as a failed attempt, a
    queued exit it was sent for is done only if all of it filled. What waited for it (the
    legs after it in its plan, later leader events, queued exits of the same follower and
    symbol) goes on once this commits, in a task of its own (`copier.orders_settled`).
    """
    status = ""
    if order.failed_exit_id is not None:
        status = order_failed_exit_settle(order)
    elif order.kind == rules.LegKind.EXIT and order.unfilled:
        exit_rest_queue(order)
    account_id, symbol = order.account_id, order.symbol
    transaction.on_commit(lambda: _settled_publish(account_id, symbol))
    return status


def working_expiry_schedule(order: Order) -> None:
    """A stored order left working: cancelled at the broker if it still works when its
    time is up (`copier.working_order_expire`; the periodic sweep is the net). Under a
    controlled clock the replay runs the expiry at its due time itself."""
    if order.status != Order.Status.ACCEPTED or clock.is_controlled():
        return
    order_id = order.pk

    def publish() -> None:
        try:
            publisher.working_order_expire_publish(
                order_id, countdown=settings.COPIER_WORKING_ORDER_SECONDS)
        except Exception:
            log.exception("could not schedule the expiry of order %s; the sweep will", order_id)

    transaction.on_commit(publish)


def _settled_publish(account_id: int, symbol: str) -> None:
    try:
        publisher.orders_settled_publish(account_id, symbol)
    except Exception:  # Redis away: the periodic sweep (working_orders_sweep) continues it
        log.exception("could not publish the settlement of %s %s; the sweep will",
                      account_id, symbol)


def exit_rest_queue(order: Order) -> FailedExit:
    """An exit the broker ended with part of it unfilled: the rest is queued as a failed
    attempt (attempts 1, retried after the backoff, capped like any queued exit)."""
    decision = order.decision
    fe = failed_exit_queue(
        account=order.account, symbol=order.symbol,
        leg=rules.Leg(Side(order.side), order.unfilled, rules.LegKind.EXIT),
        event=decision.event if decision is not None else None,
        action=decision.action if decision is not None else None, attempts=1,
        error=_unfilled_note(order))
    return fe


def _unfilled_note(order: Order) -> str:
    return (f"{order.client_order_id}: the broker ended it with {order.unfilled} of "
            f"{order.qty} unfilled ({order.message or order.status})")


def order_failed_exit_settle(order: Order) -> str:
    """A queued exit whose order settled: done when all of it filled; rejected, rejected;
    ended with a rest unfilled, a failed attempt for that rest (sized again at the next
    attempt). Returns the status it was given ('' when untouched)."""
    fe = order.failed_exit
    if fe is None:
        return ""
    if order.status == Order.Status.FILLED and not order.unfilled:
        status, note = FailedExit.Status.DONE, f"settled: {order.client_order_id} filled"
    elif order.status == Order.Status.REJECTED:
        status, note = FailedExit.Status.REJECTED, order.message
    elif order.unfilled:
        return _failed_exit_rest(fe, order)
    else:
        return ""
    if not fe.can_move_to(status):  # settled already
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


def _failed_exit_rest(fe: FailedExit, order: Order) -> str:
    """The queued exit's order ended with a rest unfilled: a failed attempt for the rest."""
    now = clock.now()
    attempts = fe.attempts + 1
    pending = FailedExit.Status.PENDING
    # In flight: an attempt claimed it and waits for this lock; it reads the row after.
    if not FailedExit.objects.filter(pk=fe.pk, status__in=[pending, FailedExit.Status.IN_FLIGHT]
                                     ).update(
        attempts=attempts, qty=order.unfilled, next_attempt_at=now + exit_queue.delay(attempts),
        last_error=_unfilled_note(order)[:2000], in_flight_since=None, updated_at=now,
    ):
        return ""
    fe.attempts, fe.qty = attempts, order.unfilled
    log.info("failed exit %s: %s", fe.pk, _unfilled_note(order))
    return pending
