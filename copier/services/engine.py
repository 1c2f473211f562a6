"""The copy engine: for one leader event, decide and place for every follower.

One task per batch of followers (the first batch in the event's own task,
the others fanned out to other worker processes). A batch is one
transaction that locks the followers' (account, symbol) rows in one
statement, decides each follower with the pure rules, places all their
orders at once (exits first, then the entries whose exit went out), and
writes decisions, orders and positions in bulk. So a second event for the
same follower and symbol always sees the position the first one left.

Each row carries `last_event_id`, the watermark of the events decided for
it: a redelivered task finds its event decided and does nothing; a task that
arrives before an earlier event's task decides the earlier event first.
If the worker dies mid-batch, everything of ours rolls back while the broker
keeps what it executed; the event's next run looks every client order id up
at the broker before sending anything again.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F

from accounts.models import Position, TradingAccount
from brokers.base import BrokerError, TransientBrokerError
from copier import sql
from copier.domain import rules
from copier.domain.guard import Standing
from copier.domain.symbol_map import NO_MAPPING, Micro, Route, SymbolMap
from copier.models import Decision, LeaderEvent, Order, Quarantine
from copier.services import failed_exits, losslimit, sync_guard
from copier.services.placement import (
    COMPARISON_PENDING,
    OrderSpec,
    Sent,
    copy_order_id,
    crashed_run_orders_record,
    crashed_run_suspects,
    order_in_doubt,
    order_looked_up_only,
    order_not_sent,
    orders_place,
    unknown_orders_settle,
    working_expiry_schedule,
)
from copier.services.positions import (
    open_symbols_count,
    positions_lock_pairs,
    positions_save,
)
from copier.services.quarantine import quarantine_create, quarantine_lift
from core import clock

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Seat:
    """A follower as one event sees it: its settings as they were when the event first ran."""

    follower_id: int
    account_id: int
    multiplier: Decimal
    enabled: bool  # the follower's and its group's
    reverse: bool
    exit_mode: rules.ExitMode
    start_event_id: int
    exits_only: bool = False  # the follower's or its group's mode
    fixed_qty: int | None = None  # instead of the multiplier
    limits: rules.RiskLimits = field(default_factory=rules.RiskLimits)
    symbols: SymbolMap = NO_MAPPING  # where the leader's symbol goes on this follower
    loss_lock: rules.LossLock | None = None  # the daily loss limit's lock the fill fell in
    guard: Standing | None = None  # the account guard as last read when the event froze it

    @classmethod
    def parse(cls, raw: list[Any]) -> Seat:
        """A seat as `sql.EVENT_RUN` froze it: a `sql.FrozenFollower`'s array (a stored
        array of another length is refused, never read into the wrong fields)."""
        f = sql.FrozenFollower._make(raw)
        limits = _NO_LIMITS
        if (f.max_order_qty, f.max_position, f.max_symbols, f.window_start) != (None,) * 4:
            limits = rules.RiskLimits(f.max_order_qty, f.max_position, f.max_symbols, _window(
                f.window_start, f.window_end, f.window_tz, f.window_days))
        symbols = NO_MAPPING
        if f.symbol_rules or f.micro != Micro.OFF:
            symbols = SymbolMap.from_json({"micro": f.micro, "rules": f.symbol_rules})
        return cls(f.follower_id, f.account_id, Decimal(f.multiplier), f.enabled, f.reverse,
                   rules.ExitMode(f.exit_mode), f.start_event_id, f.exits_only, f.fixed_qty,
                   limits, symbols, _loss_lock(f.loss_lock),
                   None if f.guard is None else Standing.from_json(f.guard))

    def route(self, leader_symbol: str) -> Route:
        """The follower's symbol and ratio for the leader's symbol (copier.domain.symbol_map)."""
        return self.symbols.route(leader_symbol)


_NO_LIMITS = rules.RiskLimits()  # a shared immutable default


def _window(start: str | None, end: str | None, tz: str | None,
            days: str | None) -> rules.TradingWindow | None:
    """A seat's trading window as frozen with the event; none unless both ends are set."""
    if not (start and end):
        return None
    return rules.TradingWindow(dt.time.fromisoformat(start), dt.time.fromisoformat(end),
                               tz or "UTC", rules.days_parse(days or ""))


def _loss_lock(lock: dict[str, Any] | None) -> rules.LossLock | None:
    """The daily loss limit's lock frozen with the event; none unless the fill was read
    inside one."""
    if not lock:
        return None
    return rules.LossLock(Decimal(lock["limit"] or 0), Decimal(lock["realized"] or 0),
                          dt.datetime.fromisoformat(lock["since"]),
                          dt.datetime.fromisoformat(lock["until"]),
                          losslimit.session_reset().tz)


def event_seats(event: LeaderEvent, follower_ids: Collection[int] | None = None) -> list[Seat]:
    """The followers frozen with the event (`follower_ids`: only those)."""
    frozen = event.followers_frozen
    if isinstance(frozen, str):  # a raw row: psycopg hands jsonb to Django as text
        frozen = event.followers_frozen = json.loads(frozen)
    if follower_ids is not None:  # read before parsing: a batch parses only its own seats
        frozen = [raw for raw in frozen or [] if raw[_FOLLOWER_ID] in follower_ids]
    return [Seat.parse(raw) for raw in frozen or []]


_FOLLOWER_ID = sql.FrozenFollower._fields.index("follower_id")


@dataclass
class StartedEvent:
    """An event whose copy has started: its followers, in batches."""

    event: LeaderEvent
    batches: list[list[Seat]]


def event_start(*, event_id: int) -> StartedEvent | None:
    """Count the run (a second run means a crash may have left orders) and batch the followers.

    It copies nothing: the caller (a task) copies the first batch itself
    (`seats_copy`) and publishes the rest, so a small group costs a single task hop.
    None: nothing to copy (no such event, or done already).
    """
    event = sql.event_run(event_id=event_id, now=clock.now())
    if event is None:
        log.error("leader event %s does not exist", event_id)
        return None
    if event.status == LeaderEvent.Status.DONE:
        return None
    seats = event_seats(event)
    size = max(1, settings.COPIER_BATCH_SIZE)
    batches = [seats[i : i + size] for i in range(0, len(seats), size)]
    return StartedEvent(event, batches or [[]])


def fanned_out_batch_copy(*, event_id: int, follower_ids: Sequence[int]) -> None:
    """A batch published to another worker: only ids travel in the message, so the event
    and the followers' frozen seats are loaded here, then copied as `seats_copy` does."""
    event = LeaderEvent.objects.get(pk=event_id)
    seats_copy(event=event, seats=event_seats(event, set(follower_ids)))


def seats_copy(*, event: LeaderEvent, seats: Sequence[Seat]) -> None:
    """Decide and place for these followers of the event, in one transaction.

    If the batch fails, each follower is tried again alone (looking its orders up
    first: the failed try may have reached the broker), so that one follower's
    failure never stops another's copy; the one that still fails is left undecided
    for the periodic re-dispatch.
    """
    compare: list[int] = []
    if seats:
        try:
            with transaction.atomic():
                batch = _Batch(event, seats)
                batch.run()
            compare = batch.compare_pending
        except Exception:
            log.exception("copying event %s to %d followers failed; trying each alone",
                          event.pk, len(seats))
            for seat in seats:
                compare += _seat_copy_alone(event, seat)
    event_finish_if_complete(event_id=event.pk)
    if compare:  # this run may have been the one a reconnect's comparison waited for
        sync_guard.comparisons_deferred_run(account_ids=compare)


def _seat_copy_alone(event: LeaderEvent, seat: Seat) -> list[int]:
    """One follower's copy on its own; returns its account's id when a comparison waits
    for it (`_Batch.compare_pending`)."""
    try:
        with transaction.atomic():
            if not TradingAccount.objects.filter(pk=seat.account_id).exists():
                # the account was deleted since the event first ran: nobody to decide for
                LeaderEvent.objects.filter(pk=event.pk).update(
                    followers_total=F("followers_total") - 1)
                return []
            batch = _Batch(event, [seat], look_up_first=True)
            batch.run()
        return batch.compare_pending
    except Exception as exc:
        log.exception("copying event %s to account %s failed; the others went on",
                      event.pk, seat.account_id)
        TradingAccount.objects.filter(pk=seat.account_id).update(
            last_error=f"copy of leader event {event.pk} failed: {exc!r}"[:2000])
        return []


def event_finish_if_complete(*, event_id: int) -> None:
    """Done once every follower counted at fan-out has a decision (one conditional UPDATE)."""
    sql.event_finish(event_id=event_id, now=clock.now())


@dataclass
class _CopyJob:
    """One follower's copy of one event, from the rules to the broker's answers."""

    event: LeaderEvent
    symbol: str  # the follower's (mapped) symbol: its position, orders, quarantine, exits
    position: Position
    verdict: rules.Verdict
    notes: list[rules.Note]
    before: int
    legs: tuple[rules.Leg, ...]
    results: list[tuple[rules.Leg, rules.LegOutcome]] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)
    stopped: bool = False
    working: bool = False  # its last order sent works at the broker: the rest waits

    @property
    def account(self) -> TradingAccount:
        return self.position.account

    def spec(self, index: int) -> OrderSpec:
        return OrderSpec(account=self.account, symbol=self.symbol, leg=self.legs[index],
                         client_order_id=copy_order_id(self.event.pk, self.account.pk, index))


class _Batch:
    def __init__(self, event: LeaderEvent, seats: Sequence[Seat], *,
                 look_up_first: bool = False) -> None:
        self.event = event
        self.seats = seats
        # A second run of this event may follow a crash that left orders at the
        # broker: look them up before sending anything again.
        self.look_up_first = look_up_first or event.runs > 1
        self.open_symbols: dict[int, int] = {}
        # Accounts decided here whose reconnect's comparison waits for a run in flight
        # (read with their rows: no query of its own), compared once this batch commits.
        self.compare_pending: list[int] = []

    def run(self) -> None:
        unmapped, seats, positions = self._rows_lock()
        todo, passed = self._undecided(seats, positions)
        self._unmapped_record(unmapped, passed, lambda a: positions[a].symbol)
        self.compare_pending = [p.account_id for p in positions.values()
                                if p.account.compare_pending_since is not None]
        self._unknown_orders_settle(todo)
        todo = self._not_waiting(todo)
        # Max open symbols needs the follower's other symbols: counted under a per-account
        # lock (services.positions.open_symbols_count), only for followers with that limit,
        # beside the follower's own symbol for this event (a mapped follower's MNQZ6).
        self.open_symbols = open_symbols_count(
            {seat.account_id: position.symbol for seat, position, _f in todo
             if seat.limits.max_symbols is not None})
        self._catch_up(todo)
        todo = self._not_waiting(todo)  # an earlier event just caught up left one working
        jobs = [self._evaluate(self.event, seat, position) for seat, position, _ in todo]
        if self.event.runs > 1:  # an earlier run crashed: what it sent and never recorded
            self._crashed_run_recorded(self.event, jobs)
        self._place(jobs)
        self._save(jobs)

    def _rows_lock(self) -> tuple[dict[int, str], list[Seat], dict[int, Position]]:
        """Each follower's row on the symbol it trades this event as, all locked in one
        statement (by account id); the followers whose mapping blocks the event's symbol
        (why, by account id) have no row: they get their decision, no order."""
        routes = {s.account_id: s.route(self.event.symbol) for s in self.seats}
        unmapped = {a: r.blocked for a, r in routes.items() if r.blocked}
        seats = [s for s in self.seats if s.account_id not in unmapped]
        positions = positions_lock_pairs(
            sorted((s.account_id, routes[s.account_id].symbol) for s in seats))
        return unmapped, seats, positions

    def _undecided(self, seats: Sequence[Seat], positions: dict[int, Position]
                   ) -> tuple[list[tuple[Seat, Position, int]], list[int]]:
        """The followers this event is still to be decided for, each with its floor (the
        row's watermark or the seat's start, the later); and those whose row is past the
        event already (decided, or passed by a later event: see `_unmapped_record`)."""
        todo: list[tuple[Seat, Position, int]] = []
        passed: list[int] = []
        for seat in seats:
            position = positions[seat.account_id]
            floor = max(position.last_event_id or 0, seat.start_event_id)
            if floor < self.event.pk:  # else decided already: a redelivered or repeated task
                todo.append((seat, position, floor))
            else:
                passed.append(seat.account_id)
        return todo, passed

    @staticmethod
    def _unknown_orders_settle(todo: list[tuple[Seat, Position, int]]) -> None:
        """A row with orders in doubt has them asked about first: what they did moves the
        position the event is judged on; one still unknown blocks the follower's legs
        (`_held`), one working at the broker makes it wait (`_not_waiting`)."""
        for _seat, position, _floor in todo:
            position.blocked = ""
            if position.unknown_orders:
                settled = unknown_orders_settle(account=position.account,
                                                symbol=position.symbol)
                position.qty += settled.moved
                position.blocked = settled.blocked
                position.working_orders = position.working_orders or settled.working

    def _crashed_run_recorded(self, ev: LeaderEvent, jobs: Sequence[_CopyJob]) -> None:
        """The orders a crashed run of `ev` sent and never recorded, beyond the legs this
        run will send itself (those are looked up before sending: `look_up_first`), whose
        fills the stream counted as the trader's: recorded as the copier's now
        (placement.crashed_run_orders_record). Typically the crashed run's fill made the
        follower whole, and this run has nothing left to send."""
        suspects = crashed_run_suspects(event_id=ev.pk,
                                        account_ids=[job.account.pk for job in jobs])
        for job in jobs:
            if job.account.pk not in suspects:
                continue
            found = crashed_run_orders_record(event_id=ev.pk, account=job.account,
                                              symbol=job.symbol, position_qty=job.position.qty,
                                              first_leg=len(job.legs))
            job.position.qty += found.moved
            job.position.working_orders = job.position.working_orders or found.working

    def _not_waiting(self, todo: list[tuple[Seat, Position, int]]
                     ) -> list[tuple[Seat, Position, int]]:
        """Followers with an order still working on the symbol are not decided now: the
        event stays in flight for them and is decided, in order, once the order has
        settled (copier.services.working). The others go on."""
        waiting = [p for _s, p, _f in todo if p.working_orders]
        if not waiting:
            return todo
        for position in waiting:
            log.info("event %s for %s %s waits: an order of the copier's works at the broker",
                     self.event.pk, position.account.name, position.symbol)
        positions_save(waiting)  # an unknown order's look-up may have moved it
        return [item for item in todo if not item[1].working_orders]

    def _unmapped_record(self, unmapped: dict[int, str], passed: list[int],
                         positions_symbol: Callable[[int], str]) -> None:
        """Followers that do not trade this event's symbol get their decision, no order.

        `unmapped`: their mapping blocks the leader's symbol (copier.domain.symbol_map.Route).
        `passed`: their row's watermark is past this event, yet nothing was decided for
        them: a later event of another leader symbol, routed to the same follower
        symbol after their mapping changed, was decided first. The event is not
        judged on a position that a later one already moved; it is recorded, never
        left undecided. (A redelivered task finds the decision there: nothing to do.)
        """
        if passed:
            decided = set(Decision.objects.filter(event=self.event, account_id__in=passed)
                          .values_list("account_id", flat=True))
            for account_id in set(passed) - decided:
                unmapped[account_id] = (
                    f"a later event on {positions_symbol(account_id)} was decided first (the "
                    f"follower's symbol mapping or group changed while this one was in "
                    f"flight): not judged on a position it did not see")
        if not unmapped:
            return
        now = clock.now()
        Decision.objects.bulk_create([
            Decision(event=self.event, account_id=account_id, symbol=self.event.symbol,
                     reason=rules.Reason.NOT_MAPPED,
                     notes=[rules.Note.of(rules.NoteKind.NOT_MAPPED, why=why).to_json()],
                     created_at=now, settled_at=now)
            for account_id, why in sorted(unmapped.items())
        ], ignore_conflicts=True)

    def _catch_up(self, todo: list[tuple[Seat, Position, int]]) -> None:
        """Earlier events still undecided for some followers (their tasks are late): decide
        them first, oldest first, each placed before the next is judged."""
        prev = self.event.prev_event_id
        behind = [item for item in todo if prev is not None and prev > item[2]]
        if not behind:
            return
        earlier = LeaderEvent.objects.filter(
            account_id=self.event.account_id, symbol=self.event.symbol,
            id__gt=min(floor for _, _, floor in behind), id__lt=self.event.pk,
        ).order_by("id")
        for ev in earlier:
            behind = [item for item in behind if not item[1].working_orders]
            frozen = {s.account_id: s for s in event_seats(ev)}
            # An earlier event that routed this follower to another symbol (its mapping
            # changed in between) is not this row's: its own task decides it on its row.
            jobs = [self._evaluate(ev, frozen.get(seat.account_id, seat), position)
                    for seat, position, floor in behind if floor < ev.pk
                    and frozen.get(seat.account_id, seat).route(ev.symbol).symbol
                    == position.symbol]
            if ev.runs > 0:  # a run of its own began: it may have crashed after sending
                self._crashed_run_recorded(ev, jobs)
            self._place(jobs, look_up_first=self.look_up_first or ev.runs > 0)
            self._save(jobs)

    def _evaluate(self, ev: LeaderEvent, seat: Seat, position: Position) -> _CopyJob:
        account = position.account
        route = seat.route(ev.symbol)  # the position row is on route.symbol (locked so)
        symbol = position.symbol
        paused = account.copy_paused
        if seat.enabled and paused:
            paused = not sync_guard.pause_heal_check(
                account=account, leader_override={ev.symbol: ev.p0}
            )
        facts = rules.FollowerFacts(
            position=position.qty, multiplier=seat.multiplier, ratio=route.ratio,
            reverse=seat.reverse,
            exit_mode=seat.exit_mode, enabled=seat.enabled, paused=paused,
            quarantined=position.quarantined, close_only=ev.close_only,
            exits_only=seat.exits_only, fixed_qty=seat.fixed_qty, limits=seat.limits,
            open_symbols=self.open_symbols.get(account.pk, 0), when=ev.received_at,
            loss_lock=seat.loss_lock, guard=seat.guard,
        )
        verdict = rules.decide(rules.LeaderMove(ev.p0, ev.p1), facts)
        notes = list(verdict.notes)
        if verdict.lift_quarantine:
            quarantine_lift(account=account, symbol=symbol, by="auto: follower and leader flat")
            position.quarantined = False
            notes.insert(0, rules.Note.of(rules.NoteKind.QUARANTINE_LIFTED))
        if verdict.quarantine:
            quarantine_create(account=account, symbol=symbol,
                              reason=Quarantine.Reason.OPPOSITE_SIDE, event=ev,
                              detail=f"follower {position.qty:+d} against the leader's side")
            position.quarantined = True
        if symbol != ev.symbol:
            notes.insert(0, rules.Note.of(rules.NoteKind.ROUTED, leader=ev.symbol, symbol=symbol,
                                          ratio=f"{route.ratio.normalize():f}"))
        return _CopyJob(ev, symbol, position, verdict, notes, position.qty,
                     rules.ordered_for_placement(verdict.legs))

    def _place(self, jobs: list[_CopyJob], *, look_up_first: bool | None = None) -> None:
        """Leg by leg across all followers: every first leg at once, then the second legs
        of the followers whose first one went out (exits before entries)."""
        look_up = self.look_up_first if look_up_first is None else look_up_first
        for index in range(max((len(job.legs) for job in jobs), default=0)):
            sending: list[_CopyJob] = []
            for job in jobs:
                if index >= len(job.legs):
                    continue
                if job.working:  # the leg before it works at the broker: sent once it fills
                    job.results.append((job.legs[index], rules.LegOutcome.WAITING))
                    continue
                held = self._held(job, index, look_up=look_up)
                if held is not None:
                    self._sent(job, job.legs[index], held)
                elif job.stopped or not job.account.is_connected:
                    self._not_sent(job, job.legs[index], disconnected=not job.account.is_connected)
                else:
                    sending.append(job)
            specs = [job.spec(index) for job in sending]
            for job, sent in zip(sending, orders_place(specs, look_up_first=look_up), strict=True):
                self._sent(job, job.legs[index], sent)

    @staticmethod
    def _held(job: _CopyJob, index: int, *, look_up: bool) -> Sent | None:
        """A leg the copier holds back itself, before any broker is asked (None: it may go)."""
        if look_up and not job.account.is_connected:
            # An earlier run may have sent it, and the broker cannot be asked now.
            return order_in_doubt(job.spec(index), "sent by an earlier run? the follower is "
                                  "disconnected: looked up when it is back")
        if job.stopped:
            return None
        if job.position.blocked:
            return order_not_sent(job.spec(index), TransientBrokerError(job.position.blocked))
        denied = rules.entry_denied(job.legs[index])
        if denied:  # a failed entry (never retried), no quarantine: exits still follow
            return order_not_sent(job.spec(index), BrokerError(denied))
        if job.account.compare_pending_since is not None:
            # The broker differs from the copier's view and the comparison waits for this
            # run: what an earlier try sent is looked up and counted, nothing new goes out
            # on a view the broker contradicts (an exit waits in the queue).
            return order_looked_up_only(job.spec(index), COMPARISON_PENDING)
        return None

    def _not_sent(self, job: _CopyJob, leg: rules.Leg, *, disconnected: bool) -> None:
        """A leg after a failed one, or for a disconnected follower: nothing goes out."""
        outcome = (rules.leg_outcome(leg, failed=False, disconnected=True) if disconnected
                   else rules.LegOutcome.DROPPED)
        if outcome == rules.LegOutcome.QUEUED:
            failed_exits.failed_exit_queue(account=job.account, symbol=job.symbol, leg=leg,
                                           event=job.event, attempts=0,
                                           error="follower disconnected")
        job.results.append((leg, outcome))
        job.stopped = True

    def _sent(self, job: _CopyJob, leg: rules.Leg, sent: Sent) -> None:
        job.position.qty += sent.moved
        if sent.order.status != Order.Status.FAILED:
            job.orders.append(sent.order)
        outcome = rules.leg_outcome(leg, failed=sent.error is not None, permanent=sent.permanent,
                                    disconnected=not job.account.is_connected)
        if sent.error is not None:
            _leg_failure_record(job, leg, sent, outcome)
        elif sent.order.unfilled:
            outcome = _unfilled_record(job, leg, sent)
        job.results.append((leg, outcome))
        job.stopped = sent.error is not None or outcome != rules.LegOutcome.PLACED
        job.working = sent.order.status == Order.Status.ACCEPTED
        if job.working:  # what comes next for this (follower, symbol) waits for it
            job.position.working_orders = True

    def _save(self, jobs: list[_CopyJob]) -> None:
        now = clock.now()
        decisions = [
            Decision(
                event=job.event, account=job.account, symbol=job.symbol,
                reason=rules.placement_reason(job.verdict.reason, job.results),
                notes=[note.to_json() for note in job.notes], position_before=job.before,
                expected_before=job.verdict.e0, expected_after=job.verdict.e1,
                planned_legs=[leg.to_json() for leg in job.legs], position_after=job.position.qty,
                placed_legs=[{**leg.to_json(), "outcome": result.value}
                             for leg, result in job.results],
                # open while an order it sent works at the broker (copier.services.working)
                created_at=now, settled_at=None if job.working else now,
            )
            for job in jobs
        ]
        sql.decisions_insert(decisions=decisions)
        orders = []
        for job, decision in zip(jobs, decisions, strict=True):
            for order in job.orders:
                order.decision = decision
                orders.append(order)
            job.position.last_event_id = job.event.pk
        sql.orders_insert(orders=orders)
        for order in orders:
            working_expiry_schedule(order)
        positions_save([job.position for job in jobs])


def _leg_values(leg: rules.Leg) -> dict[str, Any]:
    return {"leg": leg.kind.value, "side": leg.side.value, "qty": leg.qty}


def _unfilled_record(job: _CopyJob, leg: rules.Leg, sent: Sent) -> rules.LegOutcome:
    """The broker answered the placement with the order ended and a rest unfilled: an
    exit's rest is queued as a failed attempt, an entry's is not sent again."""
    order = sent.order
    job.notes.append(rules.Note.of(rules.NoteKind.LEG_ENDED, **_leg_values(leg),
                                 filled=order.filled_qty))
    if leg.kind == rules.LegKind.EXIT:
        failed_exits.failed_exit_queue(
            account=job.account, symbol=job.symbol, event=job.event, attempts=1,
            leg=rules.Leg(leg.side, order.unfilled, rules.LegKind.EXIT),
            error=f"{order.client_order_id}: {order.unfilled} of {order.qty} unfilled")
        return rules.LegOutcome.QUEUED
    return rules.LegOutcome.PLACED if order.filled_qty else rules.LegOutcome.FAILED


def _leg_failure_record(job: _CopyJob, leg: rules.Leg, sent: Sent,
                        outcome: rules.LegOutcome) -> None:
    """Record what a failed leg leaves behind: a quarantine, a failed exit to retry."""
    assert sent.error is not None
    error = sent.error.message
    job.notes.append(rules.Note.of(rules.NoteKind.LEG_FAILED, **_leg_values(leg), error=error))
    if outcome == rules.LegOutcome.REJECTED:
        quarantine_create(account=job.account, symbol=job.symbol, event=job.event,
                          reason=Quarantine.Reason.REJECTED, detail=error)
        job.position.quarantined = True
    is_exit = leg.kind == rules.LegKind.EXIT
    if is_exit and outcome in (rules.LegOutcome.REJECTED, rules.LegOutcome.QUEUED):
        queued = failed_exits.failed_exit_queue(
            account=job.account, symbol=job.symbol, leg=leg, event=job.event,
            attempts=1 if job.account.is_connected else 0,
            error=error, rejected=outcome == rules.LegOutcome.REJECTED,
        )
        sent.order.failed_exit = queued  # outcome unknown: the retry looks it up first


