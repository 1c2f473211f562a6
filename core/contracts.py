"""A symbol's parts and a contract's value: what the venues, the sim and the mapping share.

A symbol is a **root** (`ES`, `MNQ`, as the sim and the scenarios trade) or a
**contract**: a root, a month letter (F G H J K M N Q U V X Z) and a one or two digit
year (`ESZ6`, `MNQH27`), as the venues name them. How a follower's symbol follows a
leader's is the copier's (copier.domain.symbol_map); what a symbol is, and what a point of it
is worth, is known here, below the brokers that price fills with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

# Money per point of price per contract, by root (CME/CBOT/NYMEX/COMEX contract specs): what
# the sim values a realised P&L with (`brokers.sim`), and what the local venues list their
# contracts with. A root not here has no known value: its P&L is never guessed.
POINT_VALUES: dict[str, Decimal] = {
    "ES": Decimal(50), "MES": Decimal(5), "NQ": Decimal(20), "MNQ": Decimal(2),
    "YM": Decimal(5), "MYM": Decimal("0.5"), "RTY": Decimal(50), "M2K": Decimal(5),
    "CL": Decimal(1000), "MCL": Decimal(100), "GC": Decimal(100), "MGC": Decimal(10),
}

MONTH_CODES = "FGHJKMNQUVXZ"
_ROOT = re.compile(r"^(?=[A-Z0-9]*[A-Z])[A-Z0-9]{1,10}$")
# The root is matched lazily and the year anchored at the end, so MNQH7 is MNQ + H + 7
# (not MN + Q...), and M2KZ6 is M2K + Z + 6.
_CONTRACT = re.compile(r"^(?P<root>[A-Z0-9]+?)(?P<month>[" + MONTH_CODES + r"])(?P<year>\d{1,2})$")


@dataclass(frozen=True, slots=True)
class Contract:
    """A symbol split into its root and its month (`month` empty for a bare root)."""

    root: str
    month: str = ""  # month letter + year, e.g. "Z6", "H27"

    def with_root(self, root: str) -> str:
        return root + self.month


def contract_parse(symbol: str) -> Contract:
    """ESZ6 -> (ES, Z6); ES -> (ES, ''). A symbol that is neither (a separator, a stock
    ticker with dots) is its own root: only an explicit rule naming it exactly maps it."""
    m = _CONTRACT.match(symbol)
    if m and _ROOT.match(m["root"]):
        return Contract(m["root"], m["month"] + m["year"])
    return Contract(symbol)


def point_value(symbol: str) -> Decimal | None:
    """Money per point per contract of a root or contract (`MNQZ6` -> 2); None: unknown."""
    return POINT_VALUES.get(contract_parse(symbol).root)


def is_root(symbol: str) -> bool:
    """A bare root (letters and digits, at least one letter, no month code)."""
    return bool(_ROOT.match(symbol)) and contract_parse(symbol).month == ""


def is_contract(symbol: str) -> bool:
    return contract_parse(symbol).month != ""
