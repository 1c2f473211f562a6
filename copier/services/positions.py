"""The copier's confirmed positions, and the row lock that serialises (account, symbol).

Lock order, everywhere: Position rows (by account, then symbol), then the
open-symbols lock of accounts (by account: `open_symbols_count`), then the
TradingAccount row, then FailedExit rows. Keeping one order is what keeps
concurrent events, retries and reconnects free of deadlocks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from accounts.models import Position
from copier import sql

# The class of the transaction-level advisory locks that serialise, per account, the
# copies that count its open symbols (max open symbols): an arbitrary constant.
OPEN_SYMBOLS_LOCK_CLASS = 0x5359


def positions_ensure(account_ids: Iterable[int], symbol: str) -> None:
    """Create missing (account, symbol) rows in one statement, so that they can be locked."""
    Position.objects.bulk_create(
        [Position(account_id=a, symbol=symbol) for a in account_ids], ignore_conflicts=True
    )


def positions_lock(account_ids: Sequence[int], symbol: str) -> dict[int, Position]:
    """`positions_lock_pairs` for accounts that all trade `symbol`."""
    return positions_lock_pairs([(a, symbol) for a in account_ids])


def positions_lock_pairs(pairs: Sequence[tuple[int, str]]) -> dict[int, Position]:
    """Lock one (account, symbol) row per account, each on its own symbol (a mapped
    follower's), in one statement in (account, symbol) order; keyed by account. Missing
    rows are created first.

    The facts evaluation needs are read in the same query: the account row comes fresh
    (pause and connection flags), `quarantined` tells whether an active quarantine
    covers the symbol and `unknown_orders` whether an order of (account, symbol) has an
    outcome the copier does not know.
    """
    found = _pairs_locked(pairs)
    if len(found) < len({a for a, _s in pairs}):  # first event on a symbol for some of them
        for symbol in sorted({s for _a, s in pairs}):
            positions_ensure([a for a, s in pairs if s == symbol], symbol)
        found = _pairs_locked(pairs)
    return found


def _pairs_locked(pairs: Sequence[tuple[int, str]]) -> dict[int, Position]:
    return {p.account_id: p for p in sql.positions_lock_pairs(pairs=pairs)}


def position_lock(account_id: int, symbol: str) -> Position:
    return positions_lock([account_id], symbol)[account_id]


def positions_of(account_id: int) -> dict[str, int]:
    return dict(
        Position.objects.filter(account_id=account_id).exclude(qty=0).values_list("symbol", "qty")
    )


def positions_lock_all(account_id: int, symbols: Iterable[str]) -> dict[str, Position]:
    """Lock every position row of an account (creating the given symbols), in symbol order."""
    for symbol in sorted(set(symbols)):
        positions_ensure([account_id], symbol)
    rows = (
        Position.objects.select_for_update()
        .filter(account_id=account_id)
        .order_by("symbol")
    )
    return {row.symbol: row for row in rows}


def positions_save(rows: Sequence[Position]) -> None:
    """Write qty and watermark of many locked rows in one statement (`sql.POSITIONS_SAVE`)."""
    sql.positions_save(rows)


def open_symbols_count(symbols: Mapping[int, str]) -> dict[int, int]:
    """How many symbols other than its own `symbols[account]` each account holds, counted
    under a per-account advisory lock held until the transaction ends. The symbol is the
    follower's own (a mapped follower's MNQZ6 for the leader's NQZ6): its positions are
    on its symbols, so the one being decided is the one not counted.

    Two events on different symbols copied at once to one follower would otherwise both
    see the other symbol flat and both open one: the lock makes the second wait for the
    first's commit, then count what it left. Taken after the Position rows (by account,
    in one order for every batch) and never around anything that waits on a Position
    row, so it cannot close a deadlock cycle. Rows of other symbols are read, not locked:
    a row lock there would be taken in another order than a batch on that symbol takes it.
    A manual trade on another symbol is not serialised with it: the copier never blocks
    manual trading, and the next entry counts it.
    """
    ids = sorted(symbols)
    if not ids:
        return {}
    for account_id in ids:
        sql.advisory_xact_lock(lock_class=OPEN_SYMBOLS_LOCK_CLASS, key=account_id)
    counts = dict.fromkeys(ids, 0)
    for account_id, symbol in (Position.objects.filter(account_id__in=ids).exclude(qty=0)
                               .values_list("account_id", "symbol")):
        if symbol != symbols[account_id]:
            counts[account_id] += 1
    return counts
