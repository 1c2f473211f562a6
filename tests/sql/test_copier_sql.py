"""Each of the copier's hand-written statements, run on its own on real rows.

Besides what each returns, every test checks the columns the statement really
returns against the model's fields, in name and order: a model change the SQL
misses fails here, not in a trade.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest

from accounts.models import FollowerFill, Position, TradingAccount
from copier import sql
from copier.domain import rules
from copier.domain.symbol_map import Micro, SymbolMap, SymbolRule
from copier.models import (
    CopyGroup,
    Follower,
    LeaderEvent,
    Mode,
    Order,
    Quarantine,
    SessionLoss,
    SymbolMapping,
)
from copier.services import losslimit
from copier.services.engine import Seat, event_seats
from core.rawsql import RowsInsert, RowsUpdate, Statement
from tests.factories import account, group
from tests.sql.helpers import check_columns, model_columns

pytestmark = pytest.mark.django_db(databases="__all__")

NOW = dt.datetime(2026, 1, 5, 14, 30, tzinfo=dt.UTC)


def _event(leader: TradingAccount, fill_id: str = "f1", **kw: object) -> LeaderEvent:
    fields: dict[str, object] = {"symbol": "ES", "side": "buy", "qty": 2, "p0": 0, "p1": 2,
                                 "received_at": NOW, **kw}
    return LeaderEvent.objects.create(account=leader, fill_id=fill_id, **fields)


def _fill(leader: TradingAccount, fill_id: str, side: str = "buy", qty: int = 2) -> LeaderEvent:
    """An unsaved event, as ingestion builds it from a fill."""
    return LeaderEvent(account=leader, fill_id=fill_id, symbol="ES", side=side, qty=qty,
                       received_at=NOW)


@pytest.fixture
def world() -> tuple[TradingAccount, TradingAccount, TradingAccount]:
    leader, f1, f2 = account("L"), account("F1"), account("F2")
    group("g", leader, {f1: "1", f2: "2.5"})
    return leader, f1, f2


# --- event_run --------------------------------------------------------------------------
def test_event_run_counts_the_run_marks_it_dispatched_and_freezes_its_followers(
        world, django_assert_num_queries):
    leader, f1, f2 = world
    event = _event(leader)
    Follower.objects.filter(account=f2).update(start_event_id=event.pk)  # joined after it

    ran = sql.event_run(event_id=event.pk, now=NOW)

    assert isinstance(ran, LeaderEvent)
    assert (ran.pk, ran.runs, ran.status, ran.dispatched_at) == (
        event.pk, 1, LeaderEvent.Status.DISPATCHED, NOW)
    assert ran.followers_total == 1
    assert not ran._state.adding
    seat = sql.event_run(event_id=event.pk, now=NOW + dt.timedelta(seconds=5))
    assert seat is not None
    assert (seat.runs, seat.dispatched_at, seat.followers_total) == (2, NOW, 1)
    assert [s.account_id for s in event_seats(seat)] == [f1.pk]  # the same followers
    with django_assert_num_queries(0):
        assert ran.account.name == leader.name  # loaded with it
    check_columns(sql.EVENT_RUN,
                  ["exits_only", "exits_only", event.pk, "received", "dispatched", NOW, event.pk],
                  [*model_columns(LeaderEvent),
                   *model_columns(TradingAccount, without=["credentials"])])


def test_event_run_leaves_a_done_event_done_and_finds_no_missing_event(world):
    leader, *_ = world
    event = _event(leader, status=LeaderEvent.Status.DONE)
    ran = sql.event_run(event_id=event.pk, now=NOW)
    assert ran is not None
    assert ran.status == LeaderEvent.Status.DONE
    assert sql.event_run(event_id=event.pk + 1000, now=NOW) is None


def test_event_run_freezes_each_followers_settings_as_text_the_engine_reads(world):
    leader, f1, f2 = world
    ran = sql.event_run(event_id=_event(leader).pk, now=NOW)
    assert ran is not None
    seats = {s.account_id: s for s in event_seats(ran)}
    assert seats[f2.pk].multiplier == Decimal("2.5")
    assert seats[f2.pk].enabled
    follower = Follower.objects.get(account=f1)
    assert seats[f1.pk] == Seat(follower.pk, f1.pk, Decimal(1), True, False,
                                rules.ExitMode.PROPORTIONAL, 0)  # every default, as built


def test_event_run_freezes_every_setting_in_its_own_place(world):
    """Each setting distinct from every other, so that two swapped places cannot pass."""
    leader, f1, _f2 = world
    follower = Follower.objects.get(account=f1)
    Follower.objects.filter(pk=follower.pk).update(
        multiplier=Decimal("1.5"), mode=Mode.EXITS_ONLY, fixed_qty=3, max_order_qty=4,
        max_position=5, max_symbols=6, window_start=dt.time(8, 30), window_end=dt.time(15),
        window_tz="America/Chicago", window_days="mon-wed", micro=Micro.TO_MICRO.value)
    CopyGroup.objects.filter(leader=leader).update(reverse=True,
                                                   exit_mode=rules.ExitMode.WITH_LEADER)
    SymbolMapping.objects.create(follower=follower, leader_symbol="NQ", follower_symbol="MNQ",
                                 ratio=Decimal(7))
    since, until = NOW - dt.timedelta(hours=1), NOW + dt.timedelta(hours=2)
    SessionLoss.objects.create(follower=follower, session_start=since, limit=Decimal(500),
                               realized=Decimal("-612.5"), locked_at=since, locked_until=until)

    ran = sql.event_run(event_id=_event(leader).pk, now=NOW)

    assert ran is not None
    seat = {s.account_id: s for s in event_seats(ran)}[f1.pk]
    window = rules.TradingWindow(dt.time(8, 30), dt.time(15), "America/Chicago",
                                 frozenset({0, 1, 2}))
    assert seat == Seat(
        follower.pk, f1.pk, Decimal("1.5"), True, True, rules.ExitMode.WITH_LEADER,
        follower.start_event_id, exits_only=True, fixed_qty=3,
        limits=rules.RiskLimits(4, 5, 6, window),
        symbols=SymbolMap((SymbolRule("NQ", "MNQ", Decimal(7)),), Micro.TO_MICRO),
        loss_lock=rules.LossLock(Decimal(500), Decimal("-612.5"), since, until,
                                 losslimit.session_reset().tz))
    assert len(ran.followers_frozen[0]) == len(sql.FrozenFollower._fields)  # an array


def test_a_frozen_follower_is_one_record_stored_as_an_array_of_its_fields(world):
    """The one stored format: an array in `FrozenFollower`'s order, found by
    `events_in_flight` at the account's place; an array of another length (a field added,
    or dropped) is refused rather than read into the wrong fields."""
    leader, f1, _f2 = world
    ran = sql.event_run(event_id=_event(leader).pk, now=NOW)
    assert ran is not None
    frozen = ran.followers_frozen
    frozen = json.loads(frozen) if isinstance(frozen, str) else frozen  # a raw row's jsonb
    raw = {r[1]: r for r in frozen}[f1.pk]
    record = sql.FrozenFollower._make(raw)
    assert (record.account_id, record.multiplier, record.exits_only) == (
        f1.pk, "1.0000", False)
    assert Seat.parse(raw).account_id == f1.pk
    assert sql.events_in_flight(account_id=f1.pk) == [ran.pk]
    with pytest.raises(TypeError):
        Seat.parse(raw[:-1])
    with pytest.raises(TypeError):
        Seat.parse([*raw, None])


def test_event_run_reads_only_the_locked_sessions_of_a_follower(world):
    """A session row is kept per follower and day; the lock probe must not read them all."""
    from django.db import connection, transaction

    leader, f1, _f2 = world
    follower = Follower.objects.get(account=f1)
    SessionLoss.objects.bulk_create(
        SessionLoss(follower=follower, session_start=NOW - dt.timedelta(days=day),
                    realized=Decimal(-10), read_at=NOW) for day in range(1, 401))
    SessionLoss.objects.create(follower=follower, session_start=NOW, limit=Decimal(100),
                               realized=Decimal(-150), locked_at=NOW - dt.timedelta(hours=1),
                               locked_until=NOW + dt.timedelta(hours=1))
    event = _event(leader)
    params = ["exits_only", "exits_only", event.pk, "received", "dispatched", NOW, event.pk]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("ANALYZE copier_sessionloss")
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql.EVENT_RUN.sql, params)
        plan = cursor.fetchone()[0]
        transaction.set_rollback(True)
    plan = json.loads(plan) if isinstance(plan, str) else plan

    def scans(node: dict) -> list[dict]:
        found = [node] if node.get("Relation Name") == "copier_sessionloss" else []
        return found + [n for child in node.get("Plans", []) for n in scans(child)]

    read = scans(plan[0]["Plan"])
    assert read
    assert sum(n.get("Rows Removed by Filter", 0) + n.get("Rows Removed by Index Recheck", 0)
               for n in read) < 5, read
    ran = sql.event_run(event_id=event.pk, now=NOW)
    assert ran is not None
    seats = {seat.account_id: seat for seat in event_seats(ran)}
    assert seats[f1.pk].loss_lock is not None  # the lock is still found


# --- events_in_flight -------------------------------------------------------------------
def test_events_in_flight_finds_started_events_with_nothing_decided_for_the_account(world):
    from copier.models import Decision

    leader, f1, f2 = world
    Follower.objects.filter(account=f1).update(max_position=987_654)
    started = _event(leader, "a")
    sql.event_run(event_id=started.pk, now=NOW)
    _event(leader, "b")  # never started: nothing of it can be at a broker
    done = _event(leader, "c")
    sql.event_run(event_id=done.pk, now=NOW)
    LeaderEvent.objects.filter(pk=done.pk).update(status=LeaderEvent.Status.DONE)
    other = account("F3")  # a follower of another leader only
    group("g2", account("L2"), {other: "1"})

    assert sql.events_in_flight(account_id=f1.pk) == [started.pk]
    assert sql.events_in_flight(account_id=other.pk) == []
    Decision.objects.create(event=started, account=f1, symbol="ES", reason="copied",
                            position_before=0, expected_before=0, expected_after=2,
                            position_after=2, created_at=NOW)
    assert sql.events_in_flight(account_id=f1.pk) == []
    assert sql.events_in_flight(account_id=f2.pk) == [started.pk]
    # a number in another place of a seat is no account id
    assert sql.events_in_flight(account_id=987_654) == []
    check_columns(sql.EVENTS_IN_FLIGHT, ["done", 1, f2.pk, f2.pk], ["id"])


# --- event_finish -----------------------------------------------------------------------
def test_event_finish_marks_done_only_when_every_follower_counted_has_a_decision(world):
    from copier.models import Decision

    leader, f1, f2 = world
    event = _event(leader, followers_total=2, status=LeaderEvent.Status.DISPATCHED)

    def decide(acct: TradingAccount) -> None:
        Decision.objects.create(event=event, account=acct, symbol="ES", reason="copied",
                                position_before=0, expected_before=0, expected_after=0,
                                position_after=0, created_at=NOW)

    decide(f1)
    sql.event_finish(event_id=event.pk, now=NOW)
    event.refresh_from_db()
    assert (event.status, event.done_at) == (LeaderEvent.Status.DISPATCHED, None)
    decide(f2)
    sql.event_finish(event_id=event.pk, now=NOW)
    event.refresh_from_db()
    assert (event.status, event.done_at) == (LeaderEvent.Status.DONE, NOW)
    sql.event_finish(event_id=event.pk, now=NOW + dt.timedelta(seconds=1))  # done stays done
    event.refresh_from_db()
    assert event.done_at == NOW
    check_columns(sql.EVENT_FINISH, ["done", NOW, event.pk, "done", event.pk], [])


# --- leader_fill_store ------------------------------------------------------------------
def test_leader_fill_store_numbers_the_fill_and_moves_the_leaders_position(world):
    leader, *_ = world
    Position.objects.create(account=leader, symbol="ES", qty=3, broker_qty=1,
                            broker_qty_since=NOW)

    first = sql.leader_fill_store(event=_fill(leader, "a", "sell", 2), moved=-2)

    assert isinstance(first, LeaderEvent)
    assert not first._state.adding
    assert (first.p0, first.p1, first.prev_event_id, first.runs) == (3, 1, None, 0)
    assert first.status == LeaderEvent.Status.RECEIVED
    stored = LeaderEvent.objects.get(pk=first.pk)
    assert [getattr(first, c) for c in model_columns(LeaderEvent)] == [
        getattr(stored, c) for c in model_columns(LeaderEvent)]
    position = Position.objects.get(account=leader, symbol="ES")
    assert (position.qty, position.last_event_id) == (1, first.pk)
    assert (position.broker_qty, position.broker_qty_since) == (None, None)  # settled

    second = sql.leader_fill_store(event=_fill(leader, "b"), moved=2)
    assert second is not None
    assert (second.p0, second.p1, second.prev_event_id) == (1, 3, first.pk)
    check_columns(sql.LEADER_FILL_STORE,
                  [leader.pk, "ES", leader.pk, "c", "ES", "buy", 1, False, "stream", None, NOW,
                   1, "received"],
                  model_columns(LeaderEvent))


def test_leader_fill_store_stores_nothing_for_a_duplicate_or_without_a_position_row(world):
    leader, *_ = world
    assert sql.leader_fill_store(event=_fill(leader, "a"), moved=2) is None  # no row to lock
    assert not LeaderEvent.objects.exists()
    Position.objects.create(account=leader, symbol="ES")
    assert sql.leader_fill_store(event=_fill(leader, "a"), moved=2) is not None
    assert sql.leader_fill_store(event=_fill(leader, "a"), moved=2) is None
    assert Position.objects.get(account=leader).qty == 2
    assert LeaderEvent.objects.count() == 1


# --- positions_lock ---------------------------------------------------------------------
def test_positions_lock_reads_position_account_quarantine_unknown_and_working_orders(world):
    _leader, f1, f2 = world
    TradingAccount.objects.filter(pk=f2.pk).update(copy_paused=True)
    for acct, qty in ((f2, -4), (f1, 3)):
        Position.objects.create(account=acct, symbol="ES", qty=qty, last_event_id=7)
    Position.objects.create(account=f1, symbol="NQ", qty=9)
    Quarantine.objects.create(account=f2, symbol="ES", reason=Quarantine.Reason.REJECTED,
                              created_at=NOW)
    Order.objects.create(client_order_id="c-1", account=f1, symbol="ES", side="buy", qty=1,
                         kind="entry", status=Order.Status.UNKNOWN, created_at=NOW)
    Order.objects.create(client_order_id="c-2", account=f2, symbol="ES", side="buy", qty=1,
                         kind="exit", status=Order.Status.ACCEPTED, created_at=NOW)
    Order.objects.create(client_order_id="c-3", account=f1, symbol="NQ", side="buy", qty=1,
                         kind="exit", status=Order.Status.ACCEPTED, created_at=NOW)

    rows = sql.positions_lock(account_ids=[f2.pk, f1.pk, f2.pk + 1000], symbol="ES")

    assert [(p.account_id, p.symbol, p.qty, p.last_event_id) for p in rows] == [
        (f1.pk, "ES", 3, 7), (f2.pk, "ES", -4, 7)]
    assert [(p.quarantined, p.unknown_orders, p.working_orders) for p in rows] == [
        (False, True, False), (True, False, True)]  # f1's working order is on another symbol
    assert [(p.account.pk, p.account.name, p.account.copy_paused) for p in rows] == [
        (f1.pk, "F1", False), (f2.pk, "F2", True)]
    assert not rows[0]._state.adding
    assert not rows[0].account._state.adding
    assert "credentials" in rows[0].account.get_deferred_fields()
    check_columns(sql.POSITIONS_LOCK, ["unknown", "accepted", [f1.pk], ["ES"]],
                  [*model_columns(Position),
                   *model_columns(TradingAccount, without=["credentials"]),
                   "quarantined", "unknown_orders", "working_orders"])


def test_positions_lock_pairs_locks_each_account_on_its_own_symbol(world):
    """A mapped follower's row is on its symbol (MNQ for the leader's NQ), another's on NQ:
    one statement, only the pairs asked for, in (account, symbol) order."""
    _leader, f1, f2 = world
    Position.objects.create(account=f1, symbol="NQ", qty=1)
    Position.objects.create(account=f1, symbol="MNQ", qty=10)
    Position.objects.create(account=f2, symbol="NQ", qty=-2)
    Position.objects.create(account=f2, symbol="MNQ", qty=5)

    rows = sql.positions_lock_pairs(pairs=[(f2.pk, "NQ"), (f1.pk, "MNQ")])

    assert [(p.account_id, p.symbol, p.qty) for p in rows] == [(f1.pk, "MNQ", 10),
                                                              (f2.pk, "NQ", -2)]


# --- positions_save ---------------------------------------------------------------------
def test_positions_save_writes_qty_and_watermark_of_each_row_in_one_statement(world):
    _leader, f1, f2 = world
    rows = [Position.objects.create(account=a, symbol="ES") for a in (f1, f2)]
    rows[0].qty, rows[0].last_event_id = 2, 11
    rows[1].qty, rows[1].last_event_id = -5, 12
    sql.positions_save(rows)
    sql.positions_save([])  # nothing to write: no statement
    assert sorted(Position.objects.values_list("qty", "last_event_id")) == [(-5, 12), (2, 11)]
    check_columns(sql.POSITIONS_SAVE, [rows[0].pk, 2, 11], [], rows={"values": 1})


# --- follower_fill_seen -----------------------------------------------------------------
def test_follower_fill_seen_records_a_fill_id_once(world):
    _leader, f1, _f2 = world
    assert sql.follower_fill_seen(account_id=f1.pk, fill_id="m-1", now=NOW)
    assert not sql.follower_fill_seen(account_id=f1.pk, fill_id="m-1", now=NOW)
    assert FollowerFill.objects.get().fill_id == "m-1"
    check_columns(sql.FOLLOWER_FILL_SEEN, [f1.pk, "m-2", NOW, "", "", "", 0], ["id"])


def test_follower_fills_claim_takes_the_traders_fills_of_an_order_once(world):
    """Fills counted as the trader's with the order's client id (or, untagged, the broker's
    order id), on that account and side: claimed for the order once."""
    _leader, f1, f2 = world
    for fill_id, ids, side, qty in [("a", ("cp1-1-0", "B1"), "sell", 1),
                                    ("b", ("", "B1"), "sell", 2),
                                    ("c", ("cp1-1-0", "B1"), "buy", 5),  # not its side
                                    ("d", ("cp9-9-9", "B9"), "sell", 7)]:
        assert sql.follower_fill_seen(account_id=f1.pk, fill_id=fill_id, now=NOW,
                                      traders=(*ids, side, qty))
    assert sql.follower_fill_seen(account_id=f2.pk, fill_id="a", now=NOW,
                                  traders=("cp1-1-0", "B1", "sell", 4))  # another account's
    assert sql.follower_fill_seen(account_id=f1.pk, fill_id="ours", now=NOW)
    claim = {"account_id": f1.pk, "side": "sell", "client_order_id": "cp1-1-0"}
    assert sql.follower_fills_claim(**claim, broker_order_id="B1") == 3
    assert sql.follower_fills_claim(**claim, broker_order_id="B1") == 0  # once
    assert sql.follower_fills_claim(account_id=f2.pk, side="sell", client_order_id="cp1-1-0",
                                    broker_order_id="") == 4
    check_columns(sql.FOLLOWER_FILLS_CLAIM, [f1.pk, "sell", "x", "", ""], ["qty"])


# --- advisory locks and the metrics' tallies -----------------------------------------------
def test_advisory_xact_lock_is_held_against_other_sessions(world):
    """Another session cannot take the lock while the transaction that took it is open
    (the test's own transaction: it ends, and the lock with it, after the test)."""
    import psycopg

    from core.rawsql import database_conninfo

    sql.advisory_xact_lock(lock_class=77, key=5)
    with psycopg.connect(database_conninfo(), autocommit=True) as other:
        assert other.execute("SELECT pg_try_advisory_lock(77, 5)").fetchone()[0] is False
        assert other.execute("SELECT pg_try_advisory_lock(77, 6)").fetchone()[0] is True
    check_columns(sql.ADVISORY_XACT_LOCK, [77, 6], ["pg_advisory_xact_lock"])


def test_advisory_xact_try_lock_says_whether_it_got_the_lock(world):
    import psycopg

    from core.rawsql import database_conninfo

    assert sql.advisory_xact_try_lock(key=9101) is True
    assert sql.advisory_xact_try_lock(key=9101) is True  # re-entrant in one session
    with psycopg.connect(database_conninfo(), autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(9103)")
        assert sql.advisory_xact_try_lock(key=9103) is False  # held elsewhere: no wait
    check_columns(sql.ADVISORY_XACT_TRY_LOCK, [9102], ["pg_try_advisory_xact_lock"])


def test_metric_tallies_add_adds_to_what_is_there_in_one_statement(world):
    from copier.models import MetricTally

    sql.metric_tallies_add({"decisions:copied": 2.0, "orders:filled": 1.0})
    sql.metric_tallies_add({"decisions:copied": 3.0})
    assert dict(MetricTally.objects.values_list("key", "value")) == {
        "decisions:copied": 5.0, "orders:filled": 1.0}


# --- decisions_insert, orders_insert ------------------------------------------------------
def test_decisions_insert_stores_every_field_as_bulk_create_would_and_sets_the_ids(world):
    from copier.domain.rules import Note, NoteKind, Reason
    from copier.models import Decision

    leader, f1, _f2 = world
    event = _event(leader)
    now = dt.datetime(2026, 1, 5, 14, 30, tzinfo=dt.UTC)
    decisions = [
        Decision(event=event, account=f1, symbol="NQ", reason=Reason.COPIED,
                 notes=[{"kind": "routed", "leader": "NQ", "symbol": "MNQ", "ratio": "10"}],
                 position_before=-1, expected_before=-1,
                 expected_after=2, planned_legs=[{"side": "buy", "qty": 3, "kind": "entry"}],
                 position_after=2, placed_legs=[], created_at=now, settled_at=now),
        Decision(event=_event(leader, "f2"), account=f1, symbol="ES", reason="risk_limit",
                 position_before=0, created_at=now),
    ]
    sql.decisions_insert(decisions=decisions)
    assert all(d.pk and not d._state.adding for d in decisions)
    stored = {d.pk: d for d in Decision.objects.filter(pk__in=[d.pk for d in decisions])}
    first, second = stored[decisions[0].pk], stored[decisions[1].pk]
    assert (first.reason, first.detail, first.expected_after, first.position_after) == (
        "copied", "leader NQ -> MNQ x10", 2, 2)
    assert first.note_list() == [Note.of(NoteKind.ROUTED, leader="NQ", symbol="MNQ", ratio="10")]
    assert first.planned_legs == [{"side": "buy", "qty": 3, "kind": "entry"}]
    assert (first.placed_legs, first.created_at, first.action_id) == ([], now, None)
    assert (second.reason, second.detail, second.expected_before, second.settled_at) == (
        "risk_limit", "", None, None)
    sql.decisions_insert(decisions=[])  # nothing to store: no statement
    check_columns(sql.DECISIONS_INSERT,
                  [[v] for v in _row_of(sql.DECISION_ROWS, Decision(
                      event=_event(leader, "f3"), account=f1, symbol="ES", reason="copied",
                      position_before=0, created_at=now))], ["id"])


def test_orders_insert_stores_every_field_and_the_decision_it_belongs_to(world):
    from copier.models import Decision

    leader, f1, _f2 = world
    now = dt.datetime(2026, 1, 5, 14, 30, tzinfo=dt.UTC)
    decision = Decision(event=_event(leader), account=f1, symbol="ES", reason="copied",
                        position_before=0, created_at=now)
    sql.decisions_insert(decisions=[decision])
    orders = [Order(client_order_id=f"cp1-{f1.pk}-{i}", account=f1, symbol="ES",
                    side="buy", qty=2, kind="entry", status=Order.Status.FILLED, filled_qty=2,
                    broker_order_id="b1", decision=decision, created_at=now,
                    submitted_at=now, acknowledged_at=now, completed_at=now)
              for i in range(2)]
    sql.orders_insert(orders=orders)
    stored = list(Order.objects.filter(decision=decision).order_by("id"))
    assert [o.pk for o in stored] == [o.pk for o in orders]
    assert [(o.client_order_id, o.status, o.filled_qty, o.acknowledged_at) for o in stored] == [
        (f"cp1-{f1.pk}-0", "filled", 2, now), (f"cp1-{f1.pk}-1", "filled", 2, now)]
    assert stored[0].failed_exit_id is None
    check_columns(sql.ORDERS_INSERT, [[v] for v in _row_of(sql.ORDER_ROWS, Order(
        client_order_id="cp9", account=f1, symbol="ES", side="sell", qty=1, kind="exit",
        status="rejected", created_at=now))], ["id"])


# --- guards_keep --------------------------------------------------------------------------
def test_guards_keep_writes_each_kept_field_of_each_row_and_nothing_else(world):
    from copier.models import AccountGuard

    _leader, f1, f2 = world
    rows = [AccountGuard.objects.create(account=a, starting_balance=Decimal(50000),
                                        drawdown=Decimal(2000), buffer=Decimal(150))
            for a in (f1, f2)]
    rows[0].high_water, rows[0].line, rows[0].state = Decimal("50250.5"), Decimal(48250), "locked"
    rows[0].findings, rows[0].switched = [{"trip": "drawdown", "values": {"x": "1"}}], [3, 1]
    rows[0].read_at, rows[0].standing = NOW, {"state": "locked"}
    rows[1].contracts, rows[1].equity_source, rows[1].read_error = 4, "sim prices", "late"
    rows[0].buffer = Decimal(999)  # a profile field: not the reading's to write
    sql.guards_keep(guards=rows)
    sql.guards_keep(guards=[])  # nothing to write: no statement
    first, second = (AccountGuard.objects.get(pk=r.pk) for r in rows)
    assert (first.high_water, first.line, first.state, first.read_at) == (
        Decimal("50250.50"), Decimal(48250), "locked", NOW)
    assert (first.findings, first.switched, first.standing) == (
        [{"trip": "drawdown", "values": {"x": "1"}}], [3, 1], {"state": "locked"})
    assert first.buffer == Decimal(150)
    assert (second.contracts, second.equity_source, second.read_error, second.standing) == (
        4, "sim prices", "late", None)
    assert all(AccountGuard._meta.get_field(n).concrete for n in sql.GUARD_KEPT)
    check_columns(sql.GUARDS_KEEP, [[v] for v in _row_of(sql.GUARD_ROWS, rows[1])], [])


def _row_of(rows: RowsInsert | RowsUpdate, obj: object) -> list[object]:
    """One instance's values in the statement's order, as `RowsInsert.run` sends them."""
    import json

    return [json.dumps(getattr(obj, f.attname)) if f.attname in rows.json
            else getattr(obj, f.attname) for f in rows.fields]


# --- all of them ------------------------------------------------------------------------
STATEMENTS = [s for s in vars(sql).values() if isinstance(s, Statement)]


def test_every_statement_of_the_copier_has_a_test_of_its_own():
    tested = {name.removeprefix("test_") for name in globals() if name.startswith("test_")}
    missing = [s.name for s in STATEMENTS
               if not any(name.startswith(s.name + "_") for name in tested)]
    assert not missing
    assert len(STATEMENTS) == 14


@pytest.mark.parametrize("statement", STATEMENTS, ids=lambda s: s.name)
def test_status_values_are_bound_never_spelled_in_the_text(statement: Statement):
    enums = [LeaderEvent.Status, LeaderEvent.Source, Order.Status, Quarantine.Reason]
    spelled = [v for enum in enums for v in enum.values if f"'{v}'" in statement.sql]
    assert not spelled
    assert "*" not in statement.sql.replace("count(*)", "")  # never SELECT/RETURNING *
