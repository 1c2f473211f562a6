"""The words of a trade every floor uses: a side, a quantity as a position move, and how
large a venue's own numbers may be.

Standard library only: the copy rules (copier.rules) build on it and stay free of Django.
"""

from __future__ import annotations

from enum import StrEnum

# A venue's own numbers (fill and trade ids, the fills cursor) are kept in 64-bit columns.
MAX_VENUE_ID = 2**63 - 1


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


def signed(side: Side | str, qty: int) -> int:
    """A quantity as a position move: + buys, - sells. The one helper for it, the sim's too."""
    return qty if side == Side.BUY else -qty
