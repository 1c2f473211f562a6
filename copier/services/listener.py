"""Routing what a broker's stream says into the services.

`broker_events_pump` is one turn of a listener: it notices a dropped or
restored connection and hands every fill to ingestion (leader) or to the
follower's confirmed position. The sim and replay call it after each step;
the `copier_listen` process calls it in a loop for the real brokers.
"""

from __future__ import annotations

import logging

from django.core.exceptions import ValidationError
from django.db import transaction

from accounts.models import ConnectionState, TradingAccount
from accounts.symbols import normalise_symbol
from brokers.base import (
    BrokerEvent,
    ConnectionLost,
    ConnectionRestored,
    Fill,
    PositionUpdate,
    TransientBrokerError,
)
from brokers.registry import adapter_for
from copier import clock, rules
from copier.models import CopyGroup, Order
from copier.services.ingest import FillInput, leader_fill_ingest
from copier.services.placement import is_copier_order_id, order_fill_settle
from copier.services.positions import position_lock
from copier.services.sync_guard import connection_lost, connection_restored, pause_heal_check

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


def broker_events_handle(*, account: TradingAccount, events: list[BrokerEvent]) -> int:
    """Route stream events; a malformed fill is refused and logged, the rest go on.

    A leader fill's copy latency counts from here, where it came off the stream.
    """
    received_at = clock.now()
    is_leader = CopyGroup.objects.filter(leader=account).exists()
    handled = 0
    for event in events:
        if isinstance(event, ConnectionLost):
            connection_lost(account=account, reason=event.reason)
            continue
        if isinstance(event, ConnectionRestored):
            connection_restored(account=account)
            continue
        if isinstance(event, PositionUpdate):
            position_update_record(account=account, update=event, is_leader=is_leader)
            continue
        try:
            fill = FillInput.parse(fill_id=event.fill_id, symbol=event.symbol, side=event.side,
                                   qty=event.qty)
        except ValidationError as exc:
            # A malformed fill from a broker is refused and reported; it must not
            # stop the stream, nor change anything.
            log.error("%s: malformed fill refused (%s): %r", account.name,
                      "; ".join(exc.messages), event)
            continue
        if is_leader:
            leader_fill_ingest(account=account, fill=fill, fill_time=event.time,
                               received_at=received_at)
        else:
            follower_fill_record(account=account, fill=event)
        handled += 1
    return handled


def follower_fill_record(*, account: TradingAccount, fill: Fill) -> None:
    """A fill on a follower: a manual trade moves C; our own orders were counted already."""
    symbol = normalise_symbol(fill.symbol)
    with transaction.atomic():
        # Waits for any placement holding this row, so our order's row is final here.
        position = position_lock(account.pk, symbol)
        if is_copier_order_id(fill.client_order_id):
            order = (Order.objects.filter(client_order_id=fill.client_order_id)
                     .select_related("failed_exit").first())
            if order is None or order.status not in (Order.Status.UNKNOWN, Order.Status.ACCEPTED):
                return
            # Its outcome was unknown (or it was working): the fill settles it now, and
            # the exit queued for it with it.
            order_fill_settle(order, fill.qty)
        position.qty += rules.signed(fill.side, fill.qty)
        position.save(update_fields=["qty", "updated_at"])
        account.copy_paused = position.account.copy_paused
        if account.copy_paused:
            pause_heal_check(account=account)


def position_update_record(*, account: TradingAccount, update: PositionUpdate,
                           is_leader: bool) -> None:
    """The broker says where a position stands; where the copier thought otherwise, the
    broker is right.

    On a leader the difference is a move the copier missed: copied close-only,
    like a reconnect's. On a follower it is adopted, and a paused account gets
    its heal check ("on every position update").
    """
    symbol = normalise_symbol(update.symbol)
    if is_leader:
        from copier.services.sync_guard import leader_positions_reconcile

        leader_positions_reconcile(account=account, broker={symbol: update.qty})
        return
    with transaction.atomic():
        position = position_lock(account.pk, symbol)
        if position.qty != update.qty:
            log.warning("%s %s: broker says %+d, the copier had %+d; adopting the broker's",
                        account.name, symbol, update.qty, position.qty)
            position.qty = update.qty
            position.save(update_fields=["qty", "updated_at"])
        account.copy_paused = position.account.copy_paused
        if account.copy_paused:
            pause_heal_check(account=account)
