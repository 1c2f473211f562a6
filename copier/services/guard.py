"""The account guard at work: each guarded account's equity read from its venue, judged
against its firm's line (copier.domain.guard), and acted on before the firm acts
(docs/rules.md#the-account-guard).

`guards_read` reads `BrokerAdapter.equity_read()` for the accounts whose equity changed
(`equity_changed`: their fills, the venue's word, the sim's market, published in batches)
and, as the backstop, for every enabled guard (`guards_check`, Celery beat, every
`COPIER_GUARD_CHECK_SECONDS`); each reading keeps the marks and the state on the guard's
row under its lock and says what to do, and the batch does it together.
What it does is the kill switch's own work, so that the record is the same as a person's:
a flatten (`killswitch.flatten`: exits only, every position closed, a decision each) when
the line, a hard daily loss or the weekly loss is within the buffer; exits only
(`killswitch.follower_switch`) when entries must stop; an alert with the numbers each
time. The venue is asked outside any transaction; a flatten runs after the row's
transaction committed, as the kill switch's does.

Only a person lifts a lock (`guard_resume`, recorded); a soft stop (a soft daily loss,
the flat-by time) ends by itself with the next session, for the followers the guard itself
stopped. A failed or unvaluable read changes nothing and is alerted once per session: the
guard does not act on a number it does not have.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import DatabaseError, transaction

from accounts.models import Position
from brokers.base import BrokerError, Equity
from brokers.registry import adapter_class
from copier import publisher, sql
from copier.alerts import AlertSpec, alert_raise, alerts_raise
from copier.domain import guard
from copier.domain import rules as domain_rules
from copier.domain.guard import GuardState, Trip
from copier.domain.rules import LegOutcome
from copier.models import AccountGuard, AlertKind, AuditEntry, Follower, Mode
from copier.services import killswitch
from copier.services.audit import Actor, audit_record
from core import clock

log = logging.getLogger(__name__)

GUARD_BY = "account guard"
# A locked account still holding (a fill raced the flatten, or an exit is queued) is
# flattened again, but not on every reading: the last flatten's exits need time to fill.
REFLATTEN_AFTER = dt.timedelta(seconds=30)
_STOPPING = (GuardState.ENTRIES_STOPPED, GuardState.LOCKED)
# What ends with the session by itself: a soft daily loss and the flat-by window.
_SOFT = (Trip.DAILY_LOSS, Trip.FLAT_TIME)


@dataclass(frozen=True, slots=True)
class GuardOutcome:
    """What one reading did, for the task's result, the alert and the tests."""

    state: GuardState
    line: Decimal
    equity: Decimal
    findings: tuple[guard.Finding, ...] = ()
    flattened: tuple[str, ...] = ()  # one line per (follower, symbol) closed
    stopped: tuple[str, ...] = ()  # the followers switched to exits only
    resumed: tuple[str, ...] = ()  # the followers a new session set active again


@dataclass(frozen=True, slots=True)
class GuardCheck:
    read: int = 0
    failed: int = 0
    locked: int = 0


def guards_check() -> GuardCheck:
    """Read every enabled guard's account and act on it (the periodic backstop of the
    reads an equity change publishes); one account's failure never stops the others'."""
    ids = list(AccountGuard.objects.filter(enabled=True).order_by("account__name")
               .values_list("account_id", flat=True))
    outcomes = guards_read(ids)
    return GuardCheck(len(outcomes), len(ids) - len(outcomes),
                      sum(o.state == GuardState.LOCKED for o in outcomes))


def guards_read(account_ids: Sequence[int]) -> list[GuardOutcome]:
    """These accounts read now and acted on together: each reading kept under its own
    row's lock, then one flatten for every account that calls for one, so that followers
    crossing their lines in the same market move are closed in one round of orders (the
    kill switch's batched close), not one after the other. A read that fails is kept on
    its row and alerted, and has no outcome here."""
    rows = list(AccountGuard.objects.filter(account_id__in=list(account_ids), enabled=True
                                            ).select_related("account").order_by("account__name"))
    now = clock.now()
    readings = [(row.account_id, equity) for row, equity in zip(rows, _equities(rows),
                                                                strict=True)
                if equity is not None]
    try:
        acts, unjudged = _readings_keep(readings, now)
    except DatabaseError:  # a number the database will not hold: each row on its own
        log.exception("account guard: keeping a batch's readings together failed; one by one")
        acts, unjudged = _readings_keep_each(readings, now)
    for account_id, why in unjudged:
        reading_failed(account_id, why, what="its reading could not be judged")
    return _act(acts)


def _readings_keep(readings: list[tuple[int, Equity]], now: dt.datetime
                   ) -> tuple[list[_Acts], list[tuple[int, str]]]:
    """A batch's readings judged and kept in one transaction of three statements whatever
    its size: the rows locked (in account-name order, as every batch locks them), the
    followers they keep read, the rows written back. A row that cannot be judged (numbers
    written around the admin's checks) is left as it was and returned with why, and the
    rest of its batch is guarded."""
    ids = [account_id for account_id, _e in readings]
    acts: list[_Acts] = []
    unjudged: list[tuple[int, str]] = []
    with transaction.atomic():
        rows = {r.account_id: r for r in AccountGuard.objects.select_for_update(of=("self",))
                .select_related("account").filter(account_id__in=ids, enabled=True)
                .order_by("account__name")}
        active = _active_followers(list(rows))
        for account_id, equity in readings:
            row = rows.get(account_id)
            if row is None:  # switched off since the batch was read
                continue
            try:
                acts.append(_reading_judge(row, equity, now, active.get(account_id, [])))
                row.standing = row.standing_now()
            except Exception as exc:  # one account's bad row must not unguard the batch
                log.exception("account guard: judging %s's reading failed", row.account)
                acts = [a for a in acts if a.row is not row]
                unjudged.append((account_id, f"{type(exc).__name__}: {exc}"))
        sql.guards_keep(guards=[a.row for a in acts])
    return acts, unjudged


def _readings_keep_each(readings: list[tuple[int, Equity]], now: dt.datetime
                        ) -> tuple[list[_Acts], list[tuple[int, str]]]:
    """`_readings_keep` row by row, each a savepoint of one transaction: what is left of a
    batch whose rows could not be written together."""
    acts: list[_Acts] = []
    unjudged: list[tuple[int, str]] = []
    with transaction.atomic():
        for account_id, equity in readings:
            try:
                with transaction.atomic():
                    acts.append(_reading_keep(account_id, equity, now))
            except AccountGuard.DoesNotExist:
                continue
            except Exception as exc:
                log.exception("account guard: keeping the reading of account %s failed",
                              account_id)
                unjudged.append((account_id, f"{type(exc).__name__}: {exc}"))
    return acts, unjudged


def _active_followers(account_ids: list[int]) -> dict[int, list[int]]:
    """The enabled, active followers of each account: those a new stop switches."""
    out: dict[int, list[int]] = {}
    for account_id, pk in Follower.objects.filter(
            account_id__in=account_ids, enabled=True, mode=Mode.ACTIVE).values_list(
            "account_id", "pk"):
        out.setdefault(account_id, []).append(pk)
    return out


def _equities(rows: list[AccountGuard]) -> list[Equity | None]:
    """Every row's account read, those of one broker together (`equity_read_many`); a
    failed read is kept on its row and alerted, and is None here."""
    out: list[Equity | None] = [None] * len(rows)
    by_kind: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_kind.setdefault(row.account.broker, []).append(i)
    for kind, indexes in by_kind.items():
        read: list[Equity | BrokerError | Exception]
        try:
            read = [*adapter_class(kind).equity_read_many([rows[i].account for i in indexes])]
        except Exception as exc:  # a bug in one adapter must not blind the other guards
            log.exception("account guard: reading the %s accounts' equity failed", kind)
            read = [exc] * len(indexes)
        for i, equity in zip(indexes, read, strict=True):
            if isinstance(equity, Equity):
                out[i] = equity
            elif isinstance(equity, BrokerError):
                reading_failed(rows[i].account_id, equity.message)
            else:
                reading_failed(rows[i].account_id, f"{type(equity).__name__}: {equity}")
    return out


def equity_changed(account_ids: Iterable[int], *, why: str) -> int:
    """These accounts' equity changed (their fills, the venue's word, the market): those
    with an enabled guard are read now, in batches of COPIER_GUARD_BATCH_SIZE (one task
    reads and flattens its batch together). Returns how many accounts were published; a
    batch that cannot be (Redis away) never stops the stream that saw the change."""
    guarded = list(AccountGuard.objects.filter(account_id__in=list(account_ids),
                                               enabled=True).order_by("account_id")
                   .values_list("account_id", flat=True))
    size = max(1, int(settings.COPIER_GUARD_BATCH_SIZE))
    published = 0
    for start in range(0, len(guarded), size):
        batch = guarded[start:start + size]
        try:
            publisher.guard_read_publish(batch, about=why)
            published += len(batch)
        except Exception:  # the broker (Redis) is away: the periodic check reads them
            log.exception("could not enqueue the guard reads of accounts %s; the periodic "
                          "check will", batch)
    return published


def market_moved(symbol: str) -> int:
    """A price of `symbol` moved at the sim (the sim's market is moved by a person, the
    demo, the replay or the benchmark): every guarded account holding it is read now."""
    holders = Position.objects.filter(symbol=symbol).exclude(qty=0).values_list(
        "account_id", flat=True)
    return equity_changed(holders, why=f"{symbol} moved")


def guarded_followers(account_id: int) -> list[Follower]:
    """The followers an account's guard keeps: every group it follows."""
    return list(Follower.objects.filter(account_id=account_id)
                .select_related("account", "group").order_by("group__name"))


@dataclass(frozen=True, slots=True)
class _Judged:
    verdict: guard.Verdict
    state: GuardState
    before: GuardState  # the state the reading started from (OK when a soft stop ended)
    findings: tuple[guard.Finding, ...]
    resume: bool  # a soft stop ended with its session


def _judge(row: AccountGuard, rules: guard.GuardRules, equity: Equity,
           now: dt.datetime) -> _Judged:
    """The reading against the row's marks, rolled over a session's close. A stop on
    record holds until a person resumes it, except a soft one, which ends with its
    session unless this reading stops entries again."""
    reading = guard.Reading(equity.balance, equity.open_pnl, equity.contracts)
    marks, closed = row.guard_marks(reading.balance), False
    if row.read_at is not None and row.balance is not None:
        marks, closed = guard.marks_rolled(rules, marks, row.balance, row.read_at, now)
    before = GuardState(row.state)
    verdict = guard.evaluate(rules, marks, reading, when=now,
                             locked=before == GuardState.LOCKED, published_line=equity.line)
    findings, state = list(verdict.findings), verdict.state
    if equity.can_trade is False:
        findings.insert(0, guard.venue_breach(equity.why or "it may not trade"))
        state = GuardState.LOCKED
    resume = (closed and before == GuardState.ENTRIES_STOPPED and _soft(row.findings)
              and state not in _STOPPING)
    if resume:
        before = GuardState.OK
    elif before == GuardState.ENTRIES_STOPPED and state not in _STOPPING:
        state, findings = before, _with_kept(findings, row.findings)
    return _Judged(verdict, state, before, tuple(findings), resume)


def _with_kept(findings: list[guard.Finding], kept: list[dict[str, Any]]
               ) -> list[guard.Finding]:
    """A stop that holds keeps its reason on record beside the new reading's findings."""
    return findings + [f for f in map(guard.Finding.from_json, kept)
                       if f.trip != Trip.DRAWDOWN_WARNING and f not in findings]


@dataclass(frozen=True, slots=True)
class _Acts:
    """What a kept reading calls for once its transaction committed."""

    row: AccountGuard
    judged: _Judged
    flatten: bool
    stop: bool
    resumed_ids: list[int]
    equity: Decimal
    now: dt.datetime


def reading_seen(account_id: int, equity: Equity, *, now: dt.datetime | None = None
                 ) -> GuardOutcome:
    """One reading of an account with a guard, given (a venue's equity in hand): kept and
    acted on as `guards_read` does for the readings it makes."""
    return _act([_reading_keep(account_id, equity, now or clock.now())])[0]


def _act(acts: list[_Acts]) -> list[GuardOutcome]:
    """What the kept readings call for, done after their transactions committed: a soft
    stop's end, one flatten for all that call for one, exits only for those that stop
    entries, and an alert each that changed."""
    outcomes: dict[int, GuardOutcome] = {}
    for a in acts:
        judged = a.judged
        outcomes[a.row.account_id] = GuardOutcome(
            judged.state, judged.verdict.line, a.equity, judged.findings)
        if a.resumed_ids:
            outcomes[a.row.account_id] = _resume_followers(
                outcomes[a.row.account_id], a.resumed_ids, by=f"{GUARD_BY} (new session)")
    flattening = [a.row.account_id for a in acts if a.flatten]
    # an account no group copies to is the trader's own: alerted, not traded
    followers = list(Follower.objects.filter(account_id__in=flattening).select_related(
        "account", "group").order_by("account__name")) if flattening else []
    flattened = {f.account_id for f in followers}
    if followers:
        result = killswitch.flatten(followers=followers, by=GUARD_BY)
        for account_id in flattened:
            outcomes[account_id] = replace(outcomes[account_id],
                                           flattened=_flattened(result, account_id))
    alerting = []
    for a in acts:
        account_id, judged = a.row.account_id, a.judged
        if a.stop and account_id not in flattened:
            outcomes[account_id] = _stop_followers(outcomes[account_id], account_id)
        changed = judged.state != judged.before or a.flatten
        if a.row.enabled and changed and judged.state != GuardState.OK:
            alerting.append((a.row, outcomes[account_id], a.now))
    _alerts(alerting)
    return [outcomes[a.row.account_id] for a in acts]


def _reading_keep(account_id: int, equity: Equity, now: dt.datetime) -> _Acts:
    """One reading judged and kept under its row's lock (`_reading_judge`)."""
    with transaction.atomic():
        row = AccountGuard.objects.select_for_update().select_related("account").get(
            account_id=account_id)
        acts = _reading_judge(row, equity, now, _active_followers([account_id]).get(
            account_id, []))
        row.save()
    return acts


def _reading_judge(row: AccountGuard, equity: Equity, now: dt.datetime,
                   active_ids: list[int]) -> _Acts:
    """The reading judged against the locked row, the row's fields set (not saved), and
    what it calls for. A locked account is flattened again only after REFLATTEN_AFTER,
    and not where the venue says it may not trade (it would refuse the orders: the firm
    is closing it). `active_ids`: the account's enabled, active followers."""
    judged = _judge(row, row.guard_rules(), equity, now)
    state, before = judged.state, judged.before
    again = row.flattened_at is None or now - row.flattened_at >= REFLATTEN_AFTER
    flatten = (judged.verdict.flatten and equity.can_trade is not False and row.enabled
               and (state != before or again))
    stop = row.enabled and state in _STOPPING and before not in _STOPPING
    _row_keep(row, judged.verdict, equity, state, judged.findings, now)
    if state == GuardState.LOCKED and before != GuardState.LOCKED:
        row.locked_at = now
    if flatten:
        row.flattened_at = now
    resumed_ids = list(row.switched) if judged.resume else []
    # the followers the guard itself holds: none once a soft stop ended; with a new stop,
    # every one still active now (a person's own exits-only is not the guard's)
    kept = [] if judged.resume else list(row.switched)
    row.switched = sorted({*kept, *active_ids}) if stop or flatten else kept
    return _Acts(row, judged, flatten, stop, resumed_ids, equity.balance + equity.open_pnl,
                 now)


def _soft(findings: list[dict[str, object]]) -> bool:
    """Whether the stop on record ends with the session: every stopping finding soft."""
    kept = [guard.Finding.from_json(f) for f in findings]
    stopping = [f for f in kept if f.trip != Trip.DRAWDOWN_WARNING]
    return bool(stopping) and all(
        f.trip in _SOFT and not (f.trip == Trip.DAILY_LOSS and f.values.get("hard"))
        for f in stopping)


def _row_keep(row: AccountGuard, verdict: guard.Verdict, equity: Equity, state: GuardState,
              findings: tuple[guard.Finding, ...], now: dt.datetime) -> None:
    row.high_water, row.day_start = verdict.marks.high_water, verdict.marks.day_start
    row.week_start, row.line = verdict.marks.week_start, verdict.line
    row.line_source = _line_source(row.line_source, verdict.line_source)
    row.balance, row.open_pnl = equity.balance, equity.open_pnl
    row.equity, row.contracts = equity.balance + equity.open_pnl, equity.contracts
    row.equity_source, row.read_at, row.read_error = equity.source[:40], now, ""
    row.state, row.findings = state.value, [f.to_json() for f in findings]


def _line_source(kept: str, judged: str) -> str:
    """"venue" while the venue's published line is the higher; otherwise the line comes
    from the marks, which a person's line keeps saying ("person") until a venue's line
    was taken instead."""
    if judged == "venue":
        return "venue"
    return "computed" if kept in ("", "venue") else kept


def _flattened(result: killswitch.FlattenResult, account_id: int) -> tuple[str, ...]:
    """Each position the flatten closed as it was ("MNQ +2"), and what did not go out at
    once said so ("MNQ +2: sell 2 queued"): the guard's words never claim a close that
    is still waiting."""
    out = []
    for decision in result.decisions:
        if decision.symbol == killswitch.ALL_SYMBOLS or decision.account_id != account_id:
            continue
        closed = sum(int(leg["qty"]) * (1 if leg["side"] == "sell" else -1)
                     for leg in decision.placed_legs)
        held = f"{decision.symbol} {closed + (decision.position_after or 0):+d}"
        late = [f"{leg['side']} {leg['qty']} {leg['outcome']}" for leg in decision.placed_legs
                if leg["outcome"] != LegOutcome.PLACED]
        out.append(held + (": " + ", ".join(late) if late else ""))
    return tuple(out)


def _stop_followers(outcome: GuardOutcome, account_id: int) -> GuardOutcome:
    stopped = []
    for f in guarded_followers(account_id):
        if f.enabled and f.mode == Mode.ACTIVE:
            killswitch.follower_switch(follower=f, to=killswitch.Switch(True, Mode.EXITS_ONLY),
                                       by=GUARD_BY)
            stopped.append(f"{f.account.name} in {f.group.name}")
    return replace(outcome, stopped=tuple(stopped))


def _resume_followers(outcome: GuardOutcome, follower_ids: list[int], *, by: Actor
                      ) -> GuardOutcome:
    """Set active again the followers the guard stopped that are still as it left them."""
    resumed = []
    for f in (Follower.objects.filter(pk__in=follower_ids, enabled=True, mode=Mode.EXITS_ONLY)
              .select_related("account", "group").order_by("group__name")):
        killswitch.follower_switch(follower=f, to=killswitch.Switch(True, Mode.ACTIVE),
                                   by=by if isinstance(by, str) else by.get_username())
        resumed.append(f"{f.account.name} in {f.group.name}")
    return replace(outcome, resumed=tuple(resumed))


_ACTION = {
    GuardState.WARNING: "copying goes on",
    GuardState.ENTRIES_STOPPED: "entries stopped, exits still copied",
    GuardState.LOCKED: "entries locked until a person resumes (admin: Account guards)",
}


def guard_text(name: str, outcome: GuardOutcome) -> str:
    """The alert's and the console's words: the account, why with the numbers, and what
    was done ("F3: equity $48,240, line $48,100, buffer $150: flattened MNQ -4, entries
    locked until a person resumes")."""
    why = "; ".join(f.text for f in outcome.findings) or "no finding"
    done = []
    if outcome.flattened:
        done.append("flattened " + ", ".join(outcome.flattened))
    if outcome.stopped:
        done.append("exits only: " + ", ".join(outcome.stopped))
    done.append(_ACTION.get(outcome.state, "copying goes on"))
    return f"{name}: {why}: " + "; ".join(done)


def _alerts(alerting: list[tuple[AccountGuard, GuardOutcome, dt.datetime]]) -> None:
    """One alert per account whose guard changed, raised together (one key per stop:
    a lock keeps its own until a person resumes it)."""
    specs = []
    for row, outcome, now in alerting:
        text = guard_text(row.account.name, outcome)
        at = row.locked_at if outcome.state == GuardState.LOCKED else None
        specs.append(AlertSpec(AlertKind.GUARD, text, row.account, row.account.name,
                               f"guard:{row.pk}:{outcome.state.value}:{(at or now).isoformat()}"))
        log.warning("account guard: %s", text, extra={"account": row.account.name})
    if specs:
        with transaction.atomic():
            alerts_raise(specs)


def reading_failed(account_id: int, why: str, *, now: dt.datetime | None = None,
                   what: str = "its equity could not be read from its broker") -> None:
    """Kept on the row and alerted once per session; the state is left as it is."""
    now = now or clock.now()
    with transaction.atomic():
        row = AccountGuard.objects.select_for_update().select_related("account").get(
            account_id=account_id)
        row.read_error = why[:2000]
        row.save(update_fields=["read_error"])
        name = row.account.name
        try:
            session = guard.session_start(row.guard_rules(), now)
        except ValueError:  # a profile that makes no sense: the copier's own session
            session = _copier_session_start(now)
        alert_raise(kind=AlertKind.GUARD, account=row.account, about=name,
                    text=(f"{name}: {what} ({why}); the account guard is blind until it "
                          f"can be. Nothing was changed."),
                    dedupe_key=f"guard-read:{row.pk}:{session.isoformat()}")
    log.warning("account guard: the equity of %s could not be read: %s", name, why)


def _copier_session_start(now: dt.datetime) -> dt.datetime:
    """The session of the copier's own reset (COPIER_SESSION_RESET) `now` is in."""
    return domain_rules.SessionReset.parse(settings.COPIER_SESSION_RESET).start(now)


def guard_resume(row: AccountGuard, *, by: Actor) -> GuardOutcome:
    """A person lifts the guard's stop: the state back to OK (the next reading judges
    afresh), recorded with who, and the followers the guard stopped active again."""
    now = clock.now()
    with transaction.atomic():
        locked = AccountGuard.objects.select_for_update().select_related("account").get(
            pk=row.pk)
        before, ids = locked.state, list(locked.switched)
        locked.state, locked.switched, locked.locked_at = GuardState.OK.value, [], None
        locked.resumed_at = now
        locked.resumed_by = (by if isinstance(by, str) else by.get_username())[:150]
        locked.save()
        audit_record(by=by, action=AuditEntry.Action.GUARD_RESUME, obj=locked,
                     changes={"state": [before, GuardState.OK.value]},
                     detail=f"equity {locked.equity}, line {locked.line} when resumed")
    outcome = GuardOutcome(GuardState.OK, locked.line or Decimal(0),
                           locked.equity or Decimal(0))
    return _resume_followers(outcome, ids, by=by)


def line_set(row: AccountGuard, line_now: Decimal, *, by: Actor) -> AccountGuard:
    """A person's "my line is now $48,100" where the copier did not see the account's
    history: the peak that puts the line there, kept and recorded (`Marks.from_line`)."""
    with transaction.atomic():
        locked = AccountGuard.objects.select_for_update().get(pk=row.pk)
        rules = locked.guard_rules()
        balance = locked.balance if locked.balance is not None else rules.starting_balance
        marks = guard.Marks.from_line(rules, line_now, balance)
        before = locked.line
        locked.high_water, locked.day_start, locked.week_start = (
            marks.high_water, locked.day_start or marks.day_start,
            locked.week_start or marks.week_start)
        locked.line, locked.line_source = guard.line(rules, marks), "person"
        locked.save()
        audit_record(by=by, action=AuditEntry.Action.GUARD_LINE, obj=locked,
                     changes={"line": [str(before) if before is not None else None,
                                       str(locked.line)]})
    return locked

