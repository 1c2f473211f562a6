"""The Sync Divergence Guard: never fight a trader who traded while we were away.

On a follower's reconnect the broker's positions are compared with the
copier's. A difference pauses automated copying for the account (manual
trading is never blocked) and the copier adopts the broker's view. The pause
heals by itself whenever the account lines up with the leader again. On a
leader's reconnect, what changed while it was away is a missed leader event,
copied close-only.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from accounts.models import ConnectionState, Position, TradingAccount
from accounts.symbols import normalise_symbol
from brokers.base import BrokerAdapter, TransientBrokerError, Unreadable
from brokers.registry import adapter_for
from copier import sql
from copier.alerts import alert_raise
from copier.domain import rules, symbol_map
from copier.models import AlertKind, CopyGroup, Follower, LeaderEvent, Order
from copier.services.failed_exits import failed_exits_resume
from copier.services.ingest import FillInput, leader_fill_ingest
from copier.services.placement import unknown_orders_settle
from copier.services.positions import positions_lock_all, positions_of
from copier.services.refused import refused_record
from core import clock

log = logging.getLogger(__name__)


def connection_lost(*, account: TradingAccount, reason: str = "") -> None:
    now = clock.now()
    changed = TradingAccount.objects.filter(pk=account.pk).exclude(
        connection_state=ConnectionState.DISCONNECTED
    ).update(
        connection_state=ConnectionState.DISCONNECTED, connection_changed_at=now,
        last_disconnected_at=now, last_error=reason[:2000],
    )
    account.connection_state = ConnectionState.DISCONNECTED
    if changed:
        log.warning("%s disconnected: %s", account.name, reason)


def connection_restored(*, account: TradingAccount) -> None:
    """Reconnect: compare positions (follower) or copy what was missed (leader).

    Raises the adapter's TransientBrokerError when the broker is still away.
    """
    adapter = adapter_for(account)
    adapter.connect()
    if CopyGroup.objects.filter(leader=account).exists():
        fresh = _leader_reconciled(account, adapter)
    else:
        fresh = _follower_compared(account, adapter)
    _state_copied(account, fresh)


def _state_copied(account: TradingAccount, fresh: TradingAccount) -> None:
    """The caller's object (a listener keeps one per account) learns what the row says now."""
    for name in ("connection_state", "connection_changed_at", "last_connected_at", "last_error",
                 "copy_paused", "pause_reason", "pause_details", "paused_since",
                 "compare_pending_since", *_RECONCILED_FIELDS):
        setattr(account, name, getattr(fresh, name))


# A broker that keeps reporting symbols the copier has no row for yet (one per read)
# is being traded on faster than we can lock: give up this reconnect, the next retries.
SNAPSHOT_READS = 5
_RECONCILED_FIELDS = ["reconciled_fill_seq", "reconciled_at"]


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """The broker's positions read while the copier's rows of the account were locked."""

    rows: dict[str, Position]
    broker: dict[str, int]
    taken_at: dt.datetime
    cursor: int | None


def _snapshot_locked(account_id: int, adapter: BrokerAdapter, *,
                     ask_orders_in_doubt: bool = False) -> _Snapshot:
    """Lock every position row of the account first, then ask the broker.

    In this order nothing that moves the copier's view of the account (a copy, a
    queued exit's retry, a fill from the stream) can land between the broker's answer
    and the comparison: it either finished before the read, and the answer shows it,
    or it waits for our commit and then starts from the view we leave. A symbol the
    broker reports without a row here gets its row created and locked, and the broker
    is read again, since something may have moved it before we held that row.
    `ask_orders_in_doubt`: see `_orders_in_doubt_asked`.
    """
    rows = positions_lock_all(account_id, ())
    if ask_orders_in_doubt:
        _orders_in_doubt_asked(account_id, adapter, rows)
    for _ in range(SNAPSHOT_READS):
        taken_at = clock.now()
        broker, refused = _positions_readable(adapter)
        if set(broker) <= set(rows):
            _refusals_kept(account_id, refused, rows, broker)
            return _Snapshot(rows, broker, taken_at, _cursor_readable(adapter))
        rows = positions_lock_all(account_id, broker)
    raise TransientBrokerError("positions kept moving to new symbols while being read")


def _positions_readable(adapter: BrokerAdapter) -> tuple[dict[str, int], list[Unreadable]]:
    """The broker's positions the copier can take, and those it refuses: the adapter's
    unreadable ones (a contract the venue cannot name), a name that is no symbol, a
    number no account holds (docs/rules.md#refused-and-duplicate-fills: "a number out of range")."""
    held = adapter.positions()
    refused = list(adapter.positions_unread())  # of that read
    broker: dict[str, int] = {}
    for name, qty in held.items():
        symbol = str(name)
        try:
            symbol = normalise_symbol(name)
            problem = rules.venue_qty_problem(qty, signed=True)
            if problem is not None:
                raise ValidationError(problem)
        except ValidationError as exc:
            refused.append(Unreadable("position", f"{symbol}: {'; '.join(exc.messages)}",
                                      {"symbol": str(name), "qty": repr(qty)}, symbol=symbol))
            continue
        broker[symbol] = broker.get(symbol, 0) + qty
    return broker, refused


def _refusals_kept(account_id: int, refused: list[Unreadable], rows: dict[str, Position],
                   broker: dict[str, int]) -> None:
    """Record each refused position; on a symbol the copier holds, the read stands where the
    copier does: a number it refused is no move (a garbled size must not be copied as a
    reversal), and a read lists every symbol, so one left out would read as flat."""
    if not refused:
        return
    account = TradingAccount.objects.get(pk=account_id)
    for record in refused:
        refused_record(account=account, record=record)
        try:
            row = rows.get(normalise_symbol(record.symbol)) if record.symbol else None
        except ValidationError:
            row = None
        if row is not None and row.qty and row.symbol not in broker:
            broker[row.symbol] = row.qty


def _cursor_readable(adapter: BrokerAdapter) -> int | None:
    """The adapter's fills cursor, if the copier can keep it (else: judged by fill times)."""
    cursor = adapter.fills_cursor()
    if cursor is not None and (problem := rules.venue_id_problem(cursor)):
        log.error("%s: the fills cursor is refused (%s); late fills are judged by their time",
                  adapter.account.name, problem)
        return None
    return cursor


def _orders_in_doubt_asked(account_id: int, adapter: BrokerAdapter,
                           rows: dict[str, Position]) -> None:
    """Our orders whose outcome is unknown, or that were still working, are asked about
    before the comparison.

    What they filled is in the broker's positions: left unknown, the comparison would
    take it for a trader's (a pause, the broker's view adopted) and the queued exit's
    retry would then count it a second time. Counted here, once, it is the copier's
    (and the exit queued for it settled). A look-up that fails leaves the account
    disconnected: nothing is compared from a view the copier cannot confirm.
    """
    account = TradingAccount.objects.get(pk=account_id)
    symbols = (Order.objects.filter(account_id=account_id,
                                    status__in=[Order.Status.UNKNOWN, Order.Status.ACCEPTED])
               .values_list("symbol", flat=True).distinct())
    for symbol in sorted(set(symbols)):
        settled = unknown_orders_settle(account=account, symbol=symbol, working_too=True)
        if settled.moved:
            row = rows.get(symbol) or positions_lock_all(account_id, [symbol])[symbol]
            row.qty += settled.moved
            row.save(update_fields=["qty", "updated_at"])
            rows[symbol] = row
        if settled.blocked:
            raise TransientBrokerError(settled.blocked)


def _mark_connected(account: TradingAccount, snapshot: _Snapshot) -> None:
    now = clock.now()
    account.connection_state = ConnectionState.CONNECTED
    account.connection_changed_at = account.last_connected_at = now
    account.last_error = ""
    _mark_reconciled(account, snapshot)
    account.save(update_fields=["connection_state", "connection_changed_at",
                                "last_connected_at", "last_error", "compare_pending_since",
                                *_RECONCILED_FIELDS])
    log.info("%s connected", account.name)


def _mark_reconciled(account: TradingAccount, snapshot: _Snapshot) -> None:
    """The fills in the snapshot are counted by it: the stream's late copies of them are not."""
    account.reconciled_fill_seq = snapshot.cursor
    account.reconciled_at = snapshot.taken_at


def _follower_compared(account: TradingAccount, adapter: BrokerAdapter) -> TradingAccount:
    """Compare, adopt, pause, mark connected and check the heal in one transaction.

    While a run of the copier's own is in flight for the account, a difference may be
    that run's order: the comparison waits for the run (`_comparison_put_off`) and is
    made once it is decided (`comparisons_deferred_run`).
    """
    with transaction.atomic():
        snapshot = _snapshot_locked(account.pk, adapter, ask_orders_in_doubt=True)
        _statements_superseded(account.pk)
        fresh = TradingAccount.objects.select_for_update().get(pk=account.pk)
        diff = _divergence(snapshot)
        in_flight = _events_in_flight(account.pk) if diff else []
        if in_flight:
            _comparison_put_off(fresh, diff, in_flight)
        else:
            _compared(fresh, snapshot, diff)
        _mark_connected(fresh, snapshot)
        # Right after every comparison, difference or not: the trader may have lined up
        # again while away. A heal resumes the queued exits itself; still paused, only a
        # flatten's go (a person's order, `failed_exits_resume`); a comparison put off for
        # a copy in flight resumes them when it is made.
        healed = fresh.copy_paused and pause_heal_check(account=fresh)
        if not healed and not in_flight:
            transaction.on_commit(lambda: failed_exits_resume(account_id=account.pk))
    return fresh


def _divergence(snapshot: _Snapshot) -> rules.Divergence:
    known = {symbol: row.qty for symbol, row in snapshot.rows.items() if row.qty}
    return rules.divergence(known, snapshot.broker)


def _compared(account: TradingAccount, snapshot: _Snapshot, diff: rules.Divergence) -> None:
    """The comparison made: the broker's view adopted, a difference pauses (the caller
    holds the rows and the account's row, and saves the account)."""
    for symbol, (_known, actual) in diff.symbols.items():
        snapshot.rows[symbol].qty = actual
        snapshot.rows[symbol].save(update_fields=["qty", "updated_at"])
    if diff:
        _pause(account, diff)
    account.compare_pending_since = None


def _comparison_put_off(account: TradingAccount, diff: rules.Divergence,
                        in_flight: list[int]) -> None:
    """The copier's view stays as it is until the run in flight is decided: its re-run
    looks its orders up and counts them, and sends nothing new meanwhile (the engine
    holds back what no earlier try sent; the queued exits wait); then the comparison is
    made again, and what is left is the trader's."""
    log.warning("%s: the broker differs from the copier (%s) while leader events %s are "
                "undecided for it; comparing once they are", account.name, diff.describe(),
                in_flight)
    if account.compare_pending_since is None:
        account.compare_pending_since = clock.now()


def comparisons_deferred_run(*, account_ids: Iterable[int]) -> list[int]:
    """Make the comparisons that reconnects put off, for those accounts whose runs in flight
    are decided now; returns the ids of the accounts compared.

    Called after a batch of an event's copy committed for the accounts (the re-run that
    settles the run), and by `position_disagreements_settle` (the listener after each
    batch of its stream, and the periodic task) as the safety net. A broker that cannot
    answer leaves the comparison pending: the next call tries again (a disconnected
    account's reconnect compares anyway).
    """
    compared = []
    for account_id in sorted(set(account_ids)):
        try:
            if _comparison_deferred(account_id):
                compared.append(account_id)
        except TransientBrokerError as exc:
            log.warning("account %s: the comparison put off at its reconnect could not be "
                        "made yet: %s", account_id, exc.message)
    return compared


def _comparison_deferred(account_id: int) -> bool:
    with transaction.atomic():
        positions_lock_all(account_id, ())  # first, as a reconnect does: nothing moves now
        fresh = TradingAccount.objects.select_for_update().get(pk=account_id)
        if (fresh.compare_pending_since is None or not fresh.is_connected
                or _events_in_flight(account_id)):
            return False
        snapshot = _snapshot_locked(account_id, adapter_for(fresh), ask_orders_in_doubt=True)
        _statements_superseded(account_id)
        diff = _divergence(snapshot)
        log.info("%s: the run in flight at the reconnect is decided; comparing: %s",
                 fresh.name, diff.describe() if diff else "no difference")
        _compared(fresh, snapshot, diff)
        _mark_reconciled(fresh, snapshot)
        fresh.save(update_fields=["compare_pending_since", *_RECONCILED_FIELDS])
        if fresh.copy_paused:
            pause_heal_check(account=fresh)
        else:
            transaction.on_commit(lambda: failed_exits_resume(account_id=account_id))
    return True


def _differences_due(account: TradingAccount, snapshot: _Snapshot) -> rules.Divergence:
    """What the broker says differently from the copier, to adopt now (a re-read's: no
    pause); nothing while leader events are in flight for the account: our own order of a
    run that never committed may be what differs, so the differences wait as statements
    (`_statements_waiting`) for the re-run, which looks that order up and counts it."""
    diff = _divergence(snapshot)
    in_flight = _events_in_flight(account.pk) if diff else []
    if in_flight:
        _statements_waiting(account, snapshot, diff, in_flight)
        return rules.Divergence({})
    return diff


def _events_in_flight(account_id: int) -> list[int]:
    """Leader events a worker started for this follower and has not decided yet.

    Their orders may be at the broker with no row of ours: the run crashed and its
    transaction rolled back, or it is still running. What the broker says about the
    account then includes our own order; adopted as the trader's, it would be counted
    again by the event's re-run, which looks the order up by its client id (and a
    follower paused for it would be paused for nothing). Until those events are
    decided, a difference on the account waits. (Per account, not per symbol: a
    mapped follower's symbol is the event's route, which this module cannot see.)
    """
    return sql.events_in_flight(account_id=account_id)


def _statements_waiting(account: TradingAccount, snapshot: _Snapshot, diff: rules.Divergence,
                        in_flight: list[int]) -> None:
    """A reconnect's differences become waiting statements: applied after the grace, once
    the events in flight are decided (`position_disagreements_settle`), or cleared by the
    re-run's own count when our order was the difference."""
    log.warning("%s: the broker differs from the copier (%s) while leader events %s are "
                "undecided for it; waiting for their re-run before comparing", account.name,
                diff.describe(), in_flight)
    for symbol, (_known, actual) in diff.symbols.items():
        row = snapshot.rows[symbol]
        row.broker_qty, row.broker_qty_since = actual, snapshot.taken_at
        row.save(update_fields=["broker_qty", "broker_qty_since"])


def _pause(account: TradingAccount, diff: rules.Divergence) -> None:
    account.copy_paused = True
    account.pause_reason = (
        "positions changed outside the copier while disconnected: " + diff.describe()
    )
    account.pause_details = {s: {"copier": k, "broker": a} for s, (k, a) in diff.symbols.items()}
    account.paused_since = clock.now()
    account.save(update_fields=["copy_paused", "pause_reason", "pause_details", "paused_since"])
    log.warning("%s paused: %s", account.name, account.pause_reason)
    alert_raise(kind=AlertKind.PAUSE, account=account, about=account.name,
                text=f"{account.name} paused: {account.pause_reason}. Copying to it resumes "
                     f"by itself once its positions line up with the leader again.")


def _leader_reconciled(account: TradingAccount, adapter: BrokerAdapter) -> TradingAccount:
    with transaction.atomic():
        snapshot = _snapshot_locked(account.pk, adapter)
        _statements_superseded(account.pk)
        leader_positions_reconcile(account=account, broker=snapshot.broker, complete=True)
        fresh = TradingAccount.objects.select_for_update().get(pk=account.pk)
        _mark_connected(fresh, snapshot)
    return fresh


def positions_reread(*, account: TradingAccount, is_leader: bool) -> None:
    """Read the account's positions from the broker again, as a reconnect does, because
    the copier could not count something its stream said (a refused fill).

    On a leader the difference is a move the copier missed: copied close-only. On a
    follower the broker's view is adopted, as from a position update (no pause: the
    copier, not the trader, lost track). The read counts the fills it includes, so
    the stream's later copies of them are not counted again. Raises the adapter's
    TransientBrokerError when the broker cannot answer.
    """
    adapter = adapter_for(account)
    with transaction.atomic():
        snapshot = _snapshot_locked(account.pk, adapter)
        _statements_superseded(account.pk)
        if is_leader:
            leader_positions_reconcile(account=account, broker=snapshot.broker, complete=True)
        else:
            _broker_view_adopted(account, snapshot)
        fresh = TradingAccount.objects.select_for_update().get(pk=account.pk)
        _mark_reconciled(fresh, snapshot)
        fresh.save(update_fields=_RECONCILED_FIELDS)
        if fresh.copy_paused:
            pause_heal_check(account=fresh)
    _state_copied(account, fresh)


def _broker_view_adopted(account: TradingAccount, snapshot: _Snapshot) -> None:
    for symbol, (_known, actual) in _differences_due(account, snapshot).symbols.items():
        _adopted(account, snapshot.rows[symbol], actual)


def leader_positions_reconcile(*, account: TradingAccount, broker: dict[str, int],
                               complete: bool = False) -> None:
    """Leader positions that moved without the copier seeing the fills: missed leader
    events, copied close-only. `complete`: `broker` lists every symbol (flat ones omitted)."""
    with transaction.atomic():
        rows = positions_lock_all(account.pk, broker)
        known = {symbol: row.qty for symbol, row in rows.items()
                 if row.qty and (complete or symbol in broker)}
        stamp = clock.now().strftime("%Y%m%dT%H%M%S%f")
        for symbol, move in sorted(rules.missed_moves(known, broker).items()):
            delta = move.p1 - move.p0
            log.warning("%s moved %s %+d unseen by the copier: copied close-only",
                        account.name, symbol, delta)
            leader_fill_ingest(
                account=account,
                fill=FillInput(f"reconcile-{symbol}-{stamp}-{uuid.uuid4().hex[:8]}", symbol,
                               rules.side_for(delta), abs(delta)),
                source=LeaderEvent.Source.RECONCILE, close_only=True,
            )


def position_disagreements_settle(*, account: TradingAccount | None = None) -> int:
    """Apply what the broker's stream stated about positions and no fill explained in time.

    A venue that streams positions may state one before the fill that made it:
    applying the statement at once and then the fill counted that move twice. So a
    statement that disagrees with the copier waits on its row (`broker_qty`), and a
    fill that brings the position there clears it. One still standing after
    COPIER_POSITION_GRACE_SECONDS is a move whose fill never came: on a leader it is
    copied close-only, as a missed move; on a follower it is adopted (and a paused
    one gets its heal check), unless leader events are in flight for it
    (`_events_in_flight`): then it waits for their re-run. A disconnected account's
    statements wait: its reconnect reads everything again and supersedes them.

    `account`: that one only (the listener, after each batch of events); without, every
    account (the periodic task). Returns how many positions it applied. Comparisons a
    reconnect put off for a run in flight are made first, where that run is decided
    (`comparisons_deferred_run`).
    """
    if account is None:
        comparisons_deferred_run(account_ids=TradingAccount.objects.filter(
            compare_pending_since__isnull=False).values_list("pk", flat=True))
    elif account.compare_pending_since is not None:
        comparisons_deferred_run(account_ids=[account.pk])
        account.compare_pending_since = TradingAccount.objects.filter(
            pk=account.pk).values_list("compare_pending_since", flat=True).first()
    pending = Position.objects.filter(broker_qty__isnull=False)
    if account is not None:
        pending = pending.filter(account_id=account.pk)
    account_ids = sorted(set(pending.values_list("account_id", flat=True)))
    return sum(_disagreements_settled(account_id) for account_id in account_ids)


def _disagreements_settled(account_id: int) -> int:
    now = clock.now()
    with transaction.atomic():
        rows = positions_lock_all(account_id, ())
        account = TradingAccount.objects.get(pk=account_id)
        if not account.is_connected:
            return 0
        answered = _statements_answered(rows, now)
        due = {symbol: stated for symbol, stated in answered.items()
               if stated != rows[symbol].qty}
        is_leader = CopyGroup.objects.filter(leader_id=account_id).exists()
        if due and not is_leader and _events_in_flight(account_id):
            return 0  # our own order may be the difference: its event's re-run counts it
        for symbol in answered:
            row = rows[symbol]
            row.broker_qty = row.broker_qty_since = None
            row.save(update_fields=["broker_qty", "broker_qty_since"])
        if not due:
            return 0
        _disagreements_applied(account, rows, due, is_leader=is_leader)
    return len(due)


def _statements_answered(rows: dict[str, Position], now: dt.datetime) -> dict[str, int]:
    """The statements waiting on `rows` that are settled now, by symbol: one the copier's
    position agrees with already (its fill came), or one older than
    COPIER_POSITION_GRACE_SECONDS (or of no known age): the fill that would explain it is
    not coming."""
    grace = dt.timedelta(seconds=settings.COPIER_POSITION_GRACE_SECONDS)
    return {symbol: row.broker_qty for symbol, row in rows.items()
            if row.broker_qty is not None and (
                row.broker_qty == row.qty or row.broker_qty_since is None
                or now - row.broker_qty_since >= grace)}


def _disagreements_applied(account: TradingAccount, rows: dict[str, Position],
                           due: dict[str, int], *, is_leader: bool) -> None:
    """A leader's move no fill explained is a missed move, copied close-only; a
    follower's is the broker's view, adopted, after which its pause may heal."""
    if is_leader:
        leader_positions_reconcile(account=account, broker=due)
        return
    for symbol, stated in due.items():
        _adopted(account, rows[symbol], stated)
    pause_heal_check(account=account)


def _adopted(account: TradingAccount, row: Position, actual: int) -> None:
    log.warning("%s %s: broker says %+d, the copier had %+d; adopting the broker's",
                account.name, row.symbol, actual, row.qty)
    row.qty = actual
    row.save(update_fields=["qty", "updated_at"])


def _statements_superseded(account_id: int) -> None:
    """A full read of the broker's positions answers every statement still waiting."""
    Position.objects.filter(account_id=account_id, broker_qty__isnull=False).update(
        broker_qty=None, broker_qty_since=None
    )


def pause_heal_check(
    *, account: TradingAccount, leader_override: dict[str, int] | None = None
) -> bool:
    """Clear the pause if every symbol sits at E(P); True when the account is not paused.

    Only while the account is connected (as `account` says: pass a fresh one): the
    positions of an account that is away cannot be confirmed, so its pause stays
    until the reconnect's comparison has checked them.
    `leader_override` replaces leader positions (P0 of the event being judged).
    """
    if not account.copy_paused:
        return True
    if not account.is_connected:
        return False
    follower = Follower.objects.select_related("group").filter(account_id=account.pk).first()
    if follower is None:
        return False
    leader = positions_of(follower.group.leader_id)
    leader.update(leader_override or {})
    # On the follower's own symbols: the leader's NQ is the follower's MNQ when mapped.
    if not symbol_map.heals(positions_of(account.pk), leader, follower.multiplier,
                            follower.group.reverse, follower.symbols(),
                            fixed_qty=follower.fixed_qty, max_position=follower.max_position):
        return False
    TradingAccount.objects.filter(pk=account.pk).update(
        copy_paused=False, pause_reason="", pause_details={}, paused_since=None
    )
    account.copy_paused, account.pause_reason, account.pause_details = False, "", {}
    account.paused_since = None
    log.info("%s: positions line up with the leader again, pause cleared", account.name)
    transaction.on_commit(lambda: failed_exits_resume(account_id=account.pk))
    return True


def paused_heal_all() -> list[str]:
    """The periodic heal check; returns the names of the accounts it resumed.

    A paused account that is disconnected stays paused (see `pause_heal_check`).
    """
    healed = []
    for account in TradingAccount.objects.filter(copy_paused=True):
        if pause_heal_check(account=account):
            healed.append(account.name)
    return healed
