"""The copier's hand-written statements, each named, each with its own test (tests/sql).

They are written out because the ORM's compile cost was a good part of a copy's
latency, each on the hot path as a single round trip. Status values are bound
from the model enums, never spelled in the text; model columns are spelled from
the models (`ModelColumns`), and rows come back as model instances through it.
Never `SELECT *` or `RETURNING *`: a prepared statement whose result columns
change under it (a migration adding a column) is refused by PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, NamedTuple

from accounts.models import Position, TradingAccount
from copier.models import AccountGuard, Decision, LeaderEvent, MetricTally, Mode, Order
from core.rawsql import ModelColumns, RowsInsert, RowsUpdate, Statement

EVENT = ModelColumns.of(LeaderEvent)
POSITION = ModelColumns.of(Position)
# The account comes along without its (encrypted) credentials: evaluation never needs them.
ACCOUNT = ModelColumns.of(TradingAccount, without=["credentials"])


# The first round trip of every event. It counts the run, marks the event picked up
# and, on the first run, freezes the followers it concerns (those that joined before
# it) with their settings: every later run (after a crash) decides for the same
# followers with the same settings, so that no setting changed in between can make
# the copier forget or misread an order that went out.
#
# A frozen follower (a seat) is stored as a JSON array in the field order of
# `FrozenFollower`, the one stored format, which `engine.Seat.parse` reads by name: as
# objects, the keys were most of the bytes the first run wrote and read back, and the
# statement was slower for it (the measurements: CHANGELOG, "fan-out").
class FrozenFollower(NamedTuple):
    """One follower as an event froze it (an element of `LeaderEvent.followers_frozen`),
    each field as `FROZEN_FOLLOWER_SQL` reads it."""

    follower_id: int
    account_id: int
    multiplier: str  # a decimal as text: exact
    enabled: bool  # the follower's and its group's
    reverse: bool
    exit_mode: str
    start_event_id: int
    exits_only: bool  # the follower's or its group's mode
    fixed_qty: int | None
    max_order_qty: int | None
    max_position: int | None
    max_symbols: int | None
    window_start: str | None  # a time in ISO form
    window_end: str | None
    window_tz: str | None
    window_days: str | None
    loss_lock: dict[str, Any] | None  # {"limit", "realized", "since", "until"}
    micro: str
    symbol_rules: list[list[Any]] | None  # [leader symbol, follower symbol, ratio]
    guard: dict[str, Any] | None  # the account guard's standing (copier.domain.guard.Standing)


FROZEN_FOLLOWER_SQL: dict[str, str] = {
    "follower_id": "f.id",
    "account_id": "f.account_id",
    "multiplier": "f.multiplier::text",
    "enabled": "f.enabled AND g.enabled",
    "reverse": "g.reverse",
    "exit_mode": "g.exit_mode",
    "start_event_id": "f.start_event_id",
    "exits_only": "(f.mode = %s OR g.mode = %s)",
    "fixed_qty": "f.fixed_qty",
    "max_order_qty": "f.max_order_qty",
    "max_position": "f.max_position",
    "max_symbols": "f.max_symbols",
    "window_start": "f.window_start::text",
    "window_end": "f.window_end::text",
    "window_tz": "f.window_tz",
    "window_days": "f.window_days",
    # the daily loss limit's lock the fill was read in, if any (copier.services.losslimit):
    # frozen, so that a re-run holds what the first run held, lifted or not since
    "loss_lock": "(SELECT jsonb_build_object('limit', s.\"limit\"::text,"
    " 'realized', s.realized::text, 'since', s.locked_at, 'until', s.locked_until)"
    " FROM copier_sessionloss s WHERE s.follower_id = f.id AND s.locked_at <= le.received_at"
    " AND s.locked_until > le.received_at ORDER BY s.locked_at DESC LIMIT 1)",
    # the symbol mapping (copier.domain.symbol_map.SymbolMap.to_json): the re-run trades the
    # same follower symbols at the same ratios
    "micro": "f.micro",
    "symbol_rules": "(SELECT jsonb_agg(jsonb_build_array(m.leader_symbol, m.follower_symbol,"
    " m.ratio::text) ORDER BY m.id) FROM copier_symbolmapping m WHERE m.follower_id = f.id)",
    # the account guard as last read (copier.models.AccountGuard.standing): the entry check
    # of this event, and of its re-run, is made against the line and reading of then
    "guard": "(SELECT ag.standing FROM copier_accountguard ag WHERE ag.account_id ="
    " f.account_id AND ag.enabled)",
}
# Every field read, in the record's order, and nothing else (at import: a field added to
# the record and not to the statement, or the other way round, cannot ship).
if list(FROZEN_FOLLOWER_SQL) != list(FrozenFollower._fields):
    raise RuntimeError("FROZEN_FOLLOWER_SQL must name FrozenFollower's fields, in its order")
EVENT_RUN = Statement(
    "event_run",
    "WITH fr AS (SELECT COALESCE(jsonb_agg(jsonb_build_array("  # noqa: S608 (fixed columns)
    + ", ".join(FROZEN_FOLLOWER_SQL.values())
    + ") ORDER BY f.id), '[]'::jsonb) AS v"
    " FROM copier_leaderevent le JOIN copier_copygroup g ON g.leader_id = le.account_id"
    " JOIN copier_follower f ON f.group_id = g.id"
    " WHERE le.id = %s AND f.start_event_id < le.id)"
    " UPDATE copier_leaderevent e SET runs = e.runs + 1,"
    " status = CASE WHEN e.status = %s THEN %s ELSE e.status END,"
    " dispatched_at = COALESCE(e.dispatched_at, %s),"
    " followers_frozen = COALESCE(e.followers_frozen, fr.v),"
    " followers_total = COALESCE(e.followers_total, jsonb_array_length(fr.v))"
    # the leader's account comes along: the fan-out names the event by it (in Flower)
    " FROM fr, accounts_tradingaccount a WHERE e.id = %s AND a.id = e.account_id"
    " RETURNING " + EVENT.select("e") + ", " + ACCOUNT.select("a"),
    (*EVENT.names, *ACCOUNT.names),
)


def event_run(*, event_id: int, now: dt.datetime) -> LeaderEvent | None:
    """Count a run of the event and freeze its followers; None if there is no such event.
    The event's `account` is loaded with it."""
    exits_only = Mode.EXITS_ONLY.value
    rows = EVENT_RUN.run([exits_only, exits_only, event_id, LeaderEvent.Status.RECEIVED.value,
                          LeaderEvent.Status.DISPATCHED.value, now, event_id])
    if not rows:
        return None
    event = EVENT.build(rows[0])
    event.account = ACCOUNT.build(rows[0], start=len(EVENT.names))
    return event


# Leader events a worker started for an account's follower and has not decided yet
# (copier.services.sync_guard): the first ten, oldest first.
EVENTS_IN_FLIGHT = Statement(
    "events_in_flight",
    "SELECT e.id FROM copier_leaderevent e WHERE e.status <> %s AND e.runs >= 1"
    " AND EXISTS (SELECT 1 FROM jsonb_array_elements(e.followers_frozen) x"
    " WHERE x -> %s::int = to_jsonb(%s::bigint))"
    " AND NOT EXISTS (SELECT 1 FROM copier_decision d WHERE d.event_id = e.id"
    " AND d.account_id = %s)"
    " ORDER BY e.id LIMIT 10",
    ("id",),
)
_SEAT_ACCOUNT = FrozenFollower._fields.index("account_id")


def events_in_flight(*, account_id: int) -> list[int]:
    """Started, not done, and nothing decided for the account among its frozen followers."""
    rows = EVENTS_IN_FLIGHT.run([LeaderEvent.Status.DONE.value, _SEAT_ACCOUNT, account_id,
                                 account_id])
    return [row[0] for row in rows]


# Done once every follower counted at fan-out has a decision: one conditional UPDATE,
# so that of two batches finishing together exactly one marks the event done.
EVENT_FINISH = Statement(
    "event_finish",
    "UPDATE copier_leaderevent SET status = %s, done_at = %s"
    " WHERE id = %s AND status <> %s AND followers_total IS NOT NULL"
    " AND followers_total <= (SELECT count(*) FROM copier_decision WHERE event_id = %s)",
)


def event_finish(*, event_id: int, now: dt.datetime) -> None:
    done = LeaderEvent.Status.DONE.value
    EVENT_FINISH.run([done, now, event_id, done, event_id])


# The columns ingestion writes from the fill; the rest are computed or defaulted.
_FILL_COLUMNS = ("account_id", "fill_id", "symbol", "side", "qty", "close_only", "source",
                 "fill_time", "received_at")
# The whole of ingestion in one statement, its own transaction unless the caller has one:
# it sits between the fill being received and the copy starting. The leader's position
# row is locked (so concurrent fills on a symbol are numbered one after the other: a
# waiting statement locks the row as the first one left it), the event stored with P0/P1
# from it, and the position moved. A fill id seen before inserts nothing, and so moves
# nothing: that is the duplicate check, and the unique constraint makes it race-free.
# A position the broker's stream stated ahead of this fill (`broker_qty`) is settled
# when the fill brings the position there. No row: a duplicate, or no position row yet.
LEADER_FILL_STORE = Statement(
    "leader_fill_store",
    "WITH pos AS (SELECT id, qty, last_event_id FROM accounts_position"  # noqa: S608 (column names)
    " WHERE account_id = %s AND symbol = %s FOR UPDATE),"
    " ev AS (INSERT INTO copier_leaderevent (" + ", ".join(_FILL_COLUMNS)
    + ", p0, p1, prev_event_id, runs, status) SELECT "
    + ", ".join(["%s"] * len(_FILL_COLUMNS))
    + ", pos.qty, pos.qty + %s, pos.last_event_id, 0, %s FROM pos"
    " ON CONFLICT (account_id, fill_id) DO NOTHING RETURNING " + EVENT.select() + ")"
    " UPDATE accounts_position p SET qty = ev.p1, last_event_id = ev.id, updated_at = now(),"
    " broker_qty = CASE WHEN p.broker_qty = ev.p1 THEN NULL ELSE p.broker_qty END,"
    " broker_qty_since = CASE WHEN p.broker_qty = ev.p1 THEN NULL ELSE p.broker_qty_since END"
    " FROM ev, pos WHERE p.id = pos.id RETURNING " + EVENT.select("ev"),
    EVENT.names,
)


def leader_fill_store(*, event: LeaderEvent, moved: int) -> LeaderEvent | None:
    """Store the (unsaved) event, moving the leader's position by `moved`; the stored row,
    or None when nothing was stored."""
    params = [event.account_id, event.symbol, *(getattr(event, c) for c in _FILL_COLUMNS),
              moved, LeaderEvent.Status.RECEIVED.value]
    rows = LEADER_FILL_STORE.run(params)
    return EVENT.build(rows[0]) if rows else None


# The hot path's one lock statement: the ORM spent four times longer compiling its
# select_related + Exists + FOR UPDATE OF than PostgreSQL spent running it. Each row:
# the position, its account, whether an active quarantine covers the symbol, whether an
# order of (account, symbol) has an outcome the copier does not know, and whether one is
# still working at the broker (no decision is taken on a position it will still change).
POSITIONS_LOCK = Statement(
    "positions_lock",
    "SELECT " + POSITION.select("p") + ", " + ACCOUNT.select("a") + ","  # noqa: S608
    " EXISTS (SELECT 1 FROM copier_quarantine q WHERE q.account_id = p.account_id"
    " AND q.symbol = p.symbol AND q.lifted_at IS NULL) AS quarantined,"
    " EXISTS (SELECT 1 FROM copier_order o WHERE o.account_id = p.account_id"
    " AND o.symbol = p.symbol AND o.status = %s) AS unknown_orders,"
    " EXISTS (SELECT 1 FROM copier_order o WHERE o.account_id = p.account_id"
    " AND o.symbol = p.symbol AND o.status = %s) AS working_orders"
    # (account, symbol) pairs: a mapped follower's row is on its own symbol
    # (copier.domain.symbol_map). A join, not `IN (SELECT ... unnest)`: the semi-join's plan
    # was slower for the few pairs a lock takes (measured in the CHANGELOG).
    " FROM unnest(%s::bigint[], %s::text[]) AS k(a, s)"
    " JOIN accounts_position p ON p.account_id = k.a AND p.symbol = k.s"
    " JOIN accounts_tradingaccount a ON a.id = p.account_id"
    " ORDER BY p.account_id, p.symbol FOR UPDATE OF p",
    (*POSITION.names, *ACCOUNT.names, "quarantined", "unknown_orders", "working_orders"),
)


def positions_lock(*, account_ids: Sequence[int], symbol: str) -> list[Position]:
    """Lock the rows that exist, in account order; each with `account`, `quarantined`,
    `unknown_orders` and `working_orders` filled in."""
    return positions_lock_pairs(pairs=[(a, symbol) for a in account_ids])


def positions_lock_pairs(*, pairs: Sequence[tuple[int, str]]) -> list[Position]:
    """`positions_lock` for rows of several symbols, one per follower (each on its mapped
    symbol), locked in (account, symbol) order: the lock order everywhere."""
    rows = POSITIONS_LOCK.run([Order.Status.UNKNOWN.value, Order.Status.ACCEPTED.value,
                               [a for a, _s in pairs], [s for _a, s in pairs]])
    found = []
    for row in rows:
        position = POSITION.build(row)
        position.account = ACCOUNT.build(row, start=len(POSITION.names))
        position.quarantined, position.unknown_orders, position.working_orders = row[-3:]
        found.append(position)
    return found


# Django's bulk_update builds a CASE expression per row, which costs more than the
# whole fan-out's decisions; this is one UPDATE ... FROM (VALUES).
POSITIONS_SAVE = Statement(
    "positions_save",
    "UPDATE accounts_position AS p SET qty = v.qty, last_event_id = v.last_event_id::bigint,"
    " updated_at = now() FROM (VALUES {values}) AS v(id, qty, last_event_id)"
    " WHERE p.id = v.id",
    widths={"values": 3},
)


def positions_save(rows: Sequence[Position]) -> None:
    """Write qty and watermark of many locked rows in one statement."""
    if rows:
        POSITIONS_SAVE.run([v for row in rows for v in (row.pk, row.qty, row.last_event_id)],
                           rows={"values": len(rows)})


# A fill on a follower's account, counted once however often the stream delivers it (the
# unique constraint decides, race-free). One counted as the trader's keeps the ids of the
# order that made it, its side and quantity (for FOLLOWER_FILLS_CLAIM); our own orders'
# fills are kept with empty ones.
FOLLOWER_FILL_SEEN = Statement(
    "follower_fill_seen",
    "INSERT INTO accounts_followerfill (account_id, fill_id, seen_at, client_order_id,"
    " broker_order_id, side, qty) VALUES (%s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (account_id, fill_id) DO NOTHING RETURNING id",
    ("id",),
)


def follower_fill_seen(*, account_id: int, fill_id: str, now: dt.datetime,
                       traders: tuple[str, str, str, int] | None = None) -> bool:
    """Record the fill id; False when it was recorded before.

    `traders`: the fill counts as the trader's: (client order id, broker order id, side,
    quantity) of the order that made it, kept for an order of ours recorded later."""
    client_order_id, broker_order_id, side, qty = traders or ("", "", "", 0)
    return bool(FOLLOWER_FILL_SEEN.run([account_id, fill_id, now, client_order_id[:64],
                                        broker_order_id[:64], side, qty]))


# The fills counted as the trader's that turn out to be an order of ours: its row was not
# on record when they came (a run that crashed after the broker executed, its transaction
# rolled back), and is recorded now from a look-up. Claimed once: their ids are cleared,
# so that the order's next look-up finds them its own already.
FOLLOWER_FILLS_CLAIM = Statement(
    "follower_fills_claim",
    "UPDATE accounts_followerfill SET client_order_id = '', broker_order_id = ''"
    " WHERE account_id = %s AND side = %s AND qty > 0"
    " AND (client_order_id = %s OR (%s <> '' AND broker_order_id = %s)) RETURNING qty",
    ("qty",),
)


def follower_fills_claim(*, account_id: int, side: str, client_order_id: str,
                         broker_order_id: str) -> int:
    """What fills counted as the trader's hold of this order of ours, claimed for it."""
    rows = FOLLOWER_FILLS_CLAIM.run([account_id, side, client_order_id, broker_order_id,
                                     broker_order_id])
    return sum(int(row[0]) for row in rows)


# A transaction-level advisory lock of (class, key), held until the transaction ends:
# the counting of a follower's open symbols (risk limit `max_symbols`) is serialised per
# account with it (copier.services.positions.open_symbols_count).
ADVISORY_XACT_LOCK = Statement(
    "advisory_xact_lock", "SELECT pg_advisory_xact_lock(%s, %s)", ("pg_advisory_xact_lock",),
)


def advisory_xact_lock(*, lock_class: int, key: int) -> None:
    ADVISORY_XACT_LOCK.run([lock_class, key])


# The same lock, single-key, tried without waiting: one metrics scrape folds new rows into
# the tallies while another skips the fold (copier.metrics.tallies_fold).
ADVISORY_XACT_TRY_LOCK = Statement(
    "advisory_xact_try_lock", "SELECT pg_try_advisory_xact_lock(%s)",
    ("pg_try_advisory_xact_lock",),
)


def advisory_xact_try_lock(*, key: int) -> bool:
    return bool(ADVISORY_XACT_TRY_LOCK.run([key])[0][0])


# Every tally a scrape adds, in one upsert: INSERT ... ON CONFLICT adds to what is there.
_TALLY = MetricTally._meta.db_table
METRIC_TALLIES_ADD = Statement(
    "metric_tallies_add",
    f"INSERT INTO {_TALLY} (key, value)"  # noqa: S608 - the model's table name
    " SELECT k, v FROM unnest(%s::varchar[], %s::float8[]) AS t(k, v)"
    f" ON CONFLICT (key) DO UPDATE SET value = {_TALLY}.value + EXCLUDED.value",
)


def metric_tallies_add(add: dict[str, float]) -> None:
    keys, values = zip(*sorted(add.items()), strict=True)
    METRIC_TALLIES_ADD.run([list(keys), [float(v) for v in values]])


# A batch's decisions and orders, each in one statement (core.rawsql.RowsInsert): at a
# 200-follower fan-out, Django's bulk_create spent more preparing the values than
# PostgreSQL spent storing them.
DECISION_ROWS = RowsInsert.of("decisions_insert", Decision)
# Named as the module's other statements are, so that tests/sql lists and checks them too.
DECISIONS_INSERT = DECISION_ROWS.statement
ORDER_ROWS = RowsInsert.of("orders_insert", Order)
ORDERS_INSERT = ORDER_ROWS.statement


def decisions_insert(*, decisions: Sequence[Decision]) -> None:
    """Store the (unsaved) decisions; each gets its id."""
    DECISION_ROWS.run(decisions)


def orders_insert(*, orders: Sequence[Order]) -> None:
    """Store the (unsaved) orders; each gets its id."""
    ORDER_ROWS.run(orders)



# What an account guard's reading keeps on its row (copier.services.guard), a batch's
# rows written in one statement: Django's bulk_update compiled a CASE per field and row.
GUARD_KEPT = ("high_water", "day_start", "week_start", "line", "line_source", "balance",
              "open_pnl", "equity", "contracts", "equity_source", "read_at", "read_error",
              "state", "findings", "locked_at", "flattened_at", "switched", "standing")
GUARD_ROWS = RowsUpdate.of("guards_keep", AccountGuard, GUARD_KEPT)
GUARDS_KEEP = GUARD_ROWS.statement


def guards_keep(*, guards: Sequence[AccountGuard]) -> None:
    """Write what their readings kept on these (locked) guard rows."""
    GUARD_ROWS.run(guards)
