"""The copy engine: for one leader event, decide and place for every follower.

One task per batch of followers (the first batch in the event's own task,
the others fanned out to other worker processes). For each follower, one
transaction holds the (follower, symbol) row lock while it evaluates, places
and settles, so a second event for the same follower and symbol always sees
the position the first one left. The row's `last_event_id` watermark makes
the work idempotent and ordered: a redelivered task finds its event decided
and does nothing; a task that arrives before an earlier event's task decides
the earlier event first.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import F

from accounts.models import Position, TradingAccount
from brokers.registry import adapter_for
from copier import clock, rules
from copier.models import Decision, Follower, LeaderEvent, Quarantine
from copier.services import failed_exits, sync_guard
from copier.services.placement import Sent, copy_order_id, order_send
from copier.services.positions import position_lock, positions_ensure
from copier.services.quarantine import quarantine_create, quarantine_lift

log = logging.getLogger(__name__)


def event_process(*, event_id: int) -> list[list[int]]:
    """Start processing an event: returns the follower batches left for other tasks.

    The caller (a task) copies the first batch itself via `followers_copy`
    and enqueues the rest, so a small group costs a single task hop.
    """
    updated = LeaderEvent.objects.filter(pk=event_id).update(runs=F("runs") + 1)
    if not updated:
        log.error("leader event %s does not exist", event_id)
        return []
    event = LeaderEvent.objects.get(pk=event_id)
    if event.status == LeaderEvent.Status.DONE:
        return []
    ids = list(
        Follower.objects.filter(group__leader_id=event.account_id, start_event_id__lt=event.pk)
        .order_by("id").values_list("id", flat=True)
    )
    if event.followers_total is None:
        LeaderEvent.objects.filter(pk=event_id).update(followers_total=len(ids))
    size = max(1, settings.COPIER_BATCH_SIZE)
    return [ids[i : i + size] for i in range(0, len(ids), size)] or [[]]


def followers_copy(*, event_id: int, follower_ids: Sequence[int]) -> None:
    """Decide and place for these followers of the event, each in its own transaction."""
    event = LeaderEvent.objects.select_related("account").get(pk=event_id)
    followers = list(
        Follower.objects.filter(pk__in=follower_ids).select_related("group").order_by("id")
    )
    positions_ensure([f.account_id for f in followers], event.symbol)
    # A second run of this event may follow a crash that left orders at the
    # broker: look them up before sending anything again.
    look_up_first = event.runs > 1
    for follower in followers:
        try:
            _follower_copy(event, follower, look_up_first=look_up_first)
        except Exception:
            # One follower's failure must not starve the others; the event stays
            # not-done and the periodic re-dispatch comes back for this one.
            log.exception("copying event %s to follower %s failed", event_id, follower.pk)
    event_finish_if_complete(event_id=event_id)


def event_finish_if_complete(*, event_id: int) -> None:
    event = LeaderEvent.objects.only("followers_total").get(pk=event_id)
    decided = Decision.objects.filter(event_id=event_id).count()
    if event.followers_total is not None and decided >= event.followers_total:
        LeaderEvent.objects.filter(pk=event_id).exclude(status=LeaderEvent.Status.DONE).update(
            status=LeaderEvent.Status.DONE, done_at=clock.now()
        )


def _follower_copy(event: LeaderEvent, follower: Follower, *, look_up_first: bool) -> None:
    with transaction.atomic():
        position = position_lock(follower.account_id, event.symbol)
        floor = max(position.last_event_id or 0, follower.start_event_id)
        if floor >= event.pk:
            return  # decided already: a redelivered or repeated task
        if event.prev_event_id is not None and event.prev_event_id > floor:
            # An earlier event of this leader and symbol is still undecided for
            # this follower (its task is late): decide it first, in order.
            pending = list(
                LeaderEvent.objects.filter(
                    account_id=event.account_id, symbol=event.symbol, id__gt=floor,
                    id__lte=event.pk,
                ).order_by("id")
            )
        else:
            pending = [event]
        state = _FollowerState(follower=follower, position=position,
                               quarantined=position.quarantined)
        for ev in pending:
            _decide_and_place(ev, state, look_up_first=look_up_first or ev.runs > 0)
            position.last_event_id = ev.pk
            position.save(update_fields=["qty", "last_event_id", "updated_at"])


@dataclass
class _FollowerState:
    follower: Follower
    position: Position
    quarantined: bool

    @property
    def account(self) -> TradingAccount:
        return self.position.account


def _decide_and_place(ev: LeaderEvent, state: _FollowerState, *, look_up_first: bool) -> None:
    follower, account, position = state.follower, state.account, state.position
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
        quarantined=state.quarantined, close_only=ev.close_only,
    )
    outcome = rules.decide(rules.LeaderMove(ev.p0, ev.p1), facts)
    notes = [outcome.note] if outcome.note else []
    if outcome.lift_quarantine:
        quarantine_lift(account=account, symbol=ev.symbol, by="auto: follower and leader flat")
        state.quarantined = False
        notes.insert(0, rules.Reason.QUARANTINE_LIFTED.value)
    if outcome.quarantine:
        quarantine_create(account=account, symbol=ev.symbol, reason=Quarantine.Reason.OPPOSITE_SIDE,
                          detail=f"follower {position.qty:+d} against the leader's side", event=ev)
        state.quarantined = True
    before = position.qty
    decision = Decision.objects.create(
        event=ev, account=account, symbol=ev.symbol, reason=outcome.reason,
        detail="; ".join(notes), position_before=before, expected_before=outcome.e0,
        expected_after=outcome.e1, planned_legs=_legs_json(outcome.legs), created_at=clock.now(),
    )
    reason = outcome.reason
    if outcome.legs:
        reason = _place(ev, state, decision, outcome, look_up_first=look_up_first)
        if reason == rules.Reason.REJECTED:
            state.quarantined = True
    decision.reason = reason
    decision.position_after = position.qty
    decision.state = Decision.State.SETTLED
    decision.settled_at = clock.now()
    decision.save(update_fields=["reason", "position_after", "state", "settled_at",
                                 "placed_legs", "detail"])


def _place(
    ev: LeaderEvent, state: _FollowerState, decision: Decision, outcome: rules.Decision,
    *, look_up_first: bool,
) -> rules.Reason:
    """Exits before entries; what a failure means for the legs after it is in COPY_RULES.md."""
    account, position = state.account, state.position
    adapter = adapter_for(account)
    results: list[tuple[rules.Leg, rules.LegOutcome]] = []
    stop = not account.is_connected
    for index, leg in enumerate(rules.ordered_for_placement(outcome.legs)):
        if stop:
            if leg.kind == rules.LegKind.EXIT:
                failed_exits.failed_exit_queue(
                    account=account, symbol=ev.symbol, leg=leg, event=ev, attempts=0,
                    error="follower disconnected",
                )
                results.append((leg, rules.LegOutcome.QUEUED))
            else:
                results.append((leg, rules.LegOutcome.DROPPED))
            continue
        sent = order_send(
            adapter=adapter, account=account, symbol=ev.symbol,
            client_order_id=copy_order_id(ev.pk, account.pk, index), leg=leg,
            decision=decision, look_up_first=look_up_first,
        )
        position.qty += rules.signed(leg.side, sent.filled)
        results.append((leg, _leg_outcome(ev, account, leg, sent)))
        stop = sent.error is not None
    decision.placed_legs = [
        {**_legs_json([leg])[0], "outcome": result.value} for leg, result in results
    ]
    return rules.placement_reason(outcome.reason, results)


def _leg_outcome(
    ev: LeaderEvent, account: TradingAccount, leg: rules.Leg, sent: Sent
) -> rules.LegOutcome:
    if sent.error is None:
        return rules.LegOutcome.PLACED
    if sent.permanent:
        quarantine_create(account=account, symbol=ev.symbol, reason=Quarantine.Reason.REJECTED,
                          detail=sent.error.message, event=ev)
        if leg.kind == rules.LegKind.EXIT:
            failed_exits.failed_exit_queue(
                account=account, symbol=ev.symbol, leg=leg, event=ev, attempts=1,
                error=sent.error.message, rejected=True,
            )
        return rules.LegOutcome.REJECTED
    if leg.kind == rules.LegKind.EXIT:
        queued = failed_exits.failed_exit_queue(
            account=account, symbol=ev.symbol, leg=leg, event=ev, attempts=1,
            error=sent.error.message,
        )
        if sent.order.pk is not None:  # outcome unknown: the retry looks it up first
            sent.order.failed_exit = queued
            sent.order.save(update_fields=["failed_exit"])
        return rules.LegOutcome.QUEUED
    return rules.LegOutcome.FAILED


def _legs_json(legs: Sequence[rules.Leg]) -> list[dict[str, object]]:
    return [{"side": leg.side.value, "qty": leg.qty, "kind": leg.kind.value} for leg in legs]
