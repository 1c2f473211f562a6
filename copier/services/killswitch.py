"""The kill switch: stop copying entries, resume them, and flatten followers.

Used by the admin's actions, by `manage.py copier_flatten` / `copier_kill` and by a
dashboard. Every call is an `OperatorAction` row (who, what, when), and every
follower it touched gets a `Decision` pointing at it, beside the decisions the
rules took for leader events: a follower's history then says why it stopped
entering, or why its position was closed.

Stopping entries never strands a position: the group goes to exits only, so its
followers still follow the leader's exits and reductions until flat. Flatten first
cancels each follower's working orders at the venue (a limit a trader left resting
would fill later and open a position again), then closes
what the copier has confirmed each follower holds, through the normal placement path
(deterministic client order ids, the Order state machine), each (follower, symbol)
under its position lock; an exit that cannot go out now (the follower disconnected,
a transient failure, an order of it still in doubt) is queued in the Failed Exit
Queue with the action. A flatten is a person's order
(docs/rules.md#flatten-and-the-kill-switch): its queued
exit goes out while the follower is paused, keeps the follower's stream open until it
is done (`copier.stream.process`), closes at each attempt what the follower holds then, and
flattening again attempts it at once instead of queueing a second one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import Q

from accounts.models import Position, TradingAccount
from copier import sql
from copier.alerts import alert_raise
from copier.domain import rules
from copier.models import (
    AccountGuard,
    AlertKind,
    AuditEntry,
    CopyGroup,
    Decision,
    FailedExit,
    Follower,
    Mode,
    OperatorAction,
    Order,
    Quarantine,
)
from copier.services import failed_exits
from copier.services.audit import audit_record
from copier.services.placement import (
    OrderSpec,
    Sent,
    flatten_order_id,
    orders_place,
    unknown_orders_settle,
)
from copier.services.positions import positions_lock, positions_save
from copier.services.quarantine import quarantine_create
from core import clock
from core.trading import Side, signed

log = logging.getLogger(__name__)

ALL_SYMBOLS = ""  # the symbol of a decision about the follower as a whole (a mode change)


# --- which followers -----------------------------------------------------------------------


def _groups(groups: Sequence[CopyGroup] | None) -> list[CopyGroup]:
    """None means every group; an empty list means none (a caller's empty selection)."""
    if groups is None:
        return list(CopyGroup.objects.order_by("name"))
    return sorted({g.pk: g for g in groups}.values(), key=lambda g: g.name)


def _followers(groups: Sequence[CopyGroup] | None,
               followers: Sequence[Follower] | None) -> list[Follower]:
    """The followers of the groups and the followers named; both None: every follower."""
    q = Q(pk__in=[f.pk for f in followers or []])
    if groups is not None:
        q |= Q(group__in=[g.pk for g in groups])
    elif followers is None:
        q = Q()
    return list(Follower.objects.filter(q).select_related("account", "group")
                .order_by("account__name"))


def held_positions(account_ids: Iterable[int]) -> dict[int, dict[str, int]]:
    """What the copier has confirmed each account holds (flat symbols omitted)."""
    held: dict[int, dict[str, int]] = {}
    for account_id, symbol, qty in (Position.objects.filter(account_id__in=list(account_ids))
                                    .exclude(qty=0).order_by("account_id", "symbol")
                                    .values_list("account_id", "symbol", "qty")):
        held.setdefault(account_id, {})[symbol] = qty
    return held


def describe_held(held: dict[str, int]) -> str:
    return ", ".join(f"{symbol} {qty:+d}" for symbol, qty in sorted(held.items())) or "flat"


# --- entries: stop and resume --------------------------------------------------------------


def entries_stop(*, groups: Sequence[CopyGroup] | None, by: str) -> OperatorAction:
    """The groups go to exits only: no entry is copied any more, exits still are.

    Takes effect from the next leader event each follower sees (an event already being
    copied decides with the settings it first saw). Recorded and alerted.
    """
    return _entries_switch(OperatorAction.Kind.ENTRIES_STOP, groups, by)


def entries_resume(*, groups: Sequence[CopyGroup] | None, by: str) -> OperatorAction:
    """The groups go back to active. A follower whose own mode is exits only stays so:
    a person set that on the follower, and resuming a group does not undo it."""
    return _entries_switch(OperatorAction.Kind.ENTRIES_RESUME, groups, by)


def _entries_switch(kind: str, groups: Sequence[CopyGroup] | None, by: str) -> OperatorAction:
    stop = kind == OperatorAction.Kind.ENTRIES_STOP
    target, source = (Mode.EXITS_ONLY, Mode.ACTIVE) if stop else (Mode.ACTIVE, Mode.EXITS_ONLY)
    chosen = _groups(groups)
    now = clock.now()
    with transaction.atomic():
        locked = list(CopyGroup.objects.select_for_update().filter(
            pk__in=[g.pk for g in chosen]).order_by("pk"))
        changed = [g for g in locked if g.mode == source]
        action = OperatorAction.objects.create(
            kind=kind, group=locked[0] if len(locked) == 1 else None, by=by[:150],
            created_at=now, detail=_switch_detail(stop, locked, changed))
        CopyGroup.objects.filter(pk__in=[g.pk for g in changed]).update(mode=target)
        audit_record(by=by, action=kind, obj=action, object_repr=action.detail,
                     changes={f"group {g.name}: mode": [source, target] for g in changed})
        followers = list(Follower.objects.filter(group__in=changed, enabled=True,
                                                 mode=Mode.ACTIVE)
                         .select_related("account", "group").order_by("account__name"))
        held = held_positions(f.account_id for f in followers)
        Decision.objects.bulk_create([
            Decision(action=action, account=f.account, symbol=ALL_SYMBOLS,
                     reason=rules.Reason.EXITS_ONLY if stop else rules.Reason.ENTRIES_RESUMED,
                     notes=_action_notes(_switch_note(stop, by, f, held.get(f.account_id, {}))),
                     created_at=now, settled_at=now)
            for f in followers
        ])
        for g in changed:
            alert_raise(kind=AlertKind.KILL_SWITCH, group=g, about=g.name,
                        text=_switch_alert(stop, by, g))
    log.warning("%s by %s: %s", kind, by, action.detail)
    return action


def _switch_detail(stop: bool, groups: list[CopyGroup], changed: list[CopyGroup]) -> str:
    verb = "entries stopped" if stop else "entries resumed"
    names = ", ".join(g.name for g in changed) or "none"
    same = [g.name for g in groups if g not in changed]
    return f"{verb} on: {names}" + (f"; already so: {', '.join(same)}" if same else "")


def _action_note(text: str) -> rules.Note:
    """A person's action in the words it is recorded with: no rule's numbers to keep."""
    return rules.Note.of(rules.NoteKind.ACTION, text=text)


def _action_notes(text: str) -> list[dict[str, Any]]:
    return [_action_note(text).to_json()]


def _switch_note(stop: bool, by: str, follower: Follower, held: dict[str, int]) -> str:
    if stop:
        return (f"{by} stopped entries on group {follower.group.name}: exits only. Holds "
                f"{describe_held(held)}; its exits and reductions are still copied.")
    return (f"{by} resumed entries on group {follower.group.name}: active from the leader's "
            f"next event. Holds {describe_held(held)}; what it holds is judged by the rules "
            f"(diverged: close-only until it is in line).")


def _switch_alert(stop: bool, by: str, group: CopyGroup) -> str:
    if stop:
        return (f"Kill switch: {by} stopped copying entries on group {group.name}. Its "
                f"followers are exits only: they follow the leader's exits until flat and "
                f"enter nothing until entries are resumed.")
    return f"Kill switch released: {by} resumed copying entries on group {group.name}."


# --- one group's or follower's own switch (the admin's forms, the dashboard) -------------


OFF, EXITS_ONLY, ACTIVE = "off", "exits only", "active"  # what a follower copies


@dataclass(frozen=True, slots=True)
class Switch:
    """A group's or a follower's own copying switch: `enabled` beside `mode`. Whoever
    changes it stops or resumes entries, so it is the kill switch's to change."""

    enabled: bool
    mode: str

    @classmethod
    def of(cls, obj: CopyGroup | Follower) -> Switch:
        return cls(bool(obj.enabled), str(obj.mode))

    def describe(self) -> str:
        if not self.enabled:
            return OFF
        return EXITS_ONLY if self.mode == Mode.EXITS_ONLY else ACTIVE


def copying_state(follower: Follower, group: CopyGroup) -> str:
    """What the follower copies: off, exits only or active; its own switch and its group's
    together (a group in exits only makes all its followers exits only)."""
    if not (follower.enabled and group.enabled):
        return OFF
    return EXITS_ONLY if Mode.EXITS_ONLY in (follower.mode, group.mode) else ACTIVE


_STATE_SWITCH = {OFF: Switch(False, Mode.ACTIVE), EXITS_ONLY: Switch(True, Mode.EXITS_ONLY),
                 ACTIVE: Switch(True, Mode.ACTIVE)}
_STATE_REASON = {OFF: rules.Reason.DISABLED, EXITS_ONLY: rules.Reason.EXITS_ONLY,
                 ACTIVE: rules.Reason.ENTRIES_RESUMED}


def _switch_kind(before: Switch, after: Switch) -> str:
    if not after.enabled:
        return OperatorAction.Kind.COPYING_OFF
    if not before.enabled:
        return OperatorAction.Kind.COPYING_ON
    if after.mode == Mode.EXITS_ONLY:
        return OperatorAction.Kind.ENTRIES_STOP
    return OperatorAction.Kind.ENTRIES_RESUME


def group_switch(*, group: CopyGroup, to: Switch, by: str) -> OperatorAction | None:
    """Set a group's own switch as a person asked in its form; None when it already is so.

    The mode alone is the kill switch's stop or resume (`entries_stop`,
    `entries_resume`: the same record as the admin's actions); switching the group off or
    on is recorded the same way: an operator action, a decision for each follower whose
    copying changes, an alert.
    """
    with transaction.atomic():
        locked = CopyGroup.objects.select_for_update().get(pk=group.pk)
        before = Switch.of(locked)
        if before == to:
            return None
        if before.enabled and to.enabled:
            action = _entries_switch(_switch_kind(before, to), [locked], by)
        else:
            action = _group_enabled_switch(locked, before, to, by)
    group.enabled, group.mode = to.enabled, to.mode
    return action


def _group_enabled_switch(group: CopyGroup, before: Switch, to: Switch,
                          by: str) -> OperatorAction:
    followers = list(Follower.objects.filter(group=group).select_related("account", "group")
                     .order_by("account__name"))
    was = {f.pk: copying_state(f, group) for f in followers}
    CopyGroup.objects.filter(pk=group.pk).update(enabled=to.enabled, mode=to.mode)
    group.enabled, group.mode = to.enabled, to.mode
    what = f"group {group.name} switched {before.describe()} \u2192 {to.describe()}"
    return _switch_record(_switch_kind(before, to), group, what, by, [
        (f, was[f.pk], copying_state(f, group)) for f in followers])


class GuardLocked(ValueError):
    """The follower's account guard stopped it: its switch may not set it active; the
    guard is resumed instead (copier.services.guard.guard_resume), which is recorded."""


def guard_stopped(follower: Follower) -> str:
    """Why the account's guard holds this follower's entries ('' when it does not): it is
    locked, or it stopped entries and switched this follower itself."""
    row = (AccountGuard.objects.filter(account_id=follower.account_id, enabled=True,
                                       state__in=("locked", "entries_stopped"))
           .values_list("state", "switched").first())
    if row is None or (row[0] != "locked" and follower.pk not in row[1]):
        return ""
    what = "locked" if row[0] == "locked" else "stopped its entries"
    return (f"the account guard of {follower.account.name} {what}: resume the guard "
            f"(Account guards) to copy entries again")


def follower_switch(*, follower: Follower, to: Switch, by: str,
                    was: str | None = None) -> OperatorAction | None:
    """Set a follower's own switch as a person asked (its form, its group's form, the
    dashboard); None when neither its switch nor what it copies changes.

    `was`: what it copied before a change saved just now (moved to another group, whose
    mode it takes), when that is not what its row says now. GuardLocked when it would
    copy entries again while its account guard holds them.
    """
    with transaction.atomic():
        f = (Follower.objects.select_for_update(of=("self",)).select_related("account", "group")
             .get(pk=follower.pk))
        before = Switch.of(f)
        if to.enabled and to.mode == Mode.ACTIVE and before != to and (why := guard_stopped(f)):
            raise GuardLocked(why)
        state_before = was or copying_state(f, f.group)
        Follower.objects.filter(pk=f.pk).update(enabled=to.enabled, mode=to.mode)
        f.enabled, f.mode = to.enabled, to.mode
        state_after = copying_state(f, f.group)
        if before == to and state_before == state_after:
            return None
        kind = (_switch_kind(before, to) if before != to
                else _switch_kind(_STATE_SWITCH[state_before], _STATE_SWITCH[state_after]))
        what = (f"follower {f.account.name} switched {before.describe()} \u2192 "
                f"{to.describe()}" if before != to else
                f"follower {f.account.name} moved to group {f.group.name}")
        action = _switch_record(kind, f.group, what, by, [(f, state_before, state_after)])
    follower.enabled, follower.mode = to.enabled, to.mode
    return action


def _switch_record(kind: str, group: CopyGroup, what: str, by: str,
                   followers: list[tuple[Follower, str, str]]) -> OperatorAction:
    """The operator action, a decision per follower whose copying changed, and the alert."""
    now = clock.now()
    changed = [(f, old, new) for f, old, new in followers if old != new]
    detail = what + "; " + (", ".join(f"{f.account.name} copies {old} \u2192 {new}"
                                      for f, old, new in changed) or "no follower changes")
    action = OperatorAction.objects.create(kind=kind, group=group, by=by[:150],
                                           created_at=now, detail=detail)
    audit_record(by=by, action=kind, obj=action, object_repr=what, detail=detail,
                 changes={f"follower {f.account.name}: copies": [old, new]
                          for f, old, new in changed})
    held = held_positions(f.account_id for f, _old, _new in changed)
    Decision.objects.bulk_create([
        Decision(action=action, account=f.account, symbol=ALL_SYMBOLS,
                 reason=_STATE_REASON[new], created_at=now, settled_at=now,
                 notes=_action_notes(
                     f"{by}: {what}; it copies {new} (was {old}) from the leader's next "
                     f"event. Holds {describe_held(held.get(f.account_id, {}))}."))
        for f, old, new in changed
    ])
    alert_raise(kind=AlertKind.KILL_SWITCH, group=group, about=group.name,
                text=f"Kill switch: {by}: {detail}.")
    log.warning("%s by %s: %s", kind, by, detail)
    return action


# --- flatten -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlannedExit:
    """One order a flatten would send, from the copier's confirmed position."""

    account_id: int
    account: str
    symbol: str
    side: Side
    qty: int
    connected: bool
    # An earlier flatten's exit waits in the queue for this (follower, symbol): this
    # flatten attempts it again at once (sized then), and queues no second one.
    queued: bool = False

    @property
    def note(self) -> str:
        if self.queued:
            return ("queued by an earlier flatten: attempted again now, closing what it "
                    "holds then")
        return "" if self.connected else "disconnected: queued, sent on reconnect"

    def describe(self) -> str:
        where = f" ({self.note})" if self.note else ""
        return f"{self.account} {self.symbol}: {self.side.value} {self.qty}{where}"


@dataclass
class FlattenResult:
    action: OperatorAction
    decisions: list[Decision] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)

    def described(self) -> list[tuple[Decision, str]]:
        """What happened, one line per (follower, symbol) closed, for a person to read."""
        out = []
        for decision in self.decisions:
            if decision.symbol == ALL_SYMBOLS:
                continue
            legs = ", ".join(f"{leg['side']} {leg['qty']} {leg['outcome']}"
                             for leg in decision.placed_legs) or "nothing sent"
            out.append((decision, f"{decision.account.name} {decision.symbol}: {legs} "
                                  f"({decision.reason}); now {decision.position_after or 0:+d}"))
        return out

    def lines(self) -> list[str]:
        return [line for _d, line in self.described()]


def flatten_plan(*, groups: Sequence[CopyGroup] | None = None,
                 followers: Sequence[Follower] | None = None) -> list[PlannedExit]:
    """Every order a flatten would send now (a confirmation page lists them).

    From the copier's confirmed positions. A (follower, symbol) whose exit an earlier
    flatten queued is marked `queued`: this flatten attempts that exit again at once
    rather than sending a second one.
    """
    return _plan(_followers(groups, followers))


def _plan(chosen: list[Follower]) -> list[PlannedExit]:
    queued = _flatten_queued({f.account_id for f in chosen})
    accounts = {f.account_id: f.account for f in chosen}
    held = held_positions(accounts)
    for (account_id, symbol), fe in queued.items():  # at flat for the copier: its own numbers
        if symbol not in held.get(account_id, {}):
            held.setdefault(account_id, {})[symbol] = signed(fe.side, -fe.qty)
    plan = []
    for account_id, symbols in sorted(held.items(), key=lambda item: accounts[item[0]].name):
        for symbol, qty in sorted(symbols.items()):
            plan.append(PlannedExit(account_id, accounts[account_id].name, symbol,
                                    rules.side_for(-qty), abs(qty),
                                    accounts[account_id].is_connected,
                                    queued=(account_id, symbol) in queued))
    return plan


def _flatten_queued(account_ids: set[int]) -> dict[tuple[int, str], FailedExit]:
    """The flatten exits still open for these accounts, by (account, symbol): the oldest."""
    found: dict[tuple[int, str], FailedExit] = {}
    for fe in FailedExit.objects.filter(account_id__in=account_ids, action__isnull=False,
                                        status__in=failed_exits.OPEN).order_by("-id"):
        found[(fe.account_id, fe.symbol)] = fe
    return found


def flatten(*, groups: Sequence[CopyGroup] | None = None,
            followers: Sequence[Follower] | None = None, by: str) -> FlattenResult:
    """Close every position of the chosen followers and leave them in exits only.

    Both None: every follower of every group. The mode goes first (committed), so that
    a leader event that starts after it does not enter again what is being closed;
    then each account's working orders are cancelled, and each symbol's followers are
    closed together in a transaction, under their position locks (taken in account
    order, as a copy takes them), at the quantities the copier holds then, their exits
    sent in one placement; one whose exit an earlier flatten queued has that exit
    attempted again at once. The followers stay exits
    only until a person sets them active again; a follower or group that was off is
    switched to exits only (its connection is kept while a flatten's exit waits).
    """
    chosen_groups = _groups(groups) if groups is not None or followers is None else []
    chosen = _followers(groups, followers)
    result = FlattenResult(_flatten_switch(chosen_groups, chosen, by))
    plan = _plan(chosen)
    # working orders first (a resting limit would open a position again), every account's
    # asked together
    cancelled = {account_id: note for account_id, (_n, note) in
                 failed_exits.working_orders_cancel_many([f.account for f in chosen]).items()}
    account_of = {f.account_id: f.account for f in chosen}
    for p in plan:
        if p.queued:
            _queued_attempt(result, account_of[p.account_id], p.symbol, by,
                            cancelled[p.account_id])
    _closes(result, [(account_of[p.account_id], p.symbol) for p in plan if not p.queued], by,
            cancelled)
    planned = {p.account_id for p in plan}
    for f in chosen:
        if f.account_id not in planned:  # nothing to close: it is exits only now all the same
            result.decisions.append(Decision.objects.create(
                action=result.action, account=f.account, symbol=ALL_SYMBOLS,
                reason=rules.Reason.EXITS_ONLY, created_at=clock.now(),
                settled_at=clock.now(), notes=_action_notes(
                    f"{by} flattened: nothing to close (or its exit is queued already); "
                    f"{cancelled[f.account_id]}; exits only from now on")))
    rank = {f.account_id: i for i, f in enumerate(chosen)}
    result.decisions.sort(key=lambda d: (rank.get(d.account_id, len(rank)), d.symbol))
    _flatten_alert(result, chosen_groups, chosen, by)
    log.warning("flatten by %s: %s", by, "; ".join(result.lines()) or "nothing to close")
    return result


def _flatten_switch(groups: list[CopyGroup], followers: list[Follower],
                    by: str) -> OperatorAction:
    """The flatten's action, recorded and committed with the switch of its groups and
    followers to exits only (and on) before anything is closed: a leader event that
    starts after it does not enter again what is being closed."""
    with transaction.atomic():
        action = OperatorAction.objects.create(
            kind=OperatorAction.Kind.FLATTEN, by=by[:150], created_at=clock.now(),
            group=groups[0] if len(groups) == 1 else None,
            detail=_flatten_detail(groups, followers))
        CopyGroup.objects.filter(pk__in=[g.pk for g in groups]).update(
            mode=Mode.EXITS_ONLY, enabled=True)
        Follower.objects.filter(pk__in=[f.pk for f in followers]).update(
            mode=Mode.EXITS_ONLY, enabled=True)
        audit_record(by=by, action=AuditEntry.Action.FLATTEN, obj=action,
                     object_repr=action.detail, changes=_flatten_changes(groups, followers),
                     detail="positions held then: " + _held_text(followers))
    return action


def _flatten_alert(result: FlattenResult, groups: list[CopyGroup], followers: list[Follower],
                   by: str) -> None:
    """One kill switch alert per group flattened (the followers' groups when followers
    were named), listing what was closed of its followers."""
    group_of = {f.account_id: f.group for f in followers}
    with transaction.atomic():
        for g in groups or sorted(set(group_of.values()), key=lambda g: g.name):
            lines = [line for decision, line in result.described()
                     if group_of[decision.account_id].pk == g.pk]
            alert_raise(kind=AlertKind.KILL_SWITCH, group=g, about=g.name,
                        text=(f"Kill switch: {by} flattened followers of group {g.name} and "
                              f"left them exits only. ")
                        + ("; ".join(lines) if lines else "Nothing was open."))


def _flatten_changes(groups: list[CopyGroup], followers: list[Follower]
                     ) -> dict[str, list[object]]:
    """What a flatten switched: each group and follower to exits only and enabled."""
    rows: list[tuple[str, str, str]] = [
        *((f"group {g.name}", g.mode, "on" if g.enabled else "off") for g in groups),
        *((f"follower {f.account.name}", f.mode, "on" if f.enabled else "off")
          for f in followers)]
    changes: dict[str, list[object]] = {}
    for what, mode, enabled in rows:
        if mode != Mode.EXITS_ONLY:
            changes[f"{what}: mode"] = [mode, Mode.EXITS_ONLY.value]
        if enabled == "off":
            changes[f"{what}: enabled"] = [False, True]
    return changes


def _held_text(followers: list[Follower]) -> str:
    held = held_positions(f.account_id for f in followers)
    return "; ".join(f"{f.account.name} {describe_held(held.get(f.account_id, {}))}"
                     for f in followers) or "no followers"


def _flatten_detail(groups: list[CopyGroup], followers: list[Follower]) -> str:
    if groups:
        return "flatten groups: " + ", ".join(g.name for g in groups)
    return "flatten followers: " + ", ".join(f.account.name for f in followers)


@dataclass
class _CloseJob:
    """One (follower, symbol) of a flatten while its symbol's batch is closed."""

    position: Position
    before: int
    legs: tuple[rules.Leg, ...]
    notes: list[rules.Note]
    results: list[tuple[rules.Leg, rules.LegOutcome]] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)


def _close(result: FlattenResult, account: TradingAccount, symbol: str, by: str,
           cancelled: str) -> None:
    """Close one (follower, symbol): `_closes` of one."""
    _closes(result, [(account, symbol)], by, {account.pk: cancelled})


def _closes(result: FlattenResult, targets: Sequence[tuple[TradingAccount, str]], by: str,
            cancelled: dict[int, str]) -> None:
    """Close each (follower, symbol) at what the copier holds under its lock: one batch per
    symbol, every follower's exit sent in one placement (`orders_place`, as the copy
    fan-out sends its orders), so a flatten of many followers is one round of the broker,
    not one per follower. `cancelled`: what became of each account's working orders, for
    its decision."""
    by_symbol: dict[str, list[int]] = {}
    for account, symbol in targets:
        by_symbol.setdefault(symbol, []).append(account.pk)
    for symbol, account_ids in sorted(by_symbol.items()):
        _symbol_close(result, symbol, sorted(set(account_ids)), by, cancelled)


def _symbol_close(result: FlattenResult, symbol: str, account_ids: list[int], by: str,
                  cancelled: dict[int, str]) -> None:
    action = result.action
    with transaction.atomic():
        positions = positions_lock(account_ids, symbol)
        queued = _flatten_queued(set(positions))
        jobs: list[_CloseJob] = []
        specs: list[OrderSpec] = []
        sent_for: list[tuple[_CloseJob, rules.Leg]] = []
        for account_id in sorted(positions):
            job, blocked = _close_job(positions[account_id], symbol, by,
                                      cancelled.get(account_id, ""),
                                      queued=(account_id, symbol) in queued)
            jobs.append(job)
            account = job.position.account
            for leg in job.legs:
                if blocked or not account.is_connected:
                    _close_queued(job, leg, symbol, action, blocked or "follower disconnected")
                    continue
                specs.append(OrderSpec(account=account, symbol=symbol, leg=leg,
                                       client_order_id=flatten_order_id(
                                           action.pk, account_id, job.position.pk)))
                sent_for.append((job, leg))
        for (job, leg), sent in zip(sent_for, orders_place(specs) if specs else [],
                                    strict=True):
            _close_sent(job, leg, sent, symbol, action)
        decisions = _close_record(jobs, symbol, action)
        positions_save([job.position for job in jobs])
    result.decisions.extend(decisions)
    result.orders.extend(order for job in jobs for order in job.orders)


def _close_job(position: Position, symbol: str, by: str, cancelled: str, *,
               queued: bool) -> tuple[_CloseJob, str]:
    """What closes one (follower, symbol), and why it cannot be sent now ('' when it can):
    an order in doubt is asked about first (it may have moved what is held)."""
    account = position.account
    blocked = ""
    if position.unknown_orders:
        settled = unknown_orders_settle(account=account, symbol=symbol)
        position.qty += settled.moved
        blocked = settled.blocked
    notes = [_action_note(f"{by} flattened"), _action_note(cancelled)]
    legs = rules.close_by(position.qty, abs(position.qty))
    if queued:
        notes.append(_action_note("an earlier flatten's exit is queued: it closes this"))
        legs = ()
    return _CloseJob(position, position.qty, tuple(legs), notes), blocked


def _close_queued(job: _CloseJob, leg: rules.Leg, symbol: str, action: OperatorAction,
                  why: str) -> None:
    failed_exits.failed_exit_queue(account=job.position.account, symbol=symbol, leg=leg,
                                   event=None, action=action, attempts=0, error=why)
    job.notes.append(rules.Note.of(rules.NoteKind.LEG_QUEUED, leg=leg.kind.value,
                                   side=leg.side.value, qty=leg.qty, why=why))
    job.results.append((leg, rules.LegOutcome.QUEUED))


def _close_sent(job: _CloseJob, leg: rules.Leg, sent: Sent, symbol: str,
                action: OperatorAction) -> None:
    """The broker's answer to one close: what it moved, and a refusal quarantined and
    queued as a failed exit (a transient one is retried from the queue)."""
    account = job.position.account
    job.position.qty += sent.moved
    outcome = rules.leg_outcome(leg, failed=sent.error is not None, permanent=sent.permanent)
    if sent.error is not None:
        job.notes.append(rules.Note.of(rules.NoteKind.LEG_FAILED, leg=leg.kind.value,
                                       side=leg.side.value, qty=leg.qty,
                                       error=sent.error.message))
        if outcome == rules.LegOutcome.REJECTED:
            quarantine_create(account=account, symbol=symbol, reason=Quarantine.Reason.REJECTED,
                              detail=sent.error.message)
        sent.order.failed_exit = failed_exits.failed_exit_queue(
            account=account, symbol=symbol, leg=leg, event=None, action=action, attempts=1,
            error=sent.error.message, rejected=outcome == rules.LegOutcome.REJECTED)
    if sent.order.status != Order.Status.FAILED:
        job.orders.append(sent.order)
    job.results.append((leg, outcome))


def _close_record(jobs: list[_CloseJob], symbol: str, action: OperatorAction
                  ) -> list[Decision]:
    """Each close's decision, and its orders saved with it."""
    now = clock.now()
    decisions = [
        Decision(action=action, account=job.position.account, symbol=symbol,
                 reason=rules.placement_reason(rules.Reason.FLATTENED, job.results),
                 notes=[note.to_json() for note in job.notes], position_before=job.before,
                 position_after=job.position.qty,
                 planned_legs=[leg.to_json() for leg in job.legs],
                 placed_legs=[{**leg.to_json(), "outcome": outcome.value}
                              for leg, outcome in job.results],
                 created_at=now, settled_at=now)
        for job in jobs]
    sql.decisions_insert(decisions=decisions)
    orders = []
    for job, decision in zip(jobs, decisions, strict=True):
        for order in job.orders:
            order.decision = decision
            orders.append(order)
    sql.orders_insert(orders=orders)
    return decisions


_QUEUED_OUTCOME: dict[str, rules.LegOutcome] = {
    FailedExit.Status.DONE: rules.LegOutcome.PLACED,
    FailedExit.Status.REJECTED: rules.LegOutcome.REJECTED,
    FailedExit.Status.PENDING: rules.LegOutcome.QUEUED,
    FailedExit.Status.IN_FLIGHT: rules.LegOutcome.QUEUED,
}


def _queued_attempt(result: FlattenResult, account: TradingAccount, symbol: str, by: str,
                    cancelled: str) -> None:
    """Flattening again while an earlier flatten's exit waits in the queue: a person who
    presses twice wants it out now. That exit is made due and attempted here, as its
    retry would be (sized to what is held then); no second exit is queued."""
    fe = _flatten_queued({account.pk}).get((account.pk, symbol))
    if fe is None:  # settled since the plan was read: close whatever is left, as usual
        _close(result, account, symbol, by, cancelled)
        return
    now = clock.now()
    FailedExit.objects.filter(pk=fe.pk, status=FailedExit.Status.PENDING).update(
        next_attempt_at=now, updated_at=now)
    before = _held(account, symbol)
    known = set(Order.objects.filter(failed_exit=fe).values_list("pk", flat=True))
    attempted = failed_exits.failed_exit_attempt(failed_exit_id=fe.pk)
    fe.refresh_from_db()
    orders = list(Order.objects.filter(failed_exit=fe).exclude(pk__in=known).order_by("id"))
    leg = rules.Leg(Side(fe.side), fe.qty, rules.LegKind.EXIT)
    outcome = _QUEUED_OUTCOME.get(fe.status)  # resolved: nothing was left to close
    what = ("being attempted by a worker already" if attempted is None
            else f"attempted again now: {fe.get_status_display()}"
            + (f" ({fe.last_error})" if fe.status == FailedExit.Status.PENDING else ""))
    results = [] if outcome is None else [(leg, outcome)]
    decision = Decision.objects.create(
        action=result.action, account=account, symbol=symbol,
        reason=rules.placement_reason(rules.Reason.FLATTENED, results),
        notes=_action_notes(f"{by} flattened again; {cancelled}; an earlier flatten's queued "
                            f"exit was {what}"),
        position_before=before, position_after=_held(account, symbol),
        planned_legs=[leg.to_json() for leg, _o in results],
        placed_legs=[{**leg.to_json(), "outcome": o.value} for leg, o in results],
        created_at=now, settled_at=clock.now())
    result.decisions.append(decision)
    result.orders.extend(orders)


def _held(account: TradingAccount, symbol: str) -> int:
    return Position.objects.filter(account=account, symbol=symbol).values_list(
        "qty", flat=True).first() or 0
