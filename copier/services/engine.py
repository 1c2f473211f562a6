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

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F

from accounts.models import Position, TradingAccount
from copier import clock, rules
from copier.models import CopyGroup, Decision, Follower, LeaderEvent, Order, Quarantine
from copier.services import failed_exits, sync_guard
from copier.services.placement import OrderSpec, Sent, copy_order_id, orders_place
from copier.services.positions import positions_lock, positions_save
from copier.services.quarantine import quarantine_create, quarantine_lift

log = logging.getLogger(__name__)


_EVENT_FIELDS = [f.attname for f in LeaderEvent._meta.concrete_fields]
_FOLLOWER_FIELDS = [f.attname for f in Follower._meta.concrete_fields]
_GROUP_FIELDS = [f.attname for f in CopyGroup._meta.concrete_fields]
# The first round trip of every event, written out because the ORM's compile cost is a
# good part of a one-follower copy's latency. It counts the run, marks the event picked
# up and, on the first run, counts the followers it concerns (those that joined before
# it); and it reads those followers with their groups, one row each (one row of NULLs
# when there are none).
RUN_EVENT_SQL = (
    "WITH e AS (UPDATE copier_leaderevent e SET runs = e.runs + 1,"  # noqa: S608 (fixed column names)
    " status = CASE WHEN e.status = 'received' THEN 'dispatched' ELSE e.status END,"
    " dispatched_at = COALESCE(e.dispatched_at, %s),"
    " followers_total = COALESCE(e.followers_total,"
    " (SELECT count(*) FROM copier_follower f JOIN copier_copygroup g ON g.id = f.group_id"
    "  WHERE g.leader_id = e.account_id AND f.start_event_id < e.id))"
    " WHERE e.id = %s RETURNING " + ", ".join(f"e.{c}" for c in _EVENT_FIELDS) + ")"
    " SELECT " + ", ".join(f"e.{c}" for c in _EVENT_FIELDS) + ", "
    + ", ".join(f"f.{c}" for c in _FOLLOWER_FIELDS) + ", "
    + ", ".join(f"g.{c}" for c in _GROUP_FIELDS)
    + " FROM e LEFT JOIN (copier_follower f JOIN copier_copygroup g ON g.id = f.group_id)"
    " ON g.leader_id = e.account_id AND f.start_event_id < e.id ORDER BY f.id"
)


@dataclass
class Started:
    """An event whose processing has started: the followers to copy, in batches."""

    event: LeaderEvent
    batches: list[list[Follower]]


def event_process(*, event_id: int) -> Started | None:
    """Count the run (a second run means a crash may have left orders) and batch the followers.

    The caller (a task) copies the first batch itself and enqueues the rest,
    so a small group costs a single task hop.
    """
    with connection.cursor() as cursor:
        cursor.execute(RUN_EVENT_SQL, [clock.now(), event_id])
        rows = cursor.fetchall()
    if not rows:
        log.error("leader event %s does not exist", event_id)
        return None
    split, group_at = len(_EVENT_FIELDS), len(_EVENT_FIELDS) + len(_FOLLOWER_FIELDS)
    event = LeaderEvent.from_db("default", _EVENT_FIELDS, rows[0][:split])
    if event.status == LeaderEvent.Status.DONE:
        return None
    followers = []
    for row in rows:
        if row[split] is None:  # the LEFT JOIN's row for an event nobody follows
            continue
        follower = Follower.from_db("default", _FOLLOWER_FIELDS, row[split:group_at])
        follower.group = CopyGroup.from_db("default", _GROUP_FIELDS, row[group_at:])
        followers.append(follower)
    size = max(1, settings.COPIER_BATCH_SIZE)
    batches = [followers[i : i + size] for i in range(0, len(followers), size)]
    return Started(event, batches or [[]])


def followers_copy(*, event_id: int, follower_ids: Sequence[int]) -> None:
    """Copy one batch of an event's followers (a fanned-out task)."""
    event = LeaderEvent.objects.get(pk=event_id)
    followers = list(
        Follower.objects.filter(pk__in=follower_ids).select_related("group").order_by("id")
    )
    gone = len(set(follower_ids)) - len(followers)
    if gone:  # removed from the group since the fan-out: nobody left to decide for
        LeaderEvent.objects.filter(pk=event_id).update(followers_total=F("followers_total") - gone)
    batch_copy(event=event, followers=followers)


def batch_copy(*, event: LeaderEvent, followers: Sequence[Follower]) -> None:
    """Decide and place for these followers of the event, in one transaction."""
    if followers:
        try:
            with transaction.atomic():
                _Batch(event, followers).run()
        except Exception:
            # The batch rolled back; the event stays not-done and the periodic
            # re-dispatch comes back for it, looking orders up before resending.
            log.exception("copying event %s to %d followers failed", event.pk, len(followers))
            raise
    event_finish_if_complete(event_id=event.pk)


FINISH_EVENT_SQL = """
UPDATE copier_leaderevent SET status = 'done', done_at = %s
WHERE id = %s AND status <> 'done' AND followers_total IS NOT NULL
  AND followers_total <= (SELECT count(*) FROM copier_decision WHERE event_id = %s)
"""


def event_finish_if_complete(*, event_id: int) -> None:
    """Done once every follower counted at fan-out has a decision (one conditional UPDATE)."""
    with connection.cursor() as cursor:
        cursor.execute(FINISH_EVENT_SQL, [clock.now(), event_id, event_id])


@dataclass
class _Work:
    """One follower's evaluation of one event, from the rules to the broker's answers."""

    event: LeaderEvent
    follower: Follower
    position: Position
    outcome: rules.Decision
    notes: list[str]
    before: int
    legs: tuple[rules.Leg, ...]
    results: list[tuple[rules.Leg, rules.LegOutcome]] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)
    stopped: bool = False

    @property
    def account(self) -> TradingAccount:
        return self.position.account


class _Batch:
    def __init__(self, event: LeaderEvent, followers: Sequence[Follower]) -> None:
        self.event = event
        self.followers = followers
        # A second run of this event may follow a crash that left orders at the
        # broker: look them up before sending anything again.
        self.look_up_first = event.runs > 1

    def run(self) -> None:
        positions = positions_lock([f.account_id for f in self.followers], self.event.symbol)
        todo: list[tuple[Follower, Position, int]] = []
        for follower in self.followers:
            position = positions[follower.account_id]
            floor = max(position.last_event_id or 0, follower.start_event_id)
            if floor < self.event.pk:  # else decided already: a redelivered or repeated task
                todo.append((follower, position, floor))
        self._catch_up(todo)
        work = [self._evaluate(self.event, f, position) for f, position, _ in todo]
        self._place(work)
        self._save(work)

    def _catch_up(self, todo: list[tuple[Follower, Position, int]]) -> None:
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
            work = [self._evaluate(ev, f, position) for f, position, floor in behind
                    if floor < ev.pk]
            self._place(work, look_up_first=self.look_up_first or ev.runs > 0)
            self._save(work)

    def _evaluate(self, ev: LeaderEvent, follower: Follower, position: Position) -> _Work:
        account = position.account
        group = follower.group
        enabled = group.enabled and follower.enabled
        paused = account.copy_paused
        if enabled and paused:
            paused = not sync_guard.pause_heal_check(
                account=account, leader_override={ev.symbol: ev.p0}
            )
        facts = rules.FollowerFacts(
            position=position.qty, multiplier=follower.multiplier, reverse=group.reverse,
            exit_mode=rules.ExitMode(group.exit_mode), enabled=enabled, paused=paused,
            quarantined=position.quarantined, close_only=ev.close_only,
        )
        outcome = rules.decide(rules.LeaderMove(ev.p0, ev.p1), facts)
        notes = [outcome.note] if outcome.note else []
        if outcome.lift_quarantine:
            quarantine_lift(account=account, symbol=ev.symbol, by="auto: follower and leader flat")
            position.quarantined = False
            notes.insert(0, rules.Reason.QUARANTINE_LIFTED.value)
        if outcome.quarantine:
            quarantine_create(account=account, symbol=ev.symbol,
                              reason=Quarantine.Reason.OPPOSITE_SIDE, event=ev,
                              detail=f"follower {position.qty:+d} against the leader's side")
            position.quarantined = True
        return _Work(ev, follower, position, outcome, notes, position.qty,
                     rules.ordered_for_placement(outcome.legs))

    def _place(self, work: list[_Work], *, look_up_first: bool | None = None) -> None:
        """Leg by leg across all followers: every first leg at once, then the second legs
        of the followers whose first one went out (exits before entries)."""
        look_up = self.look_up_first if look_up_first is None else look_up_first
        for index in range(max((len(w.legs) for w in work), default=0)):
            sending: list[_Work] = []
            for w in work:
                if index >= len(w.legs):
                    continue
                if w.stopped or not w.account.is_connected:
                    self._not_sent(w, w.legs[index], disconnected=not w.account.is_connected)
                else:
                    sending.append(w)
            specs = [
                OrderSpec(account=w.account, symbol=w.event.symbol, leg=w.legs[index],
                          client_order_id=copy_order_id(w.event.pk, w.account.pk, index))
                for w in sending
            ]
            for w, sent in zip(sending, orders_place(specs, look_up_first=look_up), strict=True):
                self._sent(w, w.legs[index], sent)

    def _not_sent(self, w: _Work, leg: rules.Leg, *, disconnected: bool) -> None:
        """A leg after a failed one, or for a disconnected follower: nothing goes out."""
        outcome = (rules.leg_outcome(leg, failed=False, disconnected=True) if disconnected
                   else rules.LegOutcome.DROPPED)
        if outcome == rules.LegOutcome.QUEUED:
            failed_exits.failed_exit_queue(account=w.account, symbol=w.event.symbol, leg=leg,
                                           event=w.event, attempts=0,
                                           error="follower disconnected")
        w.results.append((leg, outcome))
        w.stopped = True

    def _sent(self, w: _Work, leg: rules.Leg, sent: Sent) -> None:
        w.position.qty += rules.signed(leg.side, sent.filled)
        if sent.order.status != Order.Status.FAILED:
            w.orders.append(sent.order)
        outcome = rules.leg_outcome(leg, failed=sent.error is not None, permanent=sent.permanent)
        if sent.error is not None:
            _failed(w, leg, sent, outcome)
        w.results.append((leg, outcome))
        w.stopped = sent.error is not None

    def _save(self, work: list[_Work]) -> None:
        now = clock.now()
        decisions = Decision.objects.bulk_create([
            Decision(
                event=w.event, account=w.account, symbol=w.event.symbol,
                reason=rules.placement_reason(w.outcome.reason, w.results),
                detail="; ".join(w.notes), position_before=w.before,
                expected_before=w.outcome.e0, expected_after=w.outcome.e1,
                planned_legs=_legs_json(w.legs), position_after=w.position.qty,
                placed_legs=[{**_legs_json([leg])[0], "outcome": result.value}
                             for leg, result in w.results],
                state=Decision.State.SETTLED, created_at=now, settled_at=now,
            )
            for w in work
        ])
        orders = []
        for w, decision in zip(work, decisions, strict=True):
            for order in w.orders:
                order.decision = decision
                orders.append(order)
            w.position.last_event_id = w.event.pk
        Order.objects.bulk_create(orders)
        positions_save([w.position for w in work])


def _failed(w: _Work, leg: rules.Leg, sent: Sent, outcome: rules.LegOutcome) -> None:
    """Record what a failed leg leaves behind: a quarantine, a failed exit to retry."""
    assert sent.error is not None
    error = sent.error.message
    if outcome == rules.LegOutcome.REJECTED:
        quarantine_create(account=w.account, symbol=w.event.symbol, event=w.event,
                          reason=Quarantine.Reason.REJECTED, detail=error)
        w.position.quarantined = True
    is_exit = leg.kind == rules.LegKind.EXIT
    if is_exit and outcome in (rules.LegOutcome.REJECTED, rules.LegOutcome.QUEUED):
        queued = failed_exits.failed_exit_queue(
            account=w.account, symbol=w.event.symbol, leg=leg, event=w.event, attempts=1,
            error=error, rejected=outcome == rules.LegOutcome.REJECTED,
        )
        sent.order.failed_exit = queued  # outcome unknown: the retry looks it up first


def _legs_json(legs: Sequence[rules.Leg]) -> list[dict[str, object]]:
    return [{"side": leg.side.value, "qty": leg.qty, "kind": leg.kind.value} for leg in legs]
