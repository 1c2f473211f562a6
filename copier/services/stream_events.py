"""Routing what a broker's stream says into the services.

`broker_events_handle` takes one batch off an account's stream and hands every fill
to ingestion (leader) or to the follower's confirmed position, and every order the
venue settled to the copier's Order row (`order_update_record`); a batch whose fills or
whose venue's account news (`AccountChanged`) moved the account's equity asks its guard
for one read (`guard.equity_changed`); `copier_listen`
(copier.stream.process) calls it for every batch its streams return. `broker_events_pump`
is one synchronous poll turn of the sim's stream, for replay and the benchmark,
which step the sim themselves.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

from django.core.exceptions import ValidationError
from django.db import transaction

from accounts.models import ConnectionState, FollowerFill, Position, TradingAccount
from accounts.symbols import normalise_symbol
from brokers.base import (
    AccountChanged,
    BrokerEvent,
    ConnectionLost,
    Fill,
    OrderUpdate,
    PositionUpdate,
    TransientBrokerError,
    Unreadable,
)
from brokers.registry import adapter_for
from copier import sql
from copier.domain import rules
from copier.models import CopyGroup, Order, RefusedFill
from copier.services.guard import equity_changed
from copier.services.ingest import FillInput, leader_fill_ingest
from copier.services.placement import order_fill_add, order_of_fill, order_settled
from copier.services.positions import position_lock
from copier.services.refused import refused_record
from copier.services.sync_guard import (
    connection_lost,
    connection_restored,
    pause_heal_check,
    position_disagreements_settle,
    positions_reread,
)
from core import clock
from core.trading import signed

log = logging.getLogger(__name__)


def broker_events_pump(*, account: TradingAccount) -> int:
    """Poll one account's stream once; returns how many fills it handled."""
    adapter = adapter_for(account)
    try:
        if account.connection_state != ConnectionState.CONNECTED:
            connection_restored(account=account)
        events = adapter.poll_events()
    except TransientBrokerError as exc:
        connection_lost(account=account, reason=exc.message)
        return 0
    return broker_events_handle(account=account, events=events)


def broker_events_handle(*, account: TradingAccount, events: list[BrokerEvent],
                         received_at: dt.datetime | None = None,
                         is_leader: bool | None = None) -> int:
    """Route stream events; returns how many fills were counted.

    A leader fill's copy latency counts from `received_at`, when the listener read the
    batch off the stream (now, if not given): the wait for a thread is part of it.
    `is_leader`: the account's role as the caller knows it (the listener restarts a stream
    whose role changed), which saves a query on every fill's way in; None: asked here.
    """
    received_at = received_at or clock.now()
    if is_leader is None:
        is_leader = account_is_leader(account)
    handled = 0
    for event in events:
        if isinstance(event, Fill):
            handled += _fill_handle(account, event, is_leader=is_leader, received_at=received_at)
        elif isinstance(event, PositionUpdate):
            position_update_record(account=account, update=event, is_leader=is_leader)
        elif isinstance(event, OrderUpdate):
            order_update_record(account=account, update=event)
        elif isinstance(event, AccountChanged):
            account_changed_note(account=account, change=event)
        elif isinstance(event, Unreadable):
            unreadable_refuse(account=account, record=event, is_leader=is_leader)
        elif isinstance(event, ConnectionLost):
            connection_lost(account=account, reason=event.reason)
    # Statements of the broker's that no fill explained within the grace are due now.
    position_disagreements_settle(account=account)
    why = equity_moved_why(events)
    if why:
        equity_changed([account.pk], why=why)
    return handled


def equity_moved_why(events: list[BrokerEvent]) -> str:
    """Why the batch moved the account's equity ("": it did not): its fills (the balance
    and the position) and what the venue said of the account's money or standing. One
    guard read covers the whole batch, so the reasons are said together, each once."""
    reasons: dict[str, None] = {}
    for event in events:
        if isinstance(event, Fill):
            reasons["fill"] = None
        elif isinstance(event, AccountChanged):
            reasons[event.why or "account changed"] = None
    return ", ".join(reasons)


def account_changed_note(*, account: TradingAccount, change: AccountChanged) -> None:
    """The venue's word on the account, for the log: its stop where it arrived (the guard's
    read decides what to do with it, from the venue's own answer)."""
    if change.can_trade is False:
        log.warning("%s: the venue says the firm stopped the account (%s); its guard reads "
                    "it now", account.name, change.why)
    else:
        log.debug("%s: %s from the venue", account.name, change.why)


def account_is_leader(account: TradingAccount) -> bool:
    return CopyGroup.objects.filter(leader=account).exists()


def _fill_handle(account: TradingAccount, event: Fill, *, is_leader: bool,
                 received_at: dt.datetime) -> int:
    """One fill off the stream; 1 when it was counted."""
    try:
        fill = FillInput.parse(fill_id=event.fill_id, symbol=event.symbol, side=event.side,
                               qty=event.qty)
        if event.seq is not None and (problem := rules.venue_id_problem(event.seq)):
            raise ValidationError(f"the fill's sequence {problem}")
    except ValidationError as exc:
        fill_refuse(account=account, fill=event, reason="; ".join(exc.messages),
                    is_leader=is_leader)
        return 0
    covered = fill_covered(account=account, fill=event)
    if covered:
        log.info("%s: fill %s is in the positions re-read at %s; not counted again",
                 account.name, fill.fill_id, account.reconciled_at)
    if not is_leader:
        return int(follower_fill_record(account=account, fill=event, covered=covered))
    if covered:
        return 0
    stored = leader_fill_ingest(account=account, fill=fill, fill_time=event.time,
                                received_at=received_at)
    return int(stored is not None)


def fill_refuse(*, account: TradingAccount, fill: Fill, reason: str,
                is_leader: bool) -> RefusedFill:
    """Keep a fill the copier cannot accept, then re-read the account's positions.

    Whatever the fill did at the broker is then accounted for all the same: on a
    leader as a missed move, copied close-only; on a follower adopted. It must not
    stop the stream. If the broker cannot answer now, the account is marked
    disconnected, and the listener's next turn reconnects, which re-reads them.
    """
    refused = RefusedFill.objects.create(
        account=account, fill_id="" if fill.fill_id is None else str(fill.fill_id)[:128],
        payload=_as_json(fill), reason=reason, received_at=clock.now(),
    )
    log.error("%s: fill refused (%s): %r; re-reading its positions from the broker",
              account.name, reason, fill)
    _reread_after_refusal(account, is_leader=is_leader)
    return refused


def _reread_after_refusal(account: TradingAccount, *, is_leader: bool) -> None:
    try:
        positions_reread(account=account, is_leader=is_leader)
    except TransientBrokerError as exc:
        connection_lost(account=account,
                        reason=f"re-reading positions after a refused fill: {exc.message}")


def unreadable_refuse(*, account: TradingAccount, record: Unreadable,
                      is_leader: bool) -> RefusedFill:
    """Keep what the stream said that the adapter could not read (a fill or a position on a
    contract the venue's look-up does not know...), as a refused fill or statement.

    A fill did move the account at the broker: its positions are re-read, as for any
    refused fill (`fill_refuse`): a leader's difference copied close-only, a follower's
    adopted. A statement moved nothing the copier can name: it is kept, and not applied.
    """
    refused = refused_record(account=account, record=record)
    if record.kind == "fill":
        _reread_after_refusal(account, is_leader=is_leader)
    return refused


def _as_json(fill: Fill) -> dict[str, object]:
    """The fill's fields as JSON can hold them; anything else as its repr."""
    return {f.name: _json_value(getattr(fill, f.name)) for f in dataclasses.fields(fill)}


def _json_value(value: object) -> object:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if value is None or type(value) in (str, int, bool):
        return value
    return repr(value)


def fill_covered(*, account: TradingAccount, fill: Fill) -> bool:
    """Is the fill in the positions the copier last re-read from the broker (a reconnect)?

    Then those positions counted it, and the stream delivering it late must not count
    it again. The broker's fill sequence says so where it has one; time stamps cannot
    (a frozen clock stamps a fill after the re-read with the re-read's time), so they
    are the fallback only for brokers that number no fills: strictly before the read.
    """
    if fill.seq is not None and account.reconciled_fill_seq is not None:
        return fill.seq <= account.reconciled_fill_seq
    at = account.reconciled_at
    return (at is not None and isinstance(fill.time, dt.datetime)
            and fill.time.tzinfo is not None and fill.time < at)


def follower_fill_record(*, account: TradingAccount, fill: Fill, covered: bool = False) -> bool:
    """A fill on a follower: the trader's moves C once; our own orders' were counted already.

    Ours is a fill of an order the copier recorded on the account (`order_of_fill`); any
    other is the trader's, whatever its tag. `covered`: the fill is in positions re-read
    since (see `fill_covered`): it moves nothing (that reconnect also asked about our
    orders and counted what they filled). True when the fill counted.
    """
    symbol = normalise_symbol(fill.symbol)
    with transaction.atomic():
        # Waits for any placement holding this row, so whether our order is on record is
        # final here: its row committed, or rolled back (then the fill counts as the
        # trader's, and the order's later look-up claims it: `placement.result_apply`).
        position = position_lock(account.pk, symbol)
        order = order_of_fill(account, fill)
        if order is not None:
            qty = _copier_order_fill(account, order, fill, covered=covered)
        else:
            qty = fill.qty if not covered and _fill_first_seen(account, fill, traders=True) else 0
        if not qty:
            return False
        position.qty += signed(fill.side, qty)
        if position.broker_qty == position.qty:  # the fill a broker's statement was ahead of
            position.broker_qty = position.broker_qty_since = None
        position.save(update_fields=["qty", "broker_qty", "broker_qty_since", "updated_at"])
        _heal_check(account, position)
    return True


def _fill_first_seen(account: TradingAccount, fill: Fill, *, traders: bool = False) -> bool:
    """Record the fill id; False when it was recorded before (a repeated delivery).

    Our working orders' fills are recorded here too: they are counted one by one. A
    trader's (`traders`) is kept with its order's ids, for an order of ours whose row a
    crash rolled back and that is recorded later (`sql.follower_fills_claim`)."""
    kept = ((fill.client_order_id or "", fill.broker_order_id or "", str(fill.side), fill.qty)
            if traders else None)
    first = sql.follower_fill_seen(account_id=account.pk, fill_id=fill.fill_id.strip(),
                                   now=clock.now(), traders=kept)
    if not first:
        log.info("%s: fill %s delivered again; counted once", account.name, fill.fill_id)
    return first


def _copier_order_fill(account: TradingAccount, order: Order, fill: Fill, *,
                       covered: bool) -> int:
    """Our order's fill: the quantity it adds to what the copier counted (0: nothing).

    An order the copier counted at placement (filled) is in C already. One left
    unknown or still working counts its fills as they come, each fill once (by its
    id: a venue may deliver one twice), up to the order's quantity. A fill the
    positions re-read at a reconnect already hold (`covered`) moves nothing: that
    reconnect asked about the order too and counted what it had filled.
    """
    if order.status not in (Order.Status.UNKNOWN, Order.Status.ACCEPTED):
        return 0
    if covered or not _fill_first_seen(account, fill):
        return 0
    return order_fill_add(order, fill.qty)


# What the venue's settlement of a working order makes of the copier's row, by what filled.
_ORDER_SETTLED = {Order.Status.CANCELLED, Order.Status.REJECTED}


def order_update_record(*, account: TradingAccount, update: OrderUpdate) -> Order | None:
    """The venue ended one of the copier's working orders short of its quantity: its row is
    settled by what its fills did. The order row as settled; None when nothing changed.

    Only a cancel (or expiry) and a rejection settle anything here: a filled order is
    settled by its fills (`follower_fill_record`), and an update can never stand in for a
    fill (it moves no position). Nothing filled: `cancelled` (or `rejected`). Part of it
    filled: `filled` with the `filled_qty` its fills counted (`qty` stays what was asked).
    The venue saying more filled than the copier's fills counted means a fill is still on
    its way: the row stays working, since settling it now would make that fill count for
    nothing; a look-up (a reconnect's, the working-order timeout's) settles it then.
    Only an order of the copier's with exactly that client order id on this account (or,
    without one, that broker order id) is touched; any other update is a trader's order.
    """
    if update.status not in _ORDER_SETTLED:
        return None
    found = _order_of_update(account, update)
    if found is None:
        log.debug("%s: order update for %s / %s: not an order of the copier's; ignored",
                  account.name, update.client_order_id, update.broker_order_id)
        return None
    with transaction.atomic():
        position_lock(account.pk, found.symbol)  # a placement's or a fill's move is final
        order = Order.objects.select_for_update().get(pk=found.pk)
        if order.status not in (Order.Status.ACCEPTED, Order.Status.UNKNOWN):
            return None  # settled already (a fill, a look-up)
        counted = order.filled_qty if order.status == Order.Status.ACCEPTED else 0
        if update.filled_qty > counted:
            log.warning("%s: order %s %s at the broker after %d filled; the copier has "
                        "counted %d: waiting for its fills", account.name,
                        order.client_order_id, update.status, update.filled_qty, counted)
            return None
        order.move_to(Order.Status(update.status) if not counted else Order.Status.FILLED)
        order.filled_qty = counted
        order.message = (f"{update.status} at the broker after {counted} of {order.qty} "
                         "filled")
        order.completed_at = clock.now()
        order.save(update_fields=["status", "filled_qty", "message", "completed_at"])
        order_settled(order)  # an exit's rest queued; what waited for it goes on
    log.info("%s: order %s %s", account.name, order.client_order_id, order.message)
    return order


def _order_of_update(account: TradingAccount, update: OrderUpdate) -> Order | None:
    if update.client_order_id:
        rows = Order.objects.filter(account=account, client_order_id=update.client_order_id)
    elif update.broker_order_id:
        rows = Order.objects.filter(account=account, broker_order_id=update.broker_order_id)
    else:
        return None
    return rows.only("pk", "symbol").first()


def position_update_record(*, account: TradingAccount, update: PositionUpdate,
                           is_leader: bool) -> None:
    """The broker states where a position stands; where the copier's fills disagree, the
    statement waits on the row instead of being applied. One the copier cannot take (a
    symbol it cannot name, a number no account holds) is recorded as refused, not applied.

    It may be ahead of the fill that made it (some venues send the position first):
    applied at once, that move would be counted twice. The fill that brings the
    position there clears it; a statement no fill explains is applied after a grace
    by `sync_guard.position_disagreements_settle`. A paused follower gets its heal
    check ("on every position update").
    """
    try:
        symbol = normalise_symbol(update.symbol)
        problem = rules.venue_qty_problem(update.qty, signed=True)
        if problem is not None:
            raise ValidationError(problem)
    except ValidationError as exc:
        refused_record(account=account, record=Unreadable(
            "position", "; ".join(exc.messages),
            {"symbol": _json_value(update.symbol), "qty": _json_value(update.qty)}))
        return
    with transaction.atomic():
        position = position_lock(account.pk, symbol)
        _statement_noted(account, position, update.qty)
        if not is_leader:
            _heal_check(account, position)


def _statement_noted(account: TradingAccount, position: Position, stated: int) -> None:
    """Agreeing clears a waiting statement; a new disagreement starts its grace now."""
    if position.qty == stated:
        if position.broker_qty is None:
            return
        position.broker_qty = position.broker_qty_since = None
    elif position.broker_qty != stated:
        log.info("%s %s: broker states %+d, the copier has %+d; waiting for the fills",
                 account.name, position.symbol, stated, position.qty)
        position.broker_qty, position.broker_qty_since = stated, clock.now()
    else:
        return  # the same statement again: its grace goes on
    position.save(update_fields=["broker_qty", "broker_qty_since"])


def _heal_check(account: TradingAccount, position: Position) -> None:
    """A paused follower's positions were re-checked: the heal check, with the account as
    the locked row read it (its connection state decides whether a heal can count)."""
    fresh = position.account
    if fresh.copy_paused:
        pause_heal_check(account=fresh)
    account.copy_paused = fresh.copy_paused


FOLLOWER_FILLS_KEEP = dt.timedelta(days=30)


def follower_fills_prune() -> int:
    """Forget manual follower fill ids older than any broker's redelivery (30 days)."""
    deleted, _ = FollowerFill.objects.filter(seen_at__lt=clock.now() - FOLLOWER_FILLS_KEEP).delete()
    return deleted
