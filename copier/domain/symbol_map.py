"""Symbol mapping per follower: which symbol a follower trades for a leader's, at what ratio.

Pure functions, no Django: the engine, the Failed Exit Queue, the Sync Divergence
Guard's heal check and the console all ask this module the same question (for the
leader's symbol S, which follower symbol S' and which ratio), so that they can never
disagree about where a follower's position lives.

A symbol is a **root** (`ES`) or a **contract** (`ESZ6`: a root, a month letter and a
year; core.contracts splits them). A mapping rule names a leader root
(or one exact contract) and a follower root; the month of the leader's contract
carries over, so the follower's contract rolls when the leader's does (`ESZ6 -> MESZ6`,
then `ESH7 -> MESH7`).

The ratio keeps the notional: one ES is ten MES, so ES -> MES has ratio 10 and
MES -> ES ratio 0.1. It scales the multiplier: E(P) = d * sign(P) * round(|P| * m * r),
rounded half away from zero like every expected position (and a fixed quantity q the
same way: round(q * r), so a fixed 1 ES follower mapped to MES holds 10 MES; a max
position caps the result in the follower's own contracts). So a mapped follower is
judged by exactly the same rules as an unmapped one with multiplier m * r, and the
guards (exits capped, close-only, the side) hold unchanged, on the follower's own
symbol. Micro to mini rounds like any multiplier below 1: 1-4 MES make 0 ES, 5-14 make
1 ES (5 MES is half an ES, and half rounds away from zero).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from core.contracts import MONTH_CODES, Contract, contract_parse, is_contract, is_root

# Mini -> micro of the same underlying, ten micros to a mini (CME's and COMEX/NYMEX's).
MICRO_OF: dict[str, str] = {
    "ES": "MES", "NQ": "MNQ", "YM": "MYM", "RTY": "M2K", "CL": "MCL", "GC": "MGC",
}
MINI_OF: dict[str, str] = {micro: mini for mini, micro in MICRO_OF.items()}
MICRO_RATIO = Decimal(10)
# A ratio beyond this is a typo, not a conversion (the multiplier's own limit).
MAX_RATIO = Decimal(100)


class SymbolMapError(ValueError):
    """A mapping that cannot be used; the message says which part and why."""


class Micro(StrEnum):
    """A follower's automatic mini/micro conversion (MICRO_OF), beside its explicit rules."""

    OFF = "off"
    TO_MICRO = "to_micro"  # the leader's ES is traded as 10 MES
    TO_MINI = "to_mini"  # the leader's 10 MES are traded as 1 ES


@dataclass(frozen=True, slots=True)
class SymbolRule:
    """One explicit rule: a leader root or contract -> a follower root (or contract), ratio."""

    leader: str
    follower: str
    ratio: Decimal = Decimal(1)


@dataclass(frozen=True, slots=True)
class Route:
    """Where a leader symbol goes on one follower: its symbol and the ratio to apply.

    `blocked`: why the leader symbol is not copied at all (its own symbol is where the
    mapping puts another leader root: both on one position would make both wrong)."""

    symbol: str
    ratio: Decimal = Decimal(1)
    blocked: str = ""


def default_ratio(leader_root: str, follower_root: str) -> Decimal:
    """The ratio a rule gets when none is given: the notional's, for a mini/micro pair of
    one underlying (NQ -> MNQ is 10); 1 for anything else."""
    if MICRO_OF.get(leader_root) == follower_root:
        return MICRO_RATIO
    if MINI_OF.get(leader_root) == follower_root:
        return 1 / MICRO_RATIO
    return Decimal(1)


def ratio_parse(raw: object, *, where: str = "ratio") -> Decimal:
    if isinstance(raw, bool) or not isinstance(raw, str | int | float | Decimal):
        raise SymbolMapError(f"{where} must be a number, got {raw!r}")
    try:
        ratio = Decimal(str(raw))
    except InvalidOperation:
        raise SymbolMapError(f"{where} must be a number, got {raw!r}") from None
    if not ratio.is_finite() or ratio <= 0 or ratio > MAX_RATIO:
        raise SymbolMapError(f"{where} must be greater than 0 and at most {MAX_RATIO}, "
                             f"got {raw!r}")
    return ratio


def rule_check(leader: str, follower: str, ratio: Decimal | None) -> SymbolRule:
    """One rule as a person typed it (already upper-cased): a rule that could trade the
    wrong contract is refused here, never discovered at a fill.

    The follower side is always a root: the month is the leader's, so the follower
    rolls with it (a rule to one fixed contract would keep trading the old month after
    the leader rolled). The leader side is a root (every month) or one contract (that
    month only, e.g. another ratio for it).
    """
    if not (is_root(leader) or is_contract(leader)):
        raise SymbolMapError(f"leader symbol {leader!r}: use a root (ES, NQ, M2K) or a "
                             f"contract (root, month letter {MONTH_CODES}, year: ESZ6)")
    if is_contract(follower):
        raise SymbolMapError(
            f"follower symbol {follower} is a contract: give its root "
            f"({contract_parse(follower).root}); the follower trades the leader's month and "
            f"rolls with it")
    if not is_root(follower):
        raise SymbolMapError(f"follower symbol {follower!r}: use a root (MES, MNQ, M2K)")
    if ratio is not None:
        ratio = ratio_parse(ratio)
    else:
        ratio = default_ratio(contract_parse(leader).root, contract_parse(follower).root)
    return SymbolRule(leader, follower, ratio)


def map_check(rules: Iterable[SymbolRule], micro: Micro = Micro.OFF) -> None:
    """The rules of one follower together: one rule per leader symbol, and no follower
    root fed by two leader roots (its position would be two leader positions at once,
    and neither's expected position would ever be right)."""
    seen: set[str] = set()
    rules = tuple(rules)
    for rule in rules:
        if rule.leader in seen:
            raise SymbolMapError(f"two rules for the leader's {rule.leader}: keep one")
        seen.add(rule.leader)
    feeders: dict[str, set[str]] = {}
    for source, target in SymbolMap(rules, micro).root_targets():
        feeders.setdefault(target, set()).add(source)
    for target, sources in sorted(feeders.items()):
        if len(sources) > 1:
            raise SymbolMapError(f"{' and '.join(sorted(sources))} would both be traded as "
                                 f"{target}: a follower symbol follows one leader symbol")


@dataclass(frozen=True, slots=True)
class SymbolMap:
    """A follower's mapping: explicit rules first (an exact contract before its root),
    then the automatic mini/micro conversion, else the leader's own symbol at ratio 1."""

    rules: tuple[SymbolRule, ...] = ()
    micro: Micro = Micro.OFF

    @property
    def identity(self) -> bool:
        return not self.rules and self.micro == Micro.OFF

    def route(self, leader_symbol: str) -> Route:
        contract = contract_parse(leader_symbol)
        by_leader = {rule.leader: rule for rule in self.rules}
        rule = by_leader.get(leader_symbol)
        if rule is not None:  # an exact symbol (or a root traded as a root)
            return Route(_target(rule.follower, contract), rule.ratio)
        rule = by_leader.get(contract.root) if contract.month else None
        if rule is not None:
            return Route(contract.with_root(rule.follower), rule.ratio)
        if self.micro == Micro.TO_MICRO and contract.root in MICRO_OF:
            return Route(contract.with_root(MICRO_OF[contract.root]), MICRO_RATIO)
        if self.micro == Micro.TO_MINI and contract.root in MINI_OF:
            return Route(contract.with_root(MINI_OF[contract.root]), 1 / MICRO_RATIO)
        feeders = sorted({source for source, target in self.root_targets()
                          if target == contract.root and source != contract.root})
        if feeders:
            return Route(leader_symbol, blocked=(
                f"the mapping trades the leader's {', '.join(feeders)} as {contract.root} "
                f"here: the leader's own {leader_symbol} is not copied"))
        return Route(leader_symbol)

    def root_targets(self) -> list[tuple[str, str]]:
        """(leader root, follower root) of every rule and automatic conversion in force
        (an explicit rule of a root replaces its automatic conversion)."""
        pairs = [(contract_parse(r.leader).root, r.follower) for r in self.rules]
        explicit = {contract_parse(r.leader).root for r in self.rules if is_root(r.leader)}
        auto = MICRO_OF if self.micro == Micro.TO_MICRO else (
            MINI_OF if self.micro == Micro.TO_MINI else {})
        pairs += [(src, dst) for src, dst in auto.items() if src not in explicit]
        return pairs

    def follower_symbol(self, leader_symbol: str) -> str:
        return self.route(leader_symbol).symbol

    def to_json(self) -> dict[str, Any]:
        return {"micro": self.micro.value,
                "rules": [[r.leader, r.follower, str(r.ratio)] for r in self.rules]}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | None) -> SymbolMap:
        """The frozen form (`to_json`, and the event's frozen seats); None: no mapping (an
        event frozen before mappings existed copied symbol for symbol)."""
        if not raw:
            return cls()
        return cls(tuple(SymbolRule(str(leader), str(follower), _frozen_ratio(leader, follower,
                                                                              ratio))
                         for leader, follower, ratio in raw.get("rules") or []),
                   Micro(raw.get("micro") or Micro.OFF))


def _frozen_ratio(leader: str, follower: str, ratio: object) -> Decimal:
    """A rule frozen without a ratio (none given) has its pair's default (`default_ratio`)."""
    if ratio is None:
        return default_ratio(contract_parse(leader).root, contract_parse(follower).root)
    return Decimal(str(ratio))


NO_MAPPING = SymbolMap()  # the leader's own symbol at ratio 1 (a shared immutable default)


def _target(follower: str, contract: Contract) -> str:
    """A rule's follower side (a root) for a leader contract: it takes the leader's month."""
    return contract.with_root(follower)


def expected_positions(
    leader: Mapping[str, int], multiplier: Decimal, reverse: bool, smap: SymbolMap, *,
    fixed_qty: int | None = None, max_position: int | None = None,
) -> dict[str, int]:
    """E(P) of every leader symbol, on the follower's symbols.

    The ratio scales the multiplier or, for a follower with a fixed quantity, that
    quantity; a max position caps the result in the follower's own contracts
    (`rules.expected_position`). A leader symbol the mapping blocks (see
    `SymbolMap.route`) expects nothing.
    """
    from copier.domain.rules import expected_position  # rules stays free of this module

    out: dict[str, int] = {}
    for symbol, p in leader.items():
        route = smap.route(symbol)
        if route.blocked:  # not copied: the follower is expected to hold nothing for it
            continue
        out[route.symbol] = out.get(route.symbol, 0) + expected_position(
            p, multiplier, reverse, fixed_qty=fixed_qty, max_position=max_position,
            ratio=route.ratio)
    return out


def heals(follower: Mapping[str, int], leader: Mapping[str, int], multiplier: Decimal,
          reverse: bool, smap: SymbolMap = NO_MAPPING, *, fixed_qty: int | None = None,
          max_position: int | None = None) -> bool:
    """The Sync Divergence Guard's heal check on the follower's symbols: every symbol it
    holds or should hold sits at E(P) for the leader's position on the mapped symbol.

    The one heal check (docs/rules.md's paused follower): without a mapping, each symbol
    against the leader's own."""
    expected = expected_positions(leader, multiplier, reverse, smap, fixed_qty=fixed_qty,
                                  max_position=max_position)
    return all(follower.get(s, 0) == expected.get(s, 0) for s in set(follower) | set(expected))
