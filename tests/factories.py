"""Small builders for tests: accounts, groups and a connected sim world."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from accounts.models import Position, TradingAccount
from brokers.models import SimPosition
from brokers.sim import SimBroker
from copier.models import CopyGroup, Follower
from copier.services.stream_events import broker_events_pump

T0 = dt.datetime(2026, 3, 2, 15, 0, tzinfo=dt.UTC)  # where a controlled clock starts


def account(name: str, **kw: object) -> TradingAccount:
    return TradingAccount.objects.create(name=name, broker="sim", **kw)


def group(
    name: str, leader: TradingAccount, followers: dict[TradingAccount, str], **kw: object
) -> CopyGroup:
    g = CopyGroup.objects.create(name=name, leader=leader, **kw)
    for acct, multiplier in followers.items():
        Follower.objects.create(group=g, account=acct, multiplier=Decimal(multiplier))
    return g


def connect(*accounts: TradingAccount) -> None:
    for acct in accounts:
        acct.refresh_from_db()
        broker_events_pump(account=acct)
        acct.refresh_from_db()


def leader_fill(acct: TradingAccount, symbol: str, side: str, qty: int, fill_id: str | None = None
                ) -> str:
    """A fill at the sim broker on `acct`, seen by the copier's listener."""
    fid = SimBroker(acct).execute_fill(symbol, side, qty, fill_id)  # type: ignore[arg-type]
    acct.refresh_from_db()
    broker_events_pump(account=acct)
    return fid


def broker_position(acct: TradingAccount, symbol: str) -> int:
    row = SimPosition.objects.using("broker").filter(book__account=acct, symbol=symbol).first()
    return row.qty if row else 0


def copier_position(acct: TradingAccount, symbol: str) -> int:
    row = Position.objects.filter(account=acct, symbol=symbol).first()
    return row.qty if row else 0
