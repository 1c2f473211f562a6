"""The account guard: a prop-firm follower's drawdown line and what the copier does before
the firm does (docs/rules.md#the-account-guard).

Pure: numbers in, a verdict out. What the firm's line is (`line`), how the copier keeps the
high-water mark it trails (`marks_seen`, `marks_at_close`), and what one equity reading calls
for (`evaluate`): nothing, a warning, entries stopped, or a flatten with entries locked until
a person resumes. `entry_check` is asked before an entry is copied. Exits are never held by
anything here: an exit only ever takes risk away.

Money is Decimal in the account's currency; equity is balance plus open P&L.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ZERO = Decimal(0)


class DrawdownModel(StrEnum):
    """How a firm's line moves (docs/rules.md#drawdown-models)."""

    STATIC = "static"  # starting balance - drawdown, never moves
    EOD_TRAILING = "eod_trailing"  # trails the highest end-of-day balance (Topstep, Tradeify)
    INTRADAY_TRAILING = "intraday_trailing"  # trails the equity peak, open P&L included (Apex)


class GuardState(StrEnum):
    """Where a follower stands against its guard, worst last."""

    OK = "ok"
    WARNING = "warning"  # within the warning distance: an alert, copying goes on
    ENTRIES_STOPPED = "entries_stopped"  # a soft limit or the target: no entries, no flatten
    LOCKED = "locked"  # flattened, entries locked until a person resumes


class Trip(StrEnum):
    """What made the guard act (the values each carries, for the words and the console)."""

    DRAWDOWN = "drawdown"  # equity, line, buffer
    DRAWDOWN_WARNING = "drawdown_warning"  # equity, line, warn
    DAILY_LOSS = "daily_loss"  # loss, limit, buffer, hard
    WEEKLY_LOSS = "weekly_loss"  # loss, limit, buffer
    PROFIT_TARGET = "profit_target"  # profit, target, flatten
    FLAT_TIME = "flat_time"  # at, flat_by, tz
    VENUE = "venue"  # why: the venue's own signal (canTrade false, liquidateOnly, ...)
    ENTRY_RISK = "entry_risk"  # equity, worst, line, buffer, side, qty
    MAX_CONTRACTS = "max_contracts"  # limit, holds, side, qty, room


@dataclass(frozen=True, slots=True)
class GuardRules:
    """One account's profile: a firm's published numbers, or a person's own.

    `trail_stop`: where a trailing line stops, as an offset above the starting balance (0:
    at the starting balance, Topstep; 100: starting balance + $100, Apex); None: it never
    stops. `buffer`: how far above the line the guard flattens; `warn`: how far above it
    alerts (at least the buffer). `risk_per_contract`: the adverse move the guard assumes
    for each contract held after an entry when the leader's stop is unknown (None: the
    entry alone is checked, i.e. refused only once equity is inside the buffer)."""

    starting_balance: Decimal
    drawdown: Decimal
    model: DrawdownModel = DrawdownModel.STATIC
    trail_stop: Decimal | None = None
    buffer: Decimal = ZERO
    warn: Decimal = ZERO
    daily_loss: Decimal | None = None
    daily_loss_hard: bool = True
    weekly_loss: Decimal | None = None
    profit_target: Decimal | None = None
    target_flatten: bool = False
    max_contracts: int | None = None
    flat_by: dt.time | None = None  # local time of `tz` by which the account must be flat
    session_reset: dt.time = dt.time(17, 0)  # when a new session starts, local time of `tz`
    tz: str = "America/Chicago"
    risk_per_contract: Decimal | None = None

    def __post_init__(self) -> None:
        if self.starting_balance <= 0:
            raise ValueError("the starting balance must be greater than 0")
        if self.drawdown <= 0:
            raise ValueError("the drawdown must be greater than 0")
        if self.buffer < 0 or self.warn < 0:
            raise ValueError("the buffer and the warning distance may not be negative")
        if self.buffer >= self.drawdown:
            raise ValueError("the buffer must be smaller than the drawdown")
        if self.trail_stop is not None and self.trail_stop < -self.drawdown:
            raise ValueError("the trail must stop above the starting line")
        for name in ("daily_loss", "weekly_loss", "profit_target", "risk_per_contract"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name.replace('_', ' ')} must be greater than 0")
        if self.max_contracts is not None and self.max_contracts <= 0:
            raise ValueError("max contracts must be greater than 0")
        try:
            ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{self.tz!r} is not a time zone (an IANA name such as "
                             "America/Chicago)") from None

    @property
    def warn_distance(self) -> Decimal:
        return max(self.warn, self.buffer)


@dataclass(frozen=True, slots=True)
class Marks:
    """What the copier keeps between readings: the peak the line trails, and the balances
    the day's and the week's losses are counted from."""

    high_water: Decimal
    day_start: Decimal
    week_start: Decimal

    @classmethod
    def fresh(cls, rules: GuardRules, balance: Decimal | None = None) -> Marks:
        """A new account: the peak is the starting balance (a trail never starts lower)."""
        at = rules.starting_balance if balance is None else balance
        return cls(high_water=max(rules.starting_balance, at), day_start=at, week_start=at)

    @classmethod
    def from_line(cls, rules: GuardRules, line_now: Decimal, balance: Decimal) -> Marks:
        """A person's "my line is now $48,100" where the history is unknown: the peak that
        puts the line there. A line at the trail's stop is taken as stopped."""
        if rules.model == DrawdownModel.STATIC:
            raise ValueError("a static line is the starting balance less the drawdown")
        return cls(high_water=max(rules.starting_balance, line_now + rules.drawdown),
                   day_start=balance, week_start=balance)


def line(rules: GuardRules, marks: Marks) -> Decimal:
    """The firm's line: at or below it the account fails. A trailing line follows the peak
    at the drawdown's distance until it reaches its stop, and never comes down."""
    floor = rules.starting_balance - rules.drawdown
    if rules.model == DrawdownModel.STATIC:
        return floor
    trail = marks.high_water - rules.drawdown
    if rules.trail_stop is not None:
        trail = min(trail, rules.starting_balance + rules.trail_stop)
    return max(floor, trail)


def line_chosen(computed: Decimal, published: Decimal | None) -> tuple[Decimal, str]:
    """The line the guard acts at, and its source: the venue's published line where it is
    higher than the one computed from the marks (the firm liquidates there, so acting at
    the lower one would be acting after it), else the computed one. The marks are never
    moved to fit a published line: it is a reading, not the history."""
    if published is not None and published > computed:
        return published, "venue"
    return computed, "computed"


def marks_seen(rules: GuardRules, marks: Marks, equity: Decimal) -> Marks:
    """An equity reading: an intraday trail's peak rises with it (open P&L included);
    the other models' peaks move only at the session's close."""
    if rules.model == DrawdownModel.INTRADAY_TRAILING and equity > marks.high_water:
        return replace(marks, high_water=equity)
    return marks


def marks_at_close(rules: GuardRules, marks: Marks, balance: Decimal, *,
                   week_ends: bool = False) -> Marks:
    """The session closed with `balance` (realised, no open P&L): an end-of-day trail's peak
    rises to it, and the next day's (and, at a week's end, week's) losses count from it."""
    high = marks.high_water
    if rules.model == DrawdownModel.EOD_TRAILING:
        high = max(high, balance)
    elif rules.model == DrawdownModel.INTRADAY_TRAILING:
        high = max(high, balance)  # a peak the readings missed is still a peak
    return Marks(high_water=high, day_start=balance,
                 week_start=balance if week_ends else marks.week_start)


def session_start(rules: GuardRules, when: dt.datetime) -> dt.datetime:
    """The last session start at or before `when`, in the profile's time zone."""
    zone = ZoneInfo(rules.tz)
    local = when.astimezone(zone)
    start = dt.datetime.combine(local.date(), rules.session_reset, tzinfo=zone)
    if start > local:
        start = dt.datetime.combine(local.date() - dt.timedelta(days=1), rules.session_reset,
                                    tzinfo=zone)
    return start


def _week_start(rules: GuardRules, when: dt.datetime) -> dt.date:
    """The date the trading week `when` is in began: the CME week opens on Sunday's
    session (Sunday 17:00 Chicago), so a session starting on a Sunday starts a week."""
    day = session_start(rules, when).date()
    return day - dt.timedelta(days=(day.weekday() + 1) % 7)


def marks_rolled(rules: GuardRules, marks: Marks, close_balance: Decimal,
                 last: dt.datetime, now: dt.datetime) -> tuple[Marks, bool]:
    """The marks at `now` when the last reading was at `last`: if a session closed in
    between, at the balance last read before it (`marks_at_close`; a week's close too when
    a Sunday session opened). Returns the marks and whether a session closed."""
    if session_start(rules, now) <= session_start(rules, last):
        return marks, False
    week_ends = _week_start(rules, now) > _week_start(rules, last)
    return marks_at_close(rules, marks, close_balance, week_ends=week_ends), True


@dataclass(frozen=True, slots=True)
class Reading:
    """One look at the account: its balance (realised), its open P&L, and how many
    contracts it holds (all symbols)."""

    balance: Decimal
    open_pnl: Decimal
    contracts: int = 0

    @property
    def equity(self) -> Decimal:
        return self.balance + self.open_pnl


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing the guard found, with its numbers (JSON values), put in words by `text`."""

    trip: Trip
    values: Mapping[str, Any]

    @property
    def text(self) -> str:
        return _TEXT[self.trip](self.values)

    def to_json(self) -> dict[str, Any]:
        return {"trip": self.trip.value, **self.values}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Finding:
        return cls(Trip(data["trip"]), {k: v for k, v in data.items() if k != "trip"})


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one reading calls for: the state, whether to flatten now, the line and the
    marks to keep, and why (worst first)."""

    state: GuardState
    flatten: bool
    line: Decimal
    marks: Marks
    findings: tuple[Finding, ...] = ()
    line_source: str = "computed"  # "venue": the venue's published line, higher (line_chosen)


_ORDER = [GuardState.OK, GuardState.WARNING, GuardState.ENTRIES_STOPPED, GuardState.LOCKED]


def _worse(a: GuardState, b: GuardState) -> GuardState:
    return a if _ORDER.index(a) >= _ORDER.index(b) else b


def _money(value: Decimal | str) -> str:
    amount = Decimal(value)
    sign = "-" if amount < 0 else ""
    return f"{sign}${abs(amount):,.2f}".replace(".00", "")


def in_flat_window(rules: GuardRules, when: dt.datetime) -> bool:
    """Whether `when` falls between the flat-by time and the next session's start (local):
    the account must be flat then and no entry is copied."""
    if rules.flat_by is None:
        return False
    local = when.astimezone(ZoneInfo(rules.tz)).time()
    start, end = rules.flat_by, rules.session_reset
    if start <= end:
        return start <= local < end
    return local >= start or local < end


@dataclass(frozen=True, slots=True)
class _Found:
    finding: Finding
    state: GuardState
    flatten: bool


def _found(trip: Trip, state: GuardState, *, flat: bool, **values: Any) -> _Found:
    return _Found(Finding(trip, {k: _jsonable(v) for k, v in values.items()}), state, flat)


def _line_found(rules: GuardRules, at_line: Decimal, equity: Decimal) -> list[_Found]:
    if equity <= at_line + rules.buffer:
        return [_found(Trip.DRAWDOWN, GuardState.LOCKED, flat=True,
                       equity=equity, line=at_line, buffer=rules.buffer)]
    if equity <= at_line + rules.warn_distance:
        return [_found(Trip.DRAWDOWN_WARNING, GuardState.WARNING, flat=False,
                       equity=equity, line=at_line, warn=rules.warn_distance)]
    return []


def _losses_found(rules: GuardRules, marks: Marks, equity: Decimal) -> list[_Found]:
    """The day's and the week's losses (open P&L included) within the buffer of their
    limits, and the profit target reached."""
    out = []
    day_loss = marks.day_start - equity
    if rules.daily_loss is not None and day_loss >= rules.daily_loss - rules.buffer:
        hard = rules.daily_loss_hard
        out.append(_found(Trip.DAILY_LOSS,
                          GuardState.LOCKED if hard else GuardState.ENTRIES_STOPPED,
                          flat=hard, loss=day_loss, limit=rules.daily_loss,
                          buffer=rules.buffer, hard=hard))
    week_loss = marks.week_start - equity
    if rules.weekly_loss is not None and week_loss >= rules.weekly_loss - rules.buffer:
        out.append(_found(Trip.WEEKLY_LOSS, GuardState.LOCKED, flat=True,
                          loss=week_loss, limit=rules.weekly_loss, buffer=rules.buffer))
    profit = equity - rules.starting_balance
    if rules.profit_target is not None and profit >= rules.profit_target:
        out.append(_found(Trip.PROFIT_TARGET, GuardState.ENTRIES_STOPPED,
                          flat=rules.target_flatten, profit=profit,
                          target=rules.profit_target, flatten=rules.target_flatten))
    return out


def evaluate(rules: GuardRules, marks: Marks, reading: Reading, *, when: dt.datetime,
             locked: bool = False, published_line: Decimal | None = None) -> Verdict:
    """One reading against the profile (docs/rules.md#the-account-guard). The line is
    computed from the marks as they stand after this reading, so an intraday peak reached
    now already counts; a line the venue publishes (`published_line`) replaces it where
    higher (`line_chosen`). A guard already `locked` stays locked: only a person resumes."""
    marks = marks_seen(rules, marks, reading.equity)
    at_line, source = line_chosen(line(rules, marks), published_line)
    found = [*_line_found(rules, at_line, reading.equity),
             *_losses_found(rules, marks, reading.equity)]
    if in_flat_window(rules, when) and reading.contracts:
        found.append(_found(Trip.FLAT_TIME, GuardState.ENTRIES_STOPPED, flat=True,
                            at=when.isoformat(), tz=rules.tz,
                            flat_by=rules.flat_by.isoformat() if rules.flat_by else None))
    state = GuardState.LOCKED if locked else GuardState.OK
    for f in found:
        state = _worse(state, f.state)
    # locked and still holding (a fill that raced the flatten): flattened again
    flatten = any(f.flatten for f in found) or (locked and reading.contracts != 0)
    findings = sorted((f.finding for f in found),
                      key=lambda f: -_ORDER.index(_TRIP_STATE[f.trip]))
    return Verdict(state=state, flatten=flatten, line=at_line, marks=marks,
                   findings=tuple(findings), line_source=source)


_TRIP_STATE = {
    Trip.DRAWDOWN: GuardState.LOCKED, Trip.WEEKLY_LOSS: GuardState.LOCKED,
    Trip.VENUE: GuardState.LOCKED, Trip.DAILY_LOSS: GuardState.LOCKED,
    Trip.PROFIT_TARGET: GuardState.ENTRIES_STOPPED, Trip.FLAT_TIME: GuardState.ENTRIES_STOPPED,
    Trip.ENTRY_RISK: GuardState.ENTRIES_STOPPED, Trip.MAX_CONTRACTS: GuardState.ENTRIES_STOPPED,
    Trip.DRAWDOWN_WARNING: GuardState.WARNING,
}


def venue_breach(why: str) -> Finding:
    """The venue's own signal that the firm stopped the account (ProjectX `canTrade` false,
    Tradovate `liquidateOnly` or an admin action): the guard pauses at once."""
    return Finding(Trip.VENUE, {"why": why})


_RULE_DECIMALS = ("starting_balance", "drawdown", "trail_stop", "buffer", "warn",
                  "daily_loss", "weekly_loss", "profit_target", "risk_per_contract")
_RULE_TIMES = ("flat_by", "session_reset")


@dataclass(frozen=True, slots=True)
class Standing:
    """A guard as a leader event froze it with the follower (copier.sql.EVENT_RUN): the
    profile, the marks and the last reading, and the state with why. The entry check of
    that event (and of a re-run after a crash) is made against these, not against what
    the guard read since."""

    rules: GuardRules
    marks: Marks
    reading: Reading
    state: GuardState = GuardState.OK
    findings: tuple[Finding, ...] = ()

    @property
    def stops_entries(self) -> bool:
        return self.state in (GuardState.ENTRIES_STOPPED, GuardState.LOCKED)

    def to_json(self) -> dict[str, Any]:
        r = self.rules
        profile: dict[str, Any] = {
            "model": r.model.value, "daily_loss_hard": r.daily_loss_hard,
            "target_flatten": r.target_flatten, "max_contracts": r.max_contracts, "tz": r.tz,
            **{n: _jsonable(getattr(r, n)) for n in _RULE_DECIMALS},
            **{n: None if getattr(r, n) is None else getattr(r, n).isoformat()
               for n in _RULE_TIMES}}
        return {"rules": profile,
                "marks": [str(self.marks.high_water), str(self.marks.day_start),
                          str(self.marks.week_start)],
                "reading": [str(self.reading.balance), str(self.reading.open_pnl),
                            self.reading.contracts],
                "state": self.state.value, "findings": [f.to_json() for f in self.findings]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Standing:
        p = data["rules"]
        named: dict[str, Any] = {n: None if p[n] is None else Decimal(p[n])
                                 for n in _RULE_DECIMALS}
        named.update({n: dt.time.fromisoformat(p[n]) for n in _RULE_TIMES if p[n] is not None})
        rules = GuardRules(
            model=DrawdownModel(p["model"]), daily_loss_hard=p["daily_loss_hard"],
            target_flatten=p["target_flatten"], max_contracts=p["max_contracts"], tz=p["tz"],
            **named)
        high, day, week = (Decimal(v) for v in data["marks"])
        balance, open_pnl, contracts = data["reading"]
        return cls(rules, Marks(high, day, week),
                   Reading(Decimal(balance), Decimal(open_pnl), int(contracts)),
                   GuardState(data["state"]),
                   tuple(Finding.from_json(f) for f in data["findings"]))


def entry_check(rules: GuardRules, marks: Marks, reading: Reading, *, side: str, qty: int,
                holds_after: int, when: dt.datetime | None) -> tuple[int, Finding | None]:
    """How many contracts of an entry the guard lets go out, and why not all.

    Refused whole: inside the flat window, or when the worst case after it (every contract
    held after the entry moving `risk_per_contract` against the account) would put equity
    inside the buffer; without a `risk_per_contract`, when equity is already inside it.
    Cut: to what `max_contracts` leaves room for. `when` None (a fill read at an unknown
    time): the flat window is not checked, the rest is."""
    values = {"side": side, "qty": qty}
    if when is not None and in_flat_window(rules, when):
        return 0, Finding(Trip.FLAT_TIME, {"at": when.isoformat(), "tz": rules.tz,
                                           "flat_by": rules.flat_by.isoformat()
                                           if rules.flat_by else None, **values})
    at_line = line(rules, marks_seen(rules, marks, reading.equity))
    worst = ZERO
    if rules.risk_per_contract is not None:
        worst = rules.risk_per_contract * abs(holds_after)
    if reading.equity - worst <= at_line + rules.buffer:
        return 0, Finding(Trip.ENTRY_RISK, {
            "equity": _jsonable(reading.equity), "worst": _jsonable(worst),
            "line": _jsonable(at_line), "buffer": _jsonable(rules.buffer), **values})
    if rules.max_contracts is not None and reading.contracts + qty > rules.max_contracts:
        room = max(0, rules.max_contracts - reading.contracts)
        return room, Finding(Trip.MAX_CONTRACTS, {
            "limit": rules.max_contracts, "holds": reading.contracts, "room": room, **values})
    return qty, None


def _jsonable(value: Any) -> Any:
    return str(value) if isinstance(value, Decimal) else value


_TEXT = {
    Trip.DRAWDOWN: lambda v: (
        f"equity {_money(v['equity'])}, line {_money(v['line'])}, buffer {_money(v['buffer'])}"),
    Trip.DRAWDOWN_WARNING: lambda v: (
        f"equity {_money(v['equity'])} is within {_money(v['warn'])} of the line "
        f"{_money(v['line'])}"),
    Trip.DAILY_LOSS: lambda v: (
        f"{'' if v['hard'] else 'soft '}daily loss {_money(v['loss'])} against a limit of "
        f"{_money(v['limit'])}, buffer {_money(v['buffer'])}"),
    Trip.WEEKLY_LOSS: lambda v: (
        f"weekly loss {_money(v['loss'])} against a limit of {_money(v['limit'])}, buffer "
        f"{_money(v['buffer'])}"),
    Trip.PROFIT_TARGET: lambda v: (
        f"profit target reached ({_money(v['profit'])} of {_money(v['target'])}): evaluation "
        f"passed, entries stopped{', flattened' if v['flatten'] else ''}"),
    Trip.FLAT_TIME: lambda v: f"past the flat-by time {v['flat_by']} {v['tz']}",
    Trip.VENUE: lambda v: f"the venue stopped the account: {v['why']}",
    Trip.ENTRY_RISK: lambda v: (
        f"entry {v['side']} {v['qty']} not copied: equity {_money(v['equity'])} less a worst "
        f"case of {_money(v['worst'])} is within the buffer {_money(v['buffer'])} of the line "
        f"{_money(v['line'])}"),
    Trip.MAX_CONTRACTS: lambda v: (
        f"max contracts {v['limit']}: holds {v['holds']}, room for {v['room']} of "
        f"{v['side']} {v['qty']}"),
}
