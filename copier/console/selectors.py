"""What the dashboard shows, read in a fixed handful of statements whatever the number of
groups and followers: per follower its connection, pause, quarantines, per symbol what it
holds beside what the rules expect for the leader's current position, exits waiting, orders
in doubt, and its last copy latency; and a colour that says who has to act.

Colours: red needs the trader (quarantined, paused, disconnected too long, rejected, or out
of line with nothing under way to fix it: the copier only ever closes such a position);
amber is the copier working on it (an exit queued, an order being looked up, reconnecting,
a leader move being copied now); green is in sync; grey is switched off.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings
from django.db import connection
from django.db.models import Q

from accounts.models import ConnectionState, Position, TradingAccount
from copier.console.display import time_display
from copier.domain import rules, symbol_map
from copier.domain.guard import Finding, GuardState
from copier.models import (
    AccountGuard,
    CopyGroup,
    FailedExit,
    Follower,
    LeaderEvent,
    Mode,
    Order,
    Quarantine,
    SessionLoss,
)
from core import clock
from core.trading import ANSWERED

RED, AMBER, GREEN, OFF = "red", "amber", "green", "off"
_RANK = {OFF: 0, GREEN: 1, AMBER: 2, RED: 3}


def worst(*colours: str) -> str:
    return max(colours, key=_RANK.__getitem__, default=GREEN)


# A quarantine's reason as the trader reads it.
QUARANTINE_WORDS = {
    Quarantine.Reason.OPPOSITE_SIDE: "on the opposite side of the leader",
    Quarantine.Reason.REJECTED: "the broker refused an order for good",
}


@dataclass
class SymbolRow:
    symbol: str
    leader: int
    held: int
    expected: int
    quarantine: Quarantine | None = None
    exits_waiting: list[FailedExit] = field(default_factory=list)
    exits_rejected: list[FailedExit] = field(default_factory=list)
    in_doubt: int = 0
    working: int = 0  # orders of the copier's accepted at the broker, not yet settled
    copying: bool = False
    leader_symbols: list[str] = field(default_factory=list)  # when mapped from another symbol
    colour: str = GREEN
    why: list[str] = field(default_factory=list)

    @property
    def in_sync(self) -> bool:
        return self.held == self.expected

    @property
    def quarantine_text(self) -> str:
        if self.quarantine is None:
            return ""
        return QUARANTINE_WORDS.get(self.quarantine.reason,  # type: ignore[call-overload]
                                    self.quarantine.reason.replace("_", " "))

    @property
    def exits_waiting_qty(self) -> int:
        return sum(fe.qty for fe in self.exits_waiting)


@dataclass(frozen=True, slots=True)
class GuardBar:
    """A follower's account guard as the dashboard draws it: how far equity stands above
    the firm's line, against the buffer (red inside it) and the warning (amber), as a bar
    over the drawdown (full: a drawdown away from the line)."""

    guard: AccountGuard
    colour: str
    room: Decimal | None  # equity less the line; None: not read yet
    fill: int  # the bar's length, percent of the drawdown
    why: str

    @classmethod
    def of(cls, g: AccountGuard) -> GuardBar:
        why = "; ".join(Finding.from_json(f).text for f in g.findings)
        if g.equity is None or g.line is None:
            return cls(g, AMBER, None, 0, g.read_error or "not read yet")
        room = g.equity - g.line
        fill = max(0, min(100, int(room * 100 / g.drawdown))) if g.drawdown else 0
        if g.state == GuardState.LOCKED or room <= g.buffer:
            colour = RED
        elif g.state != GuardState.OK or room <= max(g.warn, g.buffer) or g.read_error:
            colour = AMBER
        else:
            colour = GREEN
        return cls(g, colour, room, fill, why or g.read_error)

    @property
    def text(self) -> str:
        g = self.guard
        if self.room is None:
            return f"account guard: {self.why}"
        assert g.equity is not None
        assert g.line is not None
        return (f"equity {rules.money(g.equity)}, line {rules.money(g.line)}, "
                f"{rules.money(self.room)} above it (buffer {rules.money(g.buffer)})")


@dataclass
class FollowerCard:
    follower: Follower
    account: TradingAccount
    rows: list[SymbolRow]
    latency_ms: float | None = None
    latency_at: dt.datetime | None = None
    latency_event_id: int | None = None
    colour: str = GREEN
    why: list[str] = field(default_factory=list)
    disconnected_too_long: bool = False
    exits_only: bool = False  # the follower's or its group's mode: winding down
    loss_locked_until: dt.datetime | None = None  # its daily loss limit's lock
    guard: GuardBar | None = None  # its account guard, when it has one

    @property
    def own_why(self) -> list[str]:
        """The reasons of the follower as a whole (off, paused, disconnected...), without
        its rows' (which name positions, quarantines and exits): what a user who may not
        view those reads."""
        rows = {f"{r.symbol}: {w}" for r in self.rows for w in r.why}
        return [w for w in self.why if w not in rows]

    @property
    def slow(self) -> bool:
        from copier.console.latency import SLOW_MS

        return self.latency_ms is not None and self.latency_ms > SLOW_MS


@dataclass
class GroupPanel:
    group: CopyGroup
    leader_positions: dict[str, int]
    cards: list[FollowerCard]

    @property
    def colour(self) -> str:
        active = [c.colour for c in self.cards]
        return worst(*active) if active else OFF

    def count(self, colour: str) -> int:
        return sum(1 for c in self.cards if c.colour == colour)


def _disconnect_limit(group: CopyGroup) -> int:
    config = getattr(group, "alert_config", None)
    if config is not None:
        return int(config.disconnect_after_seconds)
    return int(settings.COPIER_ALERT_DISCONNECT_SECONDS)


def _last_latencies(account_ids: list[int]) -> dict[int, tuple[float, dt.datetime, int]]:
    """Each follower's last copy: fill read -> its broker's answer, ms (copier.console.latency)."""
    if not account_ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT a.id, x.ms, x.completed_at, x.event_id
            FROM unnest(%s::bigint[]) AS a(id)
            CROSS JOIN LATERAL (
                SELECT GREATEST(EXTRACT(EPOCH FROM (o.completed_at - e.received_at)) * 1000, 0)
                           AS ms, o.completed_at, e.id AS event_id
                FROM copier_order o
                JOIN copier_decision d ON d.id = o.decision_id
                JOIN copier_leaderevent e ON e.id = d.event_id
                WHERE o.account_id = a.id AND o.completed_at IS NOT NULL
                  AND o.status = ANY(%s)
                ORDER BY o.id DESC LIMIT 1
            ) AS x
            """, [account_ids, sorted(ANSWERED)])
        return {aid: (float(ms), at, eid) for aid, ms, at, eid in cursor.fetchall()}


@dataclass
class _World:
    """Everything the dashboard reads, keyed for the judging below."""

    positions: dict[int, dict[str, int]]
    quarantines: dict[tuple[int, str], Quarantine]
    exits: dict[tuple[int, str], list[FailedExit]]
    in_doubt: dict[tuple[int, str], int]
    copying: set[tuple[int, str]]
    working: dict[tuple[int, str], int]
    latencies: dict[int, tuple[float, dt.datetime, int]]
    loss_locks: dict[int, dt.datetime] = field(default_factory=dict)  # follower pk -> until
    guards: dict[int, AccountGuard] = field(default_factory=dict)  # account pk -> its guard


def _loss_locks_read(now: dt.datetime) -> dict[int, dt.datetime]:
    """Followers whose daily loss limit holds their entries now, and until when."""
    return {follower_id: until for follower_id, until in SessionLoss.objects.filter(
        locked_at__lte=now, locked_until__gt=now).values_list("follower_id", "locked_until")
        if until is not None}


def _world_read(leader_ids: set[int], follower_ids: list[int]) -> _World:
    positions: dict[int, dict[str, int]] = defaultdict(dict)
    for aid, symbol, qty in Position.objects.filter(
            account_id__in=[*leader_ids, *follower_ids]).values_list("account_id", "symbol",
                                                                     "qty"):
        positions[aid][symbol] = qty
    quarantines = {(q.account_id, q.symbol): q for q in Quarantine.objects.filter(
        account_id__in=follower_ids, lifted_at__isnull=True)}
    exits: dict[tuple[int, str], list[FailedExit]] = defaultdict(list)
    for fe in FailedExit.objects.filter(
            account_id__in=follower_ids,
            status__in=[FailedExit.Status.PENDING, FailedExit.Status.IN_FLIGHT,
                        FailedExit.Status.REJECTED]):
        exits[(fe.account_id, fe.symbol)].append(fe)
    in_doubt: dict[tuple[int, str], int] = defaultdict(int)
    working: dict[tuple[int, str], int] = defaultdict(int)
    for aid, symbol, status in Order.objects.filter(
            account_id__in=follower_ids, status__in=[Order.Status.UNKNOWN, Order.Status.ACCEPTED]
    ).values_list("account_id", "symbol", "status"):
        (in_doubt if status == Order.Status.UNKNOWN else working)[(aid, symbol)] += 1
    copying = set(LeaderEvent.objects.filter(account_id__in=leader_ids).filter(
        ~Q(status=LeaderEvent.Status.DONE)).values_list("account_id", "symbol"))
    return _World(positions, quarantines, exits, in_doubt, copying, working,
                  _last_latencies(follower_ids))


def dashboard_groups(*, now: dt.datetime | None = None) -> list[GroupPanel]:
    """Every group with its followers' state: a fixed number of statements."""
    now = now or clock.now()
    groups = list(CopyGroup.objects.select_related("leader", "alert_config").order_by("name"))
    followers = list(Follower.objects.select_related("account").prefetch_related(
                     "symbol_mappings").filter(group__in=groups)
                     .order_by("account__name"))
    world = _world_read({g.leader_id for g in groups}, [f.account_id for f in followers])
    world.loss_locks = _loss_locks_read(now)
    world.guards = {g.account_id: g for g in AccountGuard.objects.filter(
        account_id__in=[f.account_id for f in followers], enabled=True)}
    by_group: dict[int, list[Follower]] = defaultdict(list)
    for f in followers:
        by_group[f.group_id].append(f)
    panels = []
    for g in groups:
        cards = [_card(g, f, world, now) for f in by_group[g.pk]]
        leader_pos = world.positions.get(g.leader_id, {})
        panels.append(GroupPanel(g, {s: q for s, q in sorted(leader_pos.items()) if q}, cards))
    return panels


def _card(g: CopyGroup, f: Follower, world: _World, now: dt.datetime) -> FollowerCard:
    leader_pos = world.positions.get(g.leader_id, {})
    held = world.positions.get(f.account_id, {})
    exits_only = Mode.EXITS_ONLY in (f.mode, g.mode)
    mine = _symbols_attended(world, f.account_id)
    rows = []
    # On the follower's own symbols: a mapped follower's MNQ row expects E of the leader's NQ.
    smap = f.symbols()
    expected = symbol_map.expected_positions(leader_pos, f.multiplier, g.reverse, smap,
                                             fixed_qty=f.fixed_qty, max_position=f.max_position)
    sources = _leader_sources(leader_pos, smap)
    copying = {smap.route(s).symbol for (a, s) in world.copying if a == g.leader_id}
    for symbol in sorted(set(expected) | set(held) | mine):
        from_leader = sources.get(symbol, [])
        row = _row_read(f.account_id, symbol, world,
                        leader=sum(leader_pos.get(s, 0) for s in from_leader),
                        held=held.get(symbol, 0), expected=expected.get(symbol, 0),
                        from_leader=from_leader, copying=symbol in copying)
        if row.leader or row.held or symbol in mine:
            rows.append(_row_judge(row, exits_only=exits_only))
    guarded = world.guards.get(f.account_id)
    card = FollowerCard(f, f.account, rows, exits_only=exits_only,
                        loss_locked_until=world.loss_locks.get(f.pk),
                        guard=None if guarded is None else GuardBar.of(guarded))
    if f.account_id in world.latencies:
        card.latency_ms, card.latency_at, card.latency_event_id = world.latencies[f.account_id]
    _card_judge(card, g, now)
    return card


def _symbols_attended(world: _World, account_id: int) -> set[str]:
    """The follower's symbols with something of the copier's on them (a quarantine, an
    exit, an order in doubt or working): each gets a row, flat or not, so that what is
    under way there shows."""
    return {s for (a, s) in [*world.quarantines, *world.exits, *world.in_doubt, *world.working]
            if a == account_id}


def _leader_sources(leader_pos: dict[str, int],
                    smap: symbol_map.SymbolMap) -> dict[str, list[str]]:
    """The leader's symbols each follower symbol copies (several when mapped onto one):
    a row's leader position is theirs summed, and they are named when not its own."""
    sources: dict[str, list[str]] = defaultdict(list)
    for leader_symbol in leader_pos:
        route = smap.route(leader_symbol)
        if not route.blocked:
            sources[route.symbol].append(leader_symbol)
    return sources


def _row_read(account_id: int, symbol: str, world: _World, *, leader: int, held: int,
              expected: int, from_leader: list[str], copying: bool) -> SymbolRow:
    """One symbol's row, before judging: what the world holds for (follower, symbol), its
    queued exits split into those still tried and those the broker refused for good."""
    key = (account_id, symbol)
    row = SymbolRow(
        symbol, leader, held, expected,
        quarantine=world.quarantines.get(key),
        in_doubt=world.in_doubt.get(key, 0),
        working=world.working.get(key, 0),
        copying=copying,
        leader_symbols=sorted(s for s in from_leader if s != symbol))
    for fe in world.exits.get(key, []):
        (row.exits_rejected if fe.status == FailedExit.Status.REJECTED
         else row.exits_waiting).append(fe)
    return row


def _wound_down(row: SymbolRow) -> bool:
    """An exits-only follower holds at most what the leader calls for, on its side: as
    intended (it never enters, so it may hold less, or nothing)."""
    return row.held == 0 or (rules.sign(row.held) == rules.sign(row.expected)
                             and abs(row.held) <= abs(row.expected))


def _row_judge(row: SymbolRow, *, exits_only: bool = False) -> SymbolRow:
    colours = [GREEN]
    if row.quarantine is not None:
        colours.append(RED)
        row.why.append(f"quarantined: {row.quarantine_text}")
    if row.exits_rejected:
        colours.append(RED)
        row.why.append("exit rejected by the broker")
    if row.exits_waiting:
        colours.append(AMBER)
        row.why.append(f"exit of {row.exits_waiting_qty} queued")
    if row.in_doubt:
        colours.append(AMBER)
        row.why.append("order outcome unknown: being looked up")
    if row.working:
        colours.append(AMBER)
        row.why.append("order working at the broker: the leader's next fills wait for it")
    if not row.in_sync and exits_only and _wound_down(row):
        row.why.append("exits only: winding down with the leader's exits")
    elif not row.in_sync:
        if row.copying:
            colours.append(AMBER)
            row.why.append("copying the leader's move now")
        elif len(colours) == 1:
            colours.append(RED)
            row.why.append("out of line: the copier only closes, a person decides the rest")
    row.colour = worst(*colours)
    return row


def _card_judge(card: FollowerCard, group: CopyGroup, now: dt.datetime) -> None:
    account = card.account
    if not (card.follower.enabled and group.enabled):
        card.colour = OFF
        card.why.append("switched off" if not card.follower.enabled else "group switched off")
        return
    colours = [GREEN, *(r.colour for r in card.rows)]
    if card.exits_only:
        card.why.append("exits only: no entry is copied")
    if card.loss_locked_until is not None:
        colours.append(AMBER)
        card.why.append(f"daily loss limit reached: no entry is copied until "
                        f"{time_display(card.loss_locked_until)}")
    if card.guard is not None and card.guard.colour != GREEN:
        colours.append(card.guard.colour)
        card.why.append(f"account guard {card.guard.guard.get_state_display().lower()}: "
                        f"{card.guard.why or card.guard.text}")
    if account.copy_paused:
        colours.append(RED)
        card.why.append("paused")
    if account.connection_state != ConnectionState.CONNECTED:
        colours.append(_connection_judge(card, group, now))
    card.why.extend(f"{r.symbol}: {w}" for r in card.rows for w in r.why)
    card.colour = worst(*colours)


def _connection_judge(card: FollowerCard, group: CopyGroup, now: dt.datetime) -> str:
    """The colour of an account that is not connected: red once it has been disconnected
    longer than its group's alert allows (the trader has to look), amber while it may be
    on its way back (the copier reconnects by itself)."""
    account = card.account
    since = account.connection_changed_at or account.last_disconnected_at
    too_long = since is None or (now - since).total_seconds() > _disconnect_limit(group)
    if account.connection_state == ConnectionState.DISCONNECTED and too_long:
        card.disconnected_too_long = True
        card.why.append("disconnected")
        return RED
    card.why.append("connecting" if account.connection_state == ConnectionState.UNKNOWN
                    else "reconnecting")
    return AMBER
