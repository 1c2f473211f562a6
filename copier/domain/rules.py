"""The copy rules of the contract (docs/rules.md) as pure functions: the one place a rule lives.

No Django, no Celery, no I/O: given the leader's move and the facts about one
follower, `decide` returns what to do and why. It reads like the contract,
rule by rule, so that a trader can check one against the other. Quantities
are ints (positions) and Decimals (multipliers), never floats.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from copier.domain import guard
from core.trading import MAX_VENUE_ID, Side, signed

# Quantity limits, checked before anything is sent (docs/rules.md#joining-settings-and-crashes:
# one follower's impossible order must never fail the others' copy).
MAX_MULTIPLIER = Decimal(100)
MAX_ORDER_QTY = 10_000  # contracts in one copied entry; exits are never limited
# Bounds of a follower's own settings (fixed quantity, risk limits): beyond them a value is
# a typo, refused by the admin and the scenario files with a clear error.
MAX_POSITION_LIMIT = 100_000
MAX_SYMBOLS_LIMIT = 1_000
# A daily loss limit is an amount of money in the account's currency (cents at most).
MAX_LOSS_LIMIT = Decimal(10_000_000)
# What a venue (or the sim, or a scenario) may say: a fill or a position of more contracts
# than this is beyond any futures account, a garbled number, refused before anything is
# stored (docs/rules.md#refused-and-duplicate-fills). Far below
# what the columns hold, so a refused number never reaches one.
MAX_VENUE_QTY = 1_000_000


def venue_qty_problem(value: object, *, signed: bool) -> str | None:
    """Why a venue's quantity cannot be taken (None: it can): not a whole number, or beyond
    MAX_VENUE_QTY contracts. `signed`: a position (any side, 0 is flat); else a fill's
    quantity (> 0)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"quantity is not a whole number: {value!r}"
    if not signed and value <= 0:
        return f"quantity must be a whole number > 0, got {value}"
    if abs(value) > MAX_VENUE_QTY:
        return (f"quantity {value} is beyond any futures account (at most {MAX_VENUE_QTY:,} "
                f"contracts): refused")
    return None


def venue_id_problem(value: object) -> str | None:
    """Why a venue's sequence number or id cannot be kept (None: it can)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_VENUE_ID:
        return f"number {value!r} is not a whole number from 0 to {MAX_VENUE_ID}"
    return None


class Reason(StrEnum):
    DISABLED = "disabled"
    PAUSED = "paused"
    QUARANTINED = "quarantined"
    QUARANTINE_LIFTED = "quarantine_lifted"
    OPPOSITE_SIDE = "opposite_side"
    COPIED = "copied"
    NO_CHANGE = "no_change"
    CLOSE_ONLY = "close_only"
    NOTHING_TO_CLOSE = "nothing_to_close"
    EXIT_QUEUED = "exit_queued"
    DISCONNECTED = "disconnected"
    ENTRY_FAILED = "entry_failed"
    REJECTED = "rejected"
    # An exits-only follower (wind-down, or the kill switch): what the rules would have
    # opened or added was held back and nothing else was left to send.
    EXITS_ONLY = "exits_only"
    # Operator actions (copier.services.killswitch): not rules of a leader event, but
    # recorded as decisions too, so a follower's history says who did what.
    ENTRIES_RESUMED = "entries_resumed"
    FLATTENED = "flattened"
    # A follower's own risk limit (max per order, max position, max open symbols, trading
    # window) cut or held back an entry; the note names the limit and the numbers.
    RISK_LIMIT = "risk_limit"
    # Symbol mapping (copier.domain.symbol_map): the follower does not trade this leader symbol.
    NOT_MAPPED = "not_mapped"


class NoteKind(StrEnum):
    """Why, beside the reason: what a rule, the engine or a person found, with its numbers
    (`Note.values`). The console picks its words by the kind, never by a note's text."""

    # The rules' (this module)
    DIVERGED = "diverged"  # c, e0, then (a Diverged), qty (for REDUCE)
    WITH_LEADER = "with_leader"  # exit_mode with_leader closed the follower fully
    EXITS_ONLY_HELD = "exits_only_held"  # legs: [[side, qty], ...] held back
    EXITS_ONLY_NO_ENTRY = "exits_only_no_entry"
    POSITION_CAPPED = "position_capped"  # cap, uncapped, e1
    OUTSIDE_WINDOW = "outside_window"  # window (its description), side, qty, at (None)
    MAX_SYMBOLS = "max_symbols"  # limit, open, side, qty
    MAX_POSITION = "max_position"  # limit, holds, side, qty, room
    MAX_ORDER = "max_order"  # limit, side, qty
    LOSS_LOCKED = "loss_locked"  # lock (its description), side, qty
    GUARD = "guard"  # the account guard's finding (copier.domain.guard.Finding's JSON)
    GUARD_STOPPED = "guard_stopped"  # state, findings (JSON), side, qty: entries stopped
    # The engine's (copier.services)
    QUARANTINE_LIFTED = "quarantine_lifted"
    ROUTED = "routed"  # leader, symbol, ratio: the symbol mapping sent it elsewhere
    NOT_MAPPED = "not_mapped"  # why: the mapping's (copier.domain.symbol_map) or the engine's words
    LEG_ENDED = "leg_ended"  # leg (its kind), side, qty, filled: the broker ended the rest
    LEG_FAILED = "leg_failed"  # leg, side, qty, error: the broker's words
    LEG_QUEUED = "leg_queued"  # leg, side, qty, why: queued without being sent
    ENTRY_HELD = "entry_held"  # why the entry that waited for its exit was not sent
    # A person's action (copier.services.killswitch), in the words it was recorded with
    ACTION = "action"  # text
    # A decision recorded before notes had kinds: its text, as it was
    LEGACY_TEXT = "legacy_text"  # text


class Diverged(StrEnum):
    """What close-only (rule 6) found for a diverged follower."""

    NEVER_OPENS = "never_opens"
    FLAT = "flat"
    NOTHING_ON_SIDE = "nothing_on_side"
    NOTHING_LEFT = "nothing_left"
    REDUCE = "reduce"


_DIVERGED_WORDS = {
    Diverged.NEVER_OPENS: "the copier never opens or adds",
    Diverged.FLAT: "the follower is flat",
    Diverged.NOTHING_ON_SIDE: "nothing on E0's side",
    Diverged.NOTHING_LEFT: "nothing left to reduce",
}


def _leg_words(v: Mapping[str, Any]) -> str:
    return f"{v['leg']} {v['side']} {v['qty']}"


def _diverged_text(v: Mapping[str, Any]) -> str:
    then = Diverged(v["then"])
    what = f"reduce by {v['qty']}" if then == Diverged.REDUCE else _DIVERGED_WORDS[then]
    return f"diverged (C={v['c']}, E0={v['e0']}): {what}"


_NOTE_TEXT: dict[NoteKind, Callable[[Mapping[str, Any]], str]] = {
    NoteKind.DIVERGED: _diverged_text,
    NoteKind.WITH_LEADER: lambda v: (
        "exit_mode with_leader: the leader reduced, the follower closes fully"),
    NoteKind.EXITS_ONLY_HELD: lambda v: "exits only: held back " + ", ".join(
        f"entry {side} {qty}" for side, qty in v["legs"]),
    NoteKind.EXITS_ONLY_NO_ENTRY: lambda v: (
        "exits only: the leader opened or added, nothing is entered"),
    NoteKind.POSITION_CAPPED: lambda v: (
        f"max position {v['cap']}: the leader's position calls for {v['uncapped']:+d}, "
        f"the follower holds at most {v['e1']:+d}"),
    NoteKind.OUTSIDE_WINDOW: lambda v: (
        f"trading window {v['window']}: entry {v['side']} {v['qty']} "
        + ("at an unknown time" if v["at"] is None else f"at {v['at']}")
        + " is outside it, not copied"),
    NoteKind.MAX_SYMBOLS: lambda v: (
        f"max open symbols {v['limit']}: {v['open']} other symbol(s) open, entry "
        f"{v['side']} {v['qty']} would open one more, not copied"),
    NoteKind.MAX_POSITION: lambda v: (
        f"max position {v['limit']}: holds {v['holds']:+d}, entry {v['side']} {v['qty']} "
        + (f"cut to {v['room']}" if v["room"] else "not copied")),
    NoteKind.MAX_ORDER: lambda v: (
        f"max {v['limit']} contracts per order: entry {v['side']} {v['qty']} cut to "
        f"{v['limit']}"),
    NoteKind.LOSS_LOCKED: lambda v: f"{v['lock']}: entry {v['side']} {v['qty']} not copied",
    NoteKind.GUARD: lambda v: "account guard: " + guard.Finding.from_json(v).text,
    NoteKind.GUARD_STOPPED: lambda v: (
        f"account guard {guard.GuardState(v['state']).value.replace('_', ' ')}"
        + "".join(f" ({guard.Finding.from_json(f).text})" for f in v["findings"][:1])
        + f": entry {v['side']} {v['qty']} not copied"),
    NoteKind.QUARANTINE_LIFTED: lambda v: "quarantine_lifted",
    NoteKind.ROUTED: lambda v: f"leader {v['leader']} -> {v['symbol']} x{v['ratio']}",
    NoteKind.NOT_MAPPED: lambda v: str(v["why"]),
    NoteKind.LEG_ENDED: lambda v: (
        f"{_leg_words(v)}: {v['filled']} filled, the broker ended the rest"),
    NoteKind.LEG_FAILED: lambda v: f"{_leg_words(v)}: {v['error']}",
    NoteKind.LEG_QUEUED: lambda v: f"{_leg_words(v)} queued: {v['why']}",
    NoteKind.ENTRY_HELD: lambda v: f"entry not sent: {v['why']}",
    NoteKind.ACTION: lambda v: str(v["text"]),
    NoteKind.LEGACY_TEXT: lambda v: str(v["text"]),
}


@dataclass(frozen=True, slots=True)
class Note:
    """One note of a decision: its kind and its numbers (JSON values), stored as data
    (`Decision.notes`) and put in words from them (`text`), never read back from words."""

    kind: NoteKind
    values: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, kind: NoteKind, /, **values: Any) -> Note:
        return cls(kind, values)

    @property
    def text(self) -> str:
        return _NOTE_TEXT[self.kind](self.values)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind.value, **self.values}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Note:  # "kind" is the note's own key
        return cls(NoteKind(data["kind"]), {k: v for k, v in data.items() if k != "kind"})


def notes_text(notes: Iterable[Note]) -> str:
    """The notes in words, "; "-joined: for a person reading the admin or a log."""
    return "; ".join(note.text for note in notes)


class Mode(StrEnum):
    """A follower's (and a group's) copying mode beside its `enabled` flag (off)."""

    ACTIVE = "active"
    EXITS_ONLY = "exits_only"


class ExitMode(StrEnum):
    PROPORTIONAL = "proportional"
    WITH_LEADER = "with_leader"


class LegKind(StrEnum):
    EXIT = "exit"
    ENTRY = "entry"


@dataclass(frozen=True, slots=True)
class Leg:
    side: Side
    qty: int
    kind: LegKind

    def __post_init__(self) -> None:
        if self.qty <= 0:
            raise ValueError(f"a leg needs a quantity > 0, got {self.qty}")

    @property
    def signed(self) -> int:
        return signed(self.side, self.qty)

    def to_json(self) -> dict[str, object]:
        """The leg as a decision stores it (`planned_legs`, `placed_legs`)."""
        return {"side": self.side.value, "qty": self.qty, "kind": self.kind.value}


@dataclass(frozen=True, slots=True)
class LeaderMove:
    """The leader's position on the symbol before (P0) and after (P1) the fill."""

    p0: int
    p1: int

    def __post_init__(self) -> None:
        if self.p0 == self.p1:
            raise ValueError("a leader fill always moves the position (qty > 0)")


DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # datetime.weekday() order


@dataclass(frozen=True, slots=True)
class TradingWindow:
    """When a follower takes entries: from `start` to `end` local time in `tz`, on `days`.

    `end` before `start` is an overnight window (18:00-17:00, a futures session): a time
    after midnight belongs to the window that opened the day before, so `days` are the
    days a window opens. `start == end` is refused: no window at all is no limit (None).
    """

    start: dt.time
    end: dt.time
    tz: str = "UTC"
    days: frozenset[int] = frozenset(range(7))

    def __post_init__(self) -> None:
        if self.start == self.end:
            raise ValueError("a trading window needs an end different from its start")
        if not self.days or not self.days <= set(range(7)):
            raise ValueError(f"trading window days must be some of 0-6 (Monday 0), "
                             f"got {sorted(self.days)}")
        try:
            ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.tz!r}") from None

    @property
    def overnight(self) -> bool:
        return self.end < self.start

    def contains(self, when: dt.datetime) -> bool:
        """Whether `when` (aware) falls inside a window; the end itself is outside."""
        local = when.astimezone(ZoneInfo(self.tz))
        t, day = local.time().replace(tzinfo=None), local.weekday()
        if not self.overnight:
            return day in self.days and self.start <= t < self.end
        if t >= self.start:
            return day in self.days
        return t < self.end and (day - 1) % 7 in self.days

    def describe(self) -> str:
        days = "every day" if len(self.days) == 7 else days_text(self.days)
        return (f"{self.start:%H:%M}-{self.end:%H:%M} {self.tz} {days}"
                + (" (overnight)" if self.overnight else ""))


def days_parse(text: str) -> frozenset[int]:
    """'mon-fri', 'sun-thu', 'mon,wed,fri', 'fri-mon' (a range may wrap the week); '' is
    every day. Raises ValueError naming the part it cannot read."""
    days: set[int] = set()
    for part in (p.strip().lower() for p in text.split(",")):
        if not part:
            continue
        first, _, last = part.partition("-")
        try:
            a = DAY_NAMES.index(first.strip()[:3])
            b = DAY_NAMES.index(last.strip()[:3]) if last else a
        except ValueError:
            raise ValueError(f"unknown day {part!r}: use mon, tue, wed, thu, fri, sat, sun "
                             f"and ranges like mon-fri") from None
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return frozenset(days) if days else frozenset(range(7))


def days_text(days: frozenset[int]) -> str:
    return ",".join(DAY_NAMES[d] for d in sorted(days))


@dataclass(frozen=True, slots=True)
class SessionReset:
    """When the trading day turns over (`COPIER_SESSION_RESET`, 17:00 America/Chicago: the
    CME futures day): the daily loss limit counts the realised P&L since the last reset,
    and a lock holds entries until the next one. Every day, weekends included: a lock
    taken on Friday afternoon ends on Friday at 17:00, before the Sunday open."""

    at: dt.time
    tz: str

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.tz!r}") from None

    @classmethod
    def parse(cls, text: str) -> SessionReset:
        """'17:00 America/Chicago' (HH:MM and a time zone name); ValueError saying what."""
        clock, _, tz = str(text).strip().partition(" ")
        try:
            if len(clock) != 5:
                raise ValueError
            at = dt.time.fromisoformat(clock)
        except ValueError:
            raise ValueError(f"a session reset is 'HH:MM Time/Zone' (e.g. '17:00 "
                             f"America/Chicago'), got {text!r}") from None
        return cls(at, tz.strip() or "UTC")

    def start(self, now: dt.datetime) -> dt.datetime:
        """The last reset at or before `now` (aware), in UTC: the session `now` is in."""
        zone = ZoneInfo(self.tz)
        local = now.astimezone(zone)
        day = local.date()
        reset = dt.datetime.combine(day, self.at, tzinfo=zone)
        if reset > local:
            reset = dt.datetime.combine(day - dt.timedelta(days=1), self.at, tzinfo=zone)
        return reset.astimezone(dt.UTC)

    def next(self, now: dt.datetime) -> dt.datetime:
        """The first reset after `now`, in UTC: when a lock taken at `now` ends."""
        zone = ZoneInfo(self.tz)
        start = self.start(now).astimezone(zone)
        return dt.datetime.combine(start.date() + dt.timedelta(days=1), self.at,
                                   tzinfo=zone).astimezone(dt.UTC)

    def describe(self) -> str:
        return f"{self.at:%H:%M} {self.tz}"


def money(amount: Decimal) -> str:
    """-612.5 -> '-$612.50': a trader's way of writing an amount (the account's currency)."""
    sign_text = "-" if amount < 0 else ""
    return f"{sign_text}${abs(amount):,.2f}"


def loss_limit_reached(realized: Decimal, limit: Decimal) -> bool:
    """The day's realised P&L has lost the limit or more (a loss of exactly the limit
    counts: 'reaches')."""
    if limit <= 0:
        raise ValueError(f"a daily loss limit must be > 0, got {limit}")
    return realized <= -limit


@dataclass(frozen=True, slots=True)
class LossLock:
    """A follower's daily loss limit reached in lock mode: no entries from `since` (when the
    check found it) until `until` (the next session reset). Exits are never held."""

    limit: Decimal
    realized: Decimal
    since: dt.datetime
    until: dt.datetime
    tz: str = "UTC"  # the session reset's zone, to say `until` in the trader's time

    def holds(self, when: dt.datetime | None) -> bool:
        """Whether an entry of a leader fill read at `when` is held (unknown time: held).
        A fill read before the lock was taken is not: a re-run after a crash decides it as
        its first run did."""
        return when is None or self.since <= when < self.until

    def describe(self) -> str:
        until = self.until.astimezone(ZoneInfo(self.tz))
        return (f"daily loss limit {money(self.limit)}: realised {money(self.realized)} "
                f"this session, entries held until {until:%a %H:%M} {self.tz}")


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """A follower's own limits on entries (None: no limit). Exits are never limited."""

    max_order_qty: int | None = None  # contracts in one copied entry order
    max_position: int | None = None  # |position| per symbol
    max_symbols: int | None = None  # symbols held at once
    window: TradingWindow | None = None  # when entries are copied

    def __post_init__(self) -> None:
        for name in ("max_order_qty", "max_position", "max_symbols"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0 (or None: no limit), got {value}")


@dataclass(frozen=True, slots=True)
class FollowerFacts:
    """What the copier knows about one follower for this symbol when it evaluates."""

    position: int  # C, as last confirmed from the broker
    multiplier: Decimal
    reverse: bool = False
    exit_mode: ExitMode = ExitMode.PROPORTIONAL
    enabled: bool = True  # group and follower both enabled
    paused: bool = False  # after the heal check: the pause stays
    quarantined: bool = False  # an active quarantine on (follower, symbol)
    close_only: bool = False  # a leader move missed while disconnected (reconnect)
    exits_only: bool = False  # the follower's or its group's mode: wind-down, never enters
    # Sizing and risk limits (docs/rules.md "Sizing" and "Risk limits").
    fixed_qty: int | None = None  # contracts per leader position, instead of the multiplier
    # The symbol mapping's ratio (copier.domain.symbol_map): scales the multiplier or the fixed qty.
    ratio: Decimal = Decimal(1)
    limits: RiskLimits = RiskLimits()
    open_symbols: int = 0  # other symbols the follower holds (for limits.max_symbols)
    when: dt.datetime | None = None  # the leader's fill as the copier read it (window)
    # The daily loss limit's lock, when one was taken this session (copier.services.losslimit)
    loss_lock: LossLock | None = None
    # The account guard as the event froze it (copier.domain.guard): entries checked against
    # the firm's line; None: the account has no guard, or it was never read
    guard: guard.Standing | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the rules say to do for one follower and why; the engine records it as a
    `copier.models.Decision` once its legs met the broker."""

    reason: Reason
    legs: tuple[Leg, ...] = ()
    e0: int = 0
    e1: int = 0
    lift_quarantine: bool = False
    quarantine: bool = False
    notes: tuple[Note, ...] = ()

    @property
    def note(self) -> str:
        """The notes in words (`notes_text`)."""
        return notes_text(self.notes)


def sign(n: int) -> int:
    return (n > 0) - (n < 0)


def side_for(delta: int) -> Side:
    return Side.BUY if delta > 0 else Side.SELL


def expected_position(p: int, multiplier: Decimal, reverse: bool, *,
                      fixed_qty: int | None = None, max_position: int | None = None,
                      ratio: Decimal = Decimal(1)) -> int:
    """E(P) = d * sign(P) * round(|P| * m * r), round half away from zero.

    `r` is the symbol mapping's ratio (copier.domain.symbol_map: 10 for ES traded as MES), 1 for
    an unmapped symbol. With a fixed quantity `q`: E(P) = d * sign(P) * round(q * r)
    whatever |P| (0 when flat): the ratio keeps the notional of a fixed quantity too (a
    fixed 1 ES traded as MES is 10 MES). With a max position, |E(P)| is capped at it,
    after the ratio (the cap counts the follower's own contracts): a follower at its cap
    is in line, so the leader's later reductions are copied as reductions of what it
    holds, not as a divergence (docs/rules.md "Risk limits").
    """
    if ratio <= 0:
        raise ValueError("ratio must be > 0")
    if fixed_qty is not None:
        if fixed_qty <= 0:
            raise ValueError("fixed quantity must be > 0")
        magnitude = int((Decimal(fixed_qty) * ratio).quantize(
            Decimal(1), rounding=ROUND_HALF_UP)) if p else 0
    else:
        if multiplier <= 0:
            raise ValueError("multiplier must be > 0")
        magnitude = int(
            (Decimal(abs(p)) * multiplier * ratio).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    if max_position is not None:
        magnitude = min(magnitude, max_position)
    return (-1 if reverse else 1) * sign(p) * magnitude


def plan_move(current: int, target: int) -> tuple[Leg, ...]:
    """Legs taking `current` to `target`: an exit toward flat first, then an entry.

    A move that crosses zero is an exit to flat plus an entry on the new side.
    """
    if current == target:
        return ()
    delta = target - current
    side = side_for(delta)
    if current == 0 or sign(delta) == sign(current):
        return (Leg(side, abs(delta), LegKind.ENTRY),)
    exit_qty = min(abs(delta), abs(current))
    legs = [Leg(side, exit_qty, LegKind.EXIT)]
    if abs(delta) > exit_qty:
        legs.append(Leg(side, abs(delta) - exit_qty, LegKind.ENTRY))
    return tuple(legs)


def close_by(current: int, qty: int) -> tuple[Leg, ...]:
    """An exit reducing `current` by `qty`, capped so it never passes flat."""
    qty = min(abs(current), qty)
    if qty <= 0:
        return ()
    return (Leg(side_for(-current), qty, LegKind.EXIT),)


def cap_exit(side: Side | str, qty: int, position: int) -> int:
    """How much of an exit can still go out: never more than the position on that side."""
    if position == 0 or sign(signed(side, 1)) == sign(position):
        return 0
    return min(qty, abs(position))


def exit_retry_qty(side: Side | str, qty: int, position: int, expected: int | None) -> int:
    """How much of a queued exit goes out at a retry (Failed Exit Queue).

    Nothing when the follower already holds `expected`, what the leader's position
    calls for (None in a `with_leader` group, where the target after a reduction is
    flat); otherwise capped to what the follower still holds on that side.
    """
    if expected is not None and position == expected:
        return 0
    return cap_exit(side, qty, position)


def entry_denied(leg: Leg) -> str:
    """Why the copier itself refuses to send a leg ('' when it may go): an entry beyond
    the order size limit is a mistake (a multiplier, a fat-fingered fill), never a trade.
    Exits are never denied: they only ever reduce what the follower holds."""
    if leg.kind == LegKind.ENTRY and leg.qty > MAX_ORDER_QTY:
        return (f"denied by the copier: an entry of {leg.qty} contracts is beyond the limit "
                f"of {MAX_ORDER_QTY} per order")
    return ""


def leader_side(move: LeaderMove) -> int:
    return sign(move.p0) if move.p0 != 0 else sign(move.p1)


def decide(move: LeaderMove, facts: FollowerFacts) -> Verdict:
    """Rules 1-6 of docs/rules.md#decision-order, in order (the first that decides,
    decides), then the exits-only filter.

    Rule 2's heal check needs the follower's other symbols and is done by the
    caller before: `facts.paused` means the pause stays. Lifting a quarantine
    on flat/flat is reported with `lift_quarantine` and evaluation goes on.
    """
    cap = facts.limits.max_position
    e0 = expected_position(move.p0, facts.multiplier, facts.reverse, fixed_qty=facts.fixed_qty,
                           max_position=cap, ratio=facts.ratio)
    e1 = expected_position(move.p1, facts.multiplier, facts.reverse, fixed_qty=facts.fixed_qty,
                           max_position=cap, ratio=facts.ratio)
    c = facts.position

    def done(reason: Reason, legs: tuple[Leg, ...] = (), **kw: object) -> Verdict:
        return Verdict(reason, legs, e0, e1, lift_quarantine=lifted, **kw)  # type: ignore[arg-type]

    lifted = False
    # 1. Disabled
    if not facts.enabled:
        return done(Reason.DISABLED)
    # 2. Paused
    if facts.paused:
        return done(Reason.PAUSED)
    # 3. Quarantined
    if facts.quarantined:
        if not (c == 0 and move.p0 == 0):
            return done(Reason.QUARANTINED)
        lifted = True
    # 4. Opposite side (normal groups only)
    if not facts.reverse and sign(c) == -leader_side(move) and c != 0:
        return done(Reason.OPPOSITE_SIDE, quarantine=True)
    # 5. In sync
    if c == e0 and not facts.close_only:
        verdict = _in_sync(move, facts, e0, e1, lifted)
    # 6. Diverged: close-only (a reduction is the leader's, uncapped: a max position never
    # shrinks an exit)
    else:
        verdict = _close_only(move, c, e0, e1, lifted, reduction=_uncapped_reduction(move, facts))
    # 7. Exits only: what 5 or 6 would open or add is held back; exits still go
    if facts.exits_only:
        verdict = _exits_only(verdict)
    # 8. Risk limits: what is left of the entries, cut or held back; exits always pass
    return risk_limits_apply(verdict, move, facts)


def _exits_only(verdict: Verdict) -> Verdict:
    """An exits-only follower keeps the exit legs of the verdict and never its entries.

    A leader reversal closes the follower and does not open it on the new side; a
    leader's open or add leaves it as it is (`exits_only`, not `close_only`: the mode,
    not a divergence, is why nothing was entered). Exits are never held back.
    """
    held = [leg for leg in verdict.legs if leg.kind == LegKind.ENTRY]
    kept = tuple(leg for leg in verdict.legs if leg.kind == LegKind.EXIT)
    if held:
        note = Note.of(NoteKind.EXITS_ONLY_HELD,
                       legs=[[leg.side.value, leg.qty] for leg in held])
        reason = verdict.reason if kept else Reason.EXITS_ONLY
    elif verdict.reason == Reason.CLOSE_ONLY and not kept:
        note = Note.of(NoteKind.EXITS_ONLY_NO_ENTRY)
        reason = Reason.EXITS_ONLY
    else:
        return verdict
    return replace(verdict, reason=reason, legs=kept, notes=(*verdict.notes, note))


def _in_sync(move: LeaderMove, facts: FollowerFacts, e0: int, e1: int, lifted: bool) -> Verdict:
    same_side_reduction = (
        move.p1 != 0 and sign(move.p1) == sign(move.p0) and abs(move.p1) < abs(move.p0)
    )
    # with_leader closes on any same-side reduction, even one that rounding hides (E1 == E0)
    if facts.exit_mode == ExitMode.WITH_LEADER and same_side_reduction and facts.position:
        return Verdict(
            Reason.COPIED, plan_move(facts.position, 0), e0, e1, lift_quarantine=lifted,
            notes=(Note.of(NoteKind.WITH_LEADER),),
        )
    if e1 == e0:
        return Verdict(Reason.NO_CHANGE, (), e0, e1, lift_quarantine=lifted)
    return Verdict(Reason.COPIED, plan_move(facts.position, e1), e0, e1, lift_quarantine=lifted)


def _close_only(move: LeaderMove, c: int, e0: int, e1: int, lifted: bool,
                reduction: int | None = None) -> Verdict:
    def d(reason: Reason, then: Diverged, legs: tuple[Leg, ...] = ()) -> Verdict:
        note = Note.of(NoteKind.DIVERGED, c=c, e0=e0, then=then.value,
                       **({"qty": legs[0].qty} if then == Diverged.REDUCE else {}))
        return Verdict(reason, legs, e0, e1, lift_quarantine=lifted, notes=(note,))

    flat_or_reversed = move.p1 == 0 or sign(move.p1) == -sign(move.p0)  # from flat: an open
    reduced = not flat_or_reversed and move.p0 != 0 and abs(move.p1) < abs(move.p0)
    if not (flat_or_reversed or reduced):
        return d(Reason.CLOSE_ONLY, Diverged.NEVER_OPENS)
    if c == 0:
        return d(Reason.NOTHING_TO_CLOSE, Diverged.FLAT)
    if flat_or_reversed:
        # An unwind closes whatever the follower holds, on either side: E0 may have rounded
        # to 0, or a reverse-group follower may sit on the leader's side.
        legs = close_by(c, abs(c))
    elif sign(c) == sign(e0):
        cut = abs(e0) - abs(e1) if reduction is None else reduction
        legs = close_by(c, min(abs(c), cut))
    else:
        return d(Reason.NOTHING_TO_CLOSE, Diverged.NOTHING_ON_SIDE)
    if not legs:
        return d(Reason.NOTHING_TO_CLOSE, Diverged.NOTHING_LEFT)
    return d(Reason.CLOSE_ONLY, Diverged.REDUCE, legs)


# --- risk limits (docs/rules.md "Risk limits") ------------------------------------------------


def _uncapped_reduction(move: LeaderMove, facts: FollowerFacts) -> int | None:
    """|E0| - |E1| without the max position's cap (None when there is no cap): what rule 6
    reduces a diverged follower by, so that the cap never makes an exit smaller."""
    if facts.limits.max_position is None:
        return None
    e0, e1 = (expected_position(p, facts.multiplier, facts.reverse, fixed_qty=facts.fixed_qty,
                                ratio=facts.ratio)
              for p in (move.p0, move.p1))
    return abs(e0) - abs(e1)


def leader_enters(move: LeaderMove) -> bool:
    """The leader opened, added or reversed: its move has an entry in it."""
    return move.p0 == 0 or sign(move.p1) == -sign(move.p0) or abs(move.p1) > abs(move.p0)


def entry_allowed(leg: Leg, *, position: int, opens_symbol: bool, open_symbols: int,
                  limits: RiskLimits, when: dt.datetime | None) -> tuple[int, list[Note]]:
    """How many contracts of an entry leg a follower's risk limits let go out, and why not
    all of them (notes naming the limit and the numbers). `position` is the follower's
    position once the exits before this entry went out.

    The window and max open symbols hold an entry back whole (a part of an entry outside
    the hours is still an entry outside them); max position and max per order cut it to
    what fits, which keeps the follower as close to the leader as its limits allow.
    """
    entry = {"side": leg.side.value, "qty": leg.qty}
    window = limits.window
    if window is not None and (when is None or not window.contains(when)):
        at = None if when is None else (
            f"{when.astimezone(ZoneInfo(window.tz)):%a %H:%M} {window.tz}")
        return 0, [Note.of(NoteKind.OUTSIDE_WINDOW, window=window.describe(), at=at, **entry)]
    if limits.max_symbols is not None and opens_symbol and open_symbols >= limits.max_symbols:
        return 0, [Note.of(NoteKind.MAX_SYMBOLS, limit=limits.max_symbols, open=open_symbols,
                           **entry)]
    qty, notes = leg.qty, []
    if limits.max_position is not None and abs(position) + qty > limits.max_position:
        room = max(0, limits.max_position - abs(position))
        notes.append(Note.of(NoteKind.MAX_POSITION, limit=limits.max_position,
                             holds=position, room=room, **entry))
        qty = room
    if limits.max_order_qty is not None and qty > limits.max_order_qty:
        notes.append(Note.of(NoteKind.MAX_ORDER, limit=limits.max_order_qty, **entry))
        qty = limits.max_order_qty
    return qty, notes


def guard_entry_allowed(standing: guard.Standing, leg: Leg, *, position: int,
                        facts: FollowerFacts) -> tuple[int, list[Note]]:
    """How many contracts of an entry the account guard lets go out, and why not all
    (docs/rules.md#the-account-guard). A guard that stopped entries holds it whole; else
    the worst case after it is checked against the buffer and max contracts cuts it. The
    contracts the account holds are its last reading's, with this symbol's as the copier
    has it now (`position`: after the exits before this entry)."""
    entry = {"side": leg.side.value, "qty": leg.qty}
    if standing.stops_entries:
        return 0, [Note.of(NoteKind.GUARD_STOPPED, state=standing.state.value,
                           findings=[f.to_json() for f in standing.findings], **entry)]
    others = max(0, standing.reading.contracts - abs(facts.position))
    reading = replace(standing.reading, contracts=others + abs(position))
    qty, finding = guard.entry_check(standing.rules, standing.marks, reading,
                                     side=leg.side.value, qty=leg.qty,
                                     holds_after=reading.contracts + leg.qty, when=facts.when)
    return qty, [] if finding is None else [Note.of(NoteKind.GUARD, **finding.to_json())]


def _entry_limited(leg: Leg, position: int, facts: FollowerFacts) -> tuple[int, list[Note]]:
    """One entry leg through the loss lock, the follower's own limits and its account
    guard, in that order: what goes out of it, and why not all."""
    lock = facts.loss_lock
    if lock is not None and lock.holds(facts.when):
        return 0, [Note.of(NoteKind.LOSS_LOCKED, lock=lock.describe(), side=leg.side.value,
                           qty=leg.qty)]
    qty, notes = entry_allowed(leg, position=position, opens_symbol=facts.position == 0,
                               open_symbols=facts.open_symbols, limits=facts.limits,
                               when=facts.when)
    if qty and facts.guard is not None:
        qty, why = guard_entry_allowed(facts.guard, Leg(leg.side, qty, leg.kind),
                                       position=position, facts=facts)
        notes += why
    return qty, notes


def risk_limits_apply(verdict: Verdict, move: LeaderMove, facts: FollowerFacts) -> Verdict:
    """The follower's risk limits on the verdict of rules 1-7: its entries cut or held back,
    its exits untouched. Any cut, and a max position that kept the follower from following
    the leader's entry, makes the reason `risk_limit` (exits may still go out with it).
    A daily loss limit's lock holds every entry back whole: the day's loss is already
    there, and part of an entry is still new risk."""
    limits = facts.limits
    notes: list[Note] = []
    cap = limits.max_position
    if (cap is not None and not facts.exits_only and leader_enters(move)
            and verdict.reason in (Reason.COPIED, Reason.NO_CHANGE)):
        uncapped = expected_position(move.p1, facts.multiplier, facts.reverse,
                                     fixed_qty=facts.fixed_qty, ratio=facts.ratio)
        if abs(uncapped) > abs(verdict.e1):
            notes.append(Note.of(NoteKind.POSITION_CAPPED, cap=cap, uncapped=uncapped,
                                 e1=verdict.e1))
    legs: list[Leg] = []
    position = facts.position
    for leg in verdict.legs:
        if leg.kind == LegKind.EXIT:
            legs.append(leg)
            position += leg.signed
            continue
        qty, why = _entry_limited(leg, position, facts)
        notes += why
        if qty:
            legs.append(Leg(leg.side, qty, leg.kind))
            position += signed(leg.side, qty)
    if not notes:
        return verdict
    return replace(verdict, reason=Reason.RISK_LIMIT, legs=tuple(legs),
                   notes=(*verdict.notes, *notes))


# --- placing the plan --------------------------------------------------------------------------


class LegOutcome(StrEnum):
    PLACED = "placed"
    QUEUED = "queued"  # exit saved to the Failed Exit Queue
    DROPPED = "dropped"  # entry not sent: disconnected, or an earlier exit failed
    FAILED = "failed"  # entry failed at the broker: recorded, never retried
    REJECTED = "rejected"  # refused for good by the broker: quarantine
    # Not sent yet: an exit before it in the plan is still working at the broker; it goes
    # out once that exit has filled, and is dropped (`failed`) if the exit ends unfilled.
    WAITING = "waiting"


def leg_outcome(leg: Leg, *, failed: bool, permanent: bool = False,
                disconnected: bool = False) -> LegOutcome:
    """What became of one leg (docs/rules.md#placing-the-plan).

    Not sent: an exit to a disconnected follower is queued, anything else is
    dropped. Sent and failed: refused for good is `rejected`; a transient
    failure queues an exit and fails an entry (never retried: a stale entry
    is a new risk).
    """
    is_exit = leg.kind == LegKind.EXIT
    if disconnected:
        return LegOutcome.QUEUED if is_exit else LegOutcome.DROPPED
    if not failed:
        return LegOutcome.PLACED
    if permanent:
        return LegOutcome.REJECTED
    return LegOutcome.QUEUED if is_exit else LegOutcome.FAILED


def placement_reason(planned: Reason, outcomes: Iterable[tuple[Leg, LegOutcome]]) -> Reason:
    """The decision's final reason once its legs met the broker (most serious wins)."""
    seen = {outcome for _leg, outcome in outcomes}
    if LegOutcome.REJECTED in seen:
        return Reason.REJECTED
    if LegOutcome.QUEUED in seen:
        return Reason.EXIT_QUEUED
    if LegOutcome.FAILED in seen:
        return Reason.ENTRY_FAILED
    if LegOutcome.DROPPED in seen:
        return Reason.DISCONNECTED
    return planned


def ordered_for_placement(legs: Iterable[Leg]) -> tuple[Leg, ...]:
    """Exits before entries: an exit never waits behind a risk-adding order."""
    legs = tuple(legs)
    return tuple(leg for leg in legs if leg.kind == LegKind.EXIT) + tuple(
        leg for leg in legs if leg.kind == LegKind.ENTRY
    )


# --- Failed Exit Queue -------------------------------------------------------------------------

BACKOFF_BASE_SECONDS = 5
BACKOFF_CAP_SECONDS = 3600


def backoff_seconds(attempts: int) -> int:
    """Delay after the n-th failed attempt: min(5 s * 2^(n-1), 1 h); 0 before any attempt."""
    if attempts <= 0:
        return 0
    if attempts > 20:  # 2^19 * 5 s is far past the cap already
        return BACKOFF_CAP_SECONDS
    delay: int = BACKOFF_BASE_SECONDS * 2 ** (attempts - 1)
    return min(delay, BACKOFF_CAP_SECONDS)


# --- Sync Divergence Guard ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Divergence:
    """Per symbol: (what the copier knew, what the broker says)."""

    symbols: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.symbols)

    def describe(self) -> str:
        return ", ".join(
            f"{s}: copier {known:+d}, broker {actual:+d}"
            for s, (known, actual) in sorted(self.symbols.items())
        )


def divergence(known: Mapping[str, int], actual: Mapping[str, int]) -> Divergence:
    symbols = set(known) | set(actual)
    return Divergence(
        {
            s: (known.get(s, 0), actual.get(s, 0))
            for s in symbols
            if known.get(s, 0) != actual.get(s, 0)
        }
    )


def missed_moves(known: Mapping[str, int], actual: Mapping[str, int]) -> dict[str, LeaderMove]:
    """A leader's positions that changed while it was disconnected: copied close-only."""
    return {
        s: LeaderMove(before, after)
        for s, (before, after) in divergence(known, actual).symbols.items()
    }
