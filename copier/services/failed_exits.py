"""The Failed Exit Queue: an exit that could not be placed is kept and retried, never dropped.

The row is the truth. A retry is a Celery task with an ETA, but a lost,
duplicated or early task changes nothing: an attempt first claims the row
with a conditional UPDATE (pending and due -> in flight), and the periodic
`failed_exits_dispatch_due` re-sends the due rows whose task was lost.
A claim that stays in flight (the worker died mid-attempt) is taken over
after `STALE_CLAIM`, and its order is looked up at the broker before any
resend.

A flatten's exit (its row names the flatten's `action`) is a person's order, not
automated copying (docs/rules.md#flatten-and-the-kill-switch): it is claimed and attempted
while the follower is paused, each attempt first cancels the follower's working
orders and asks about its orders in doubt, and closes what it holds then, on
whichever side, never the quantity first planned.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Sequence

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from accounts.models import Position, TradingAccount
from brokers.base import BrokerError
from brokers.registry import adapter_class, adapter_for
from copier import publisher
from copier.alerts import alert_raise
from copier.domain import rules, symbol_map
from copier.models import (
    AlertKind,
    FailedExit,
    Follower,
    LeaderEvent,
    Order,
    Quarantine,
)
from copier.services.exit_queue import delay as _delay
from copier.services.exit_queue import (  # noqa: F401 (failed_exit_queue: its callers' name)
    failed_exit_queue,
    failed_exit_schedule,
)
from copier.services.placement import (
    OrderSpec,
    order_send,
    retry_order_id,
    unknown_orders_settle,
    working_expiry_schedule,
)
from copier.services.positions import position_lock, positions_of, positions_save
from copier.services.quarantine import quarantine_create
from core import clock
from core.trading import Side

log = logging.getLogger(__name__)

STALE_CLAIM = dt.timedelta(seconds=60)
WAITING_NOTE = "waiting: an order of the copier's works at the broker on this symbol"
OPEN = [FailedExit.Status.PENDING, FailedExit.Status.IN_FLIGHT]
# A paused follower's queued exits wait for the heal, except a flatten's: a person's order.
NOT_HELD_BY_PAUSE = Q(account__copy_paused=False) | Q(action__isnull=False)


def _claim(fe_id: int) -> bool:
    """Pending and due -> in flight; a stale in-flight claim is taken over. Else: not ours."""
    now = clock.now()
    claimable = Q(status=FailedExit.Status.PENDING, next_attempt_at__lte=now) | Q(
        status=FailedExit.Status.IN_FLIGHT, in_flight_since__lte=now - STALE_CLAIM
    )
    in_flight = FailedExit.Status.IN_FLIGHT
    return bool(
        FailedExit.objects.filter(claimable, NOT_HELD_BY_PAUSE, pk=fe_id,
                                  status__in=FailedExit.moving_to(in_flight),
                                  account__compare_pending_since__isnull=True)
        .update(status=in_flight, in_flight_since=now, updated_at=now)
    )


def failed_exit_attempt(*, failed_exit_id: int) -> str | None:
    """One attempt at a queued exit, capped to what the follower still holds.

    Returns the status it leaves, or None when the row was not due, not
    pending, or its account is paused and it is not a flatten's (a duplicate or
    early delivery).
    """
    row = FailedExit.objects.filter(pk=failed_exit_id).values("account_id", "symbol", "status",
                                                               "in_flight_since").first()
    if row is None:
        return None
    recovering = row["status"] == FailedExit.Status.IN_FLIGHT
    if not _claim(failed_exit_id):
        return None
    with transaction.atomic():
        position = position_lock(row["account_id"], row["symbol"])
        # Read after the lock: a reconnect that held it has committed its comparison,
        # its pause and its connection state by now.
        position.account = TradingAccount.objects.get(pk=row["account_id"])
        # Queued exits of one (follower, symbol) go in queue order, whichever task came
        # first: each is judged on what the ones before it left.
        now = clock.now()
        rows = list(
            FailedExit.objects.select_for_update()
            .filter(Q(pk=failed_exit_id) | Q(status=FailedExit.Status.IN_FLIGHT)
                    | Q(status=FailedExit.Status.PENDING, next_attempt_at__lte=now),
                    account_id=row["account_id"], symbol=row["symbol"], pk__lte=failed_exit_id)
            .order_by("id")
        )
        for fe in rows:
            if not fe.can_move_to(FailedExit.Status.IN_FLIGHT):  # settled meanwhile
                continue
            fe.move_to(FailedExit.Status.IN_FLIGHT)
            fe.account = position.account  # loaded: nothing below reads it again
            _attempt(fe, position, recovering=recovering or fe.pk != failed_exit_id)
            fe.in_flight_since = None
            fe.updated_at = clock.now()
            fe.save()
            # One that waited for a working order is published again by its settlement.
            if fe.status == FailedExit.Status.PENDING and fe.last_error != WAITING_NOTE:
                transaction.on_commit(functools.partial(failed_exit_schedule, fe))
        positions_save([position])
    return fe.status


def _attempt(fe: FailedExit, position: Position, *, recovering: bool) -> None:
    account = position.account
    flatten = fe.action_id is not None  # a person's order: not held by a pause
    # Paused since the claim (a flatten excepted), or a reconnect's comparison waits for a
    # copy in flight (a flatten too: what is held is not known until it is made): it
    # waits for the heal or the comparison, which resumes it, uncounted.
    if (account.copy_paused and not flatten) or account.compare_pending_since is not None:
        fe.move_to(FailedExit.Status.PENDING)
        return
    if not account.is_connected:
        # Nothing is decided from a view the copier cannot confirm: the attempt fails.
        _attempt_failed(fe, "follower disconnected")
        return
    if flatten:
        _flatten_working_orders_cancel(fe, account)
    settled = unknown_orders_settle(account=account, symbol=fe.symbol, working_too=flatten)
    position.qty += settled.moved
    if fe.pk in settled.exits:  # its own order turned out filled or rejected
        fe.move_to(settled.exits[fe.pk])
        fe.refresh_from_db(fields=["last_error"])  # the settlement's note, kept by the save
        return
    if settled.blocked:
        _attempt_failed(fe, settled.blocked)
        return
    # A flatten cancelled the working orders and asked about them (`working_too`): only
    # what still works holds it; any other attempt waits for every order working here.
    if settled.working or (position.working_orders and not flatten):
        # An order of the copier's still works on this symbol: nothing is judged on a
        # position it will still change. A wait is not an attempt; its settlement
        # publishes the due exits again (copier.services.working).
        fe.move_to(FailedExit.Status.PENDING)
        fe.next_attempt_at = max(fe.next_attempt_at, clock.now())
        fe.last_error = WAITING_NOTE
        return
    qty = _flatten_sized(fe, position) if flatten else rules.exit_retry_qty(
        fe.side, fe.qty, position.qty, _expected(fe, position))
    if qty == 0:
        fe.move_to(FailedExit.Status.RESOLVED)
        return
    side = Side(fe.side)
    sent = order_send(
        OrderSpec(account=account, client_order_id=retry_order_id(fe.pk, fe.attempts + 1),
                  symbol=fe.symbol, leg=rules.Leg(side, qty, rules.LegKind.EXIT), failed_exit=fe),
        look_up_first=recovering,
    )
    position.qty += sent.moved
    if sent.error is None:
        _attempt_sent(fe, sent.order, qty)
    elif sent.permanent:
        fe.move_to(FailedExit.Status.REJECTED)
        fe.last_error = sent.error.message
        quarantine_create(account=account, symbol=fe.symbol, reason=Quarantine.Reason.REJECTED,
                          detail=sent.error.message, event=fe.event)
    else:
        _attempt_failed(fe, sent.error.message)


def _attempt_sent(fe: FailedExit, order: Order, qty: int) -> None:
    """Acknowledged is not done: done once all of it filled. Still working, the exit
    stays queued (uncounted) until the order settles (`placement.order_settled`); ended
    with a rest unfilled, that rest is a failed attempt."""
    fe.qty = qty
    if order.status == Order.Status.ACCEPTED:
        fe.move_to(FailedExit.Status.PENDING)
        fe.last_error = f"{order.client_order_id} works at the broker: done when filled"
        fe.next_attempt_at = clock.now() + dt.timedelta(
            seconds=settings.COPIER_WORKING_ORDER_SECONDS)
        working_expiry_schedule(order)
    elif order.unfilled:
        fe.qty = order.unfilled
        _attempt_failed(fe, f"{order.client_order_id}: {order.unfilled} of {order.qty} "
                            f"unfilled when the broker ended it")
    else:
        fe.move_to(FailedExit.Status.DONE)


def _flatten_working_orders_cancel(fe: FailedExit, account: TradingAccount) -> None:
    """Before a flatten's attempt: a resting order could fill after the close and open a
    position again. A failure does not stop the close (closing matters more); it is
    kept on the row for a person to see."""
    count, note = working_orders_cancel(account)
    if count is None:
        fe.last_error = note[:2000]


def _flatten_sized(fe: FailedExit, position: Position) -> int:
    """A flatten's target is flat: the attempt closes what the follower holds now, on
    whichever side it holds it (a buy by hand, an entry in doubt that proved filled),
    never the quantity planned when it was queued. The row's side follows."""
    legs = rules.close_by(position.qty, abs(position.qty))
    if not legs:
        return 0
    fe.side = legs[0].side
    return legs[0].qty


def working_orders_cancel(account: TradingAccount) -> tuple[int | None, str]:
    """Cancel the follower's working orders at the venue (a flatten: a limit a trader left
    resting would fill later and open a position again): how many (None: not
    cancelled), and what happened in words.

    A failure is returned, never raised: the closing orders go out all the same, and
    the words say that a person must cancel by hand.
    """
    if not account.is_connected:
        return _not_cancelled(account, "follower disconnected")
    try:
        count = adapter_for(account).orders_cancel_all()
    except BrokerError as exc:
        return _not_cancelled(account, exc.message)
    return count, f"{count} working order(s) at the venue cancelled"


def working_orders_cancel_many(accounts: Sequence[TradingAccount]
                               ) -> dict[int, tuple[int | None, str]]:
    """`working_orders_cancel` of many followers, each broker's accounts asked together
    (`BrokerAdapter.orders_cancel_all_many`): a flatten of many followers must not wait
    for each account's venue in turn. By account id."""
    out: dict[int, tuple[int | None, str]] = {}
    by_kind: dict[str, list[TradingAccount]] = {}
    for account in {a.pk: a for a in accounts}.values():  # one account in two groups: once
        if not account.is_connected:
            out[account.pk] = _not_cancelled(account, "follower disconnected")
        else:
            by_kind.setdefault(account.broker, []).append(account)
    for kind, chosen in by_kind.items():
        for account, count in zip(chosen, adapter_class(kind).orders_cancel_all_many(chosen),
                                  strict=True):
            out[account.pk] = (
                _not_cancelled(account, count.message) if isinstance(count, BrokerError)
                else (count, f"{count} working order(s) at the venue cancelled"))
    return out


def _not_cancelled(account: TradingAccount, why: str) -> tuple[None, str]:
    note = f"working orders at the venue NOT cancelled: {why}"
    log.warning("flatten of %s: %s", account.name, note)
    return None, note


def _expected(fe: FailedExit, position: Position) -> int | None:
    """E(P) for the leader's position after the last event decided for the follower on
    the symbol (None in a with_leader group: there the target after a reduction is flat;
    None for a flatten's exit too: a person asked for flat, whatever the leader holds)."""
    if fe.action_id is not None:
        return None
    follower = Follower.objects.select_related("group").filter(account_id=fe.account_id).first()
    if follower is None or follower.group.exit_mode != rules.ExitMode.PROPORTIONAL:
        return None
    leader_id = follower.group.leader_id
    smap = follower.symbols()  # the exit is on the follower's symbol, P on the leader's
    if position.last_event_id is not None:
        last = LeaderEvent.objects.filter(pk=position.last_event_id, account_id=leader_id
                                          ).values_list("symbol", "p1").first()
        if last is not None and smap.route(last[0]).symbol == fe.symbol:
            return follower.expected_position(last[1], ratio=smap.route(last[0]).ratio)
    # Nothing of this leader decided for it yet: the leader's positions now, mapped.
    return symbol_map.expected_positions(
        positions_of(leader_id), follower.multiplier, follower.group.reverse, smap,
        fixed_qty=follower.fixed_qty, max_position=follower.max_position,
    ).get(fe.symbol, 0)


def _attempt_failed(fe: FailedExit, error: str) -> None:
    """Count the failed attempt and set the next one after the backoff."""
    fe.attempts += 1
    fe.move_to(FailedExit.Status.PENDING)
    fe.next_attempt_at = clock.now() + _delay(fe.attempts)
    fe.last_error = error[:2000]


def failed_exits_due(*, limit: int = 1000) -> list[tuple[int, str]]:
    """The retries due now, oldest first, each with what its message will say. A paused
    account's (but a flatten's) and one whose positions compare is pending wait; a claim
    gone stale is due again."""
    now = clock.now()
    rows = (
        FailedExit.objects.filter(
            Q(status=FailedExit.Status.PENDING, next_attempt_at__lte=now)
            | Q(status=FailedExit.Status.IN_FLIGHT, in_flight_since__lte=now - STALE_CLAIM),
            NOT_HELD_BY_PAUSE, account__compare_pending_since__isnull=True,
        ).order_by("next_attempt_at", "id")
        .values_list("id", "account__name", "side", "qty", "symbol")[:limit]
    )
    return [(fe_id, publisher.event_about(name, side, qty, symbol))
            for fe_id, name, side, qty, symbol in rows]


def failed_exits_dispatch_due() -> list[int]:
    """Re-send the due retries (their task may be lost); a duplicate task does nothing."""
    due = failed_exits_due()
    for fe_id, about in due:
        publisher.failed_exit_retry_publish(fe_id, about=about)
    return [fe_id for fe_id, _about in due]


def failed_exits_resume(*, account_id: int) -> list[int]:
    """Reconnect or heal: the account's queued exits become due at once and are sent (a
    paused account's: only a flatten's, the others wait for the heal)."""
    now = clock.now()
    rows = list(
        FailedExit.objects.filter(NOT_HELD_BY_PAUSE, account_id=account_id,
                                  status=FailedExit.Status.PENDING)
        .order_by("id").values_list("id", "account__name", "side", "qty", "symbol")
    )
    ids = [row[0] for row in rows]
    FailedExit.objects.filter(pk__in=ids).update(next_attempt_at=now, updated_at=now)
    for fe_id, name, side, qty, symbol in rows:
        publisher.failed_exit_retry_publish(
            fe_id, about=publisher.event_about(name, side, qty, symbol))
    return ids


def flatten_exits_open() -> set[int]:
    """The accounts a flatten's exit still waits on: their broker connection is kept until
    it is done, whatever the follower's or its group's mode (the listener asks)."""
    return set(FailedExit.objects.filter(action__isnull=False, status__in=OPEN)
               .values_list("account_id", flat=True).distinct())


def failed_exits_prune() -> int:
    """Delete every entry older than the retention, whatever its status; log abandoned ones."""
    cutoff = clock.now() - dt.timedelta(days=settings.COPIER_FAILED_EXIT_KEEP_DAYS)
    days = settings.COPIER_FAILED_EXIT_KEEP_DAYS
    with transaction.atomic():  # the alerts exist exactly when the exits are gone
        old = FailedExit.objects.filter(first_failed_at__lt=cutoff)
        for fe in old.filter(status__in=[FailedExit.Status.PENDING, FailedExit.Status.IN_FLIGHT]
                             ).select_related("account"):
            log.error(
                "failed exit abandoned after %s days: %s %s %s %s (attempts %s, last error %s)",
                days, fe.account_id, fe.side, fe.qty, fe.symbol, fe.attempts, fe.last_error,
            )
            alert_raise(
                kind=AlertKind.ABANDONED_EXIT, account=fe.account,
                about=f"{fe.account.name} {fe.symbol}",
                text=(f"{fe.account.name} {fe.symbol}: the exit {fe.side} {fe.qty} was given up "
                      f"after {days} days and {fe.attempts} attempts (last error: "
                      f"{fe.last_error or 'none'}). The position may still be open at the "
                      f"broker: close it by hand."),
            )
        deleted, _ = old.delete()
    return deleted
