"""A trading day's state, written straight into the tables the dashboard reads: one group,
a follower for each colour the dashboard knows."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from accounts.models import ConnectionState, Position, TradingAccount
from copier.models import CopyGroup, Decision, FailedExit, Follower, LeaderEvent, Order, Quarantine
from tests.factories import T0


@dataclass
class World:
    group: CopyGroup
    leader: TradingAccount
    ok: Follower  # in sync: green
    quarantined: Follower  # -8 against +4: red
    paused: Follower  # red
    down: Follower  # disconnected for long: red
    exiting: Follower  # an exit queued: amber
    off: Follower  # switched off: grey
    event: LeaderEvent


def _acct(name: str, state: str = ConnectionState.CONNECTED, **kw: object) -> TradingAccount:
    return TradingAccount.objects.create(name=name, broker="sim", connection_state=state,
                                         connection_changed_at=T0, **kw)


def _follower(group: CopyGroup, acct: TradingAccount, multiplier: str, held: int,
              enabled: bool = True) -> Follower:
    f = Follower.objects.create(group=group, account=acct, multiplier=Decimal(multiplier),
                                enabled=enabled)
    if held:
        Position.objects.create(account=acct, symbol="MNQ", qty=held)
    return f


def world_build(now: dt.datetime = T0) -> World:
    leader = _acct("L1")
    group = CopyGroup.objects.create(name="desk", leader=leader)
    Position.objects.create(account=leader, symbol="MNQ", qty=2)
    ok = _follower(group, _acct("F1"), "1", 2)
    quarantined = _follower(group, _acct("F2"), "2", -8)
    paused = _follower(group, _acct("F3", copy_paused=True, pause_reason="MNQ: copier +2, "
                                    "broker +5", paused_since=now), "1", 5)
    down = _follower(group, _acct("F4", ConnectionState.DISCONNECTED), "1", 2)
    exiting = _follower(group, _acct("F5"), "1", 3)
    off = _follower(group, _acct("F6"), "1", 0, enabled=False)
    event = LeaderEvent.objects.create(
        account=leader, fill_id="x1", symbol="MNQ", side="buy", qty=2, p0=0, p1=2,
        received_at=now, status=LeaderEvent.Status.DONE, done_at=now)
    Quarantine.objects.create(account=quarantined.account, symbol="MNQ",
                              reason=Quarantine.Reason.OPPOSITE_SIDE, event=event,
                              detail="follower -8 against the leader's side", created_at=now)
    FailedExit.objects.create(account=exiting.account, symbol="MNQ", side="sell", qty=1,
                              event=event, first_failed_at=now, next_attempt_at=now,
                              updated_at=now, attempts=1, last_error="HTTP 503")
    decision = Decision.objects.create(
        event=event, account=ok.account, symbol="MNQ", reason="copied", position_before=0,
        expected_before=0, expected_after=2, position_after=2,
        planned_legs=[{"side": "buy", "qty": 2, "kind": "entry"}],
        placed_legs=[{"side": "buy", "qty": 2, "kind": "entry", "outcome": "placed"}],
        created_at=now + dt.timedelta(milliseconds=40))
    Order.objects.create(client_order_id=f"cp{event.pk}-{ok.account_id}-0", account=ok.account,
                         symbol="MNQ", side="buy", qty=2, kind="entry", status="filled",
                         filled_qty=2, decision=decision, created_at=now,
                         submitted_at=now, completed_at=now + dt.timedelta(milliseconds=87))
    Decision.objects.create(
        event=event, account=quarantined.account, symbol="MNQ", reason="opposite_side",
        position_before=-8, expected_before=0, expected_after=4, position_after=-8,
        created_at=now + dt.timedelta(milliseconds=41))
    return World(group, leader, ok, quarantined, paused, down, exiting, off, event)
