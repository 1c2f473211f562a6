"""Symbol mapping (copier.domain.symbol_map): routes, month codes, validation, and properties."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from copier.domain import rules
from copier.domain.symbol_map import (
    Micro,
    Route,
    SymbolMap,
    SymbolMapError,
    SymbolRule,
    expected_positions,
    heals,
    map_check,
    rule_check,
)
from core.contracts import contract_parse

D = Decimal
TO_MICRO = SymbolMap(micro=Micro.TO_MICRO)
TO_MINI = SymbolMap(micro=Micro.TO_MINI)


@pytest.mark.parametrize(("symbol", "root", "month"), [
    ("ES", "ES", ""), ("ESZ6", "ES", "Z6"), ("MNQH7", "MNQ", "H7"), ("MNQH27", "MNQ", "H27"),
    ("M2K", "M2K", ""), ("M2KZ6", "M2K", "Z6"), ("CLN6", "CL", "N6"), ("MNQ", "MNQ", ""),
    ("ESA6", "ESA6", ""), ("6EZ6", "6E", "Z6"), ("ES.Z6", "ES.Z6", ""), ("Z6", "Z6", ""),
])
def test_contract_parse_splits_root_and_month(symbol, root, month):
    assert contract_parse(symbol) == (contract_parse(symbol).__class__(root, month))


def test_explicit_rule_carries_the_month_and_rolls_with_the_leader():
    smap = SymbolMap((SymbolRule("ES", "MES", D(10)),))
    assert smap.route("ESZ6") == Route("MESZ6", D(10))
    assert smap.route("ESH7") == Route("MESH7", D(10))
    assert smap.route("ES") == Route("MES", D(10))
    assert smap.route("NQZ6") == Route("NQZ6")  # no rule: the leader's own symbol


def test_an_exact_contract_rule_comes_before_its_root_rule():
    smap = SymbolMap((SymbolRule("NQ", "MNQ", D(10)), SymbolRule("NQZ6", "MNQ", D(5))))
    assert smap.route("NQZ6") == Route("MNQZ6", D(5))
    assert smap.route("NQH7") == Route("MNQH7", D(10))


def test_automatic_conversion_both_ways_keeps_the_notional():
    assert TO_MICRO.route("ESZ6") == Route("MESZ6", D(10))
    assert TO_MICRO.route("RTY") == Route("M2K", D(10))
    assert TO_MINI.route("MGCQ6") == Route("GCQ6", D("0.1"))
    assert TO_MICRO.route("ZN") == Route("ZN")  # no pair: copied as it is


def test_an_explicit_rule_replaces_the_automatic_one():
    smap = SymbolMap((SymbolRule("ES", "ES", D(1)),), Micro.TO_MICRO)
    assert smap.route("ESZ6") == Route("ESZ6", D(1))
    assert smap.route("MESZ6") == Route("MESZ6")  # ES no longer lands on MES: copied
    assert smap.route("NQZ6") == Route("MNQZ6", D(10))


def test_a_leader_symbol_whose_own_symbol_is_taken_by_the_mapping_is_blocked():
    """To micro: the leader's ES is traded as MES, so the leader's own MES cannot be
    copied onto that one position too (it would be two leader positions at once)."""
    route = TO_MICRO.route("MESZ6")
    assert route.blocked
    assert "ES" in route.blocked
    assert SymbolMap((SymbolRule("NQ", "MNQ", D(10)),)).route("MNQ").blocked


@pytest.mark.parametrize(("leader", "follower", "ratio", "words"), [
    ("ES", "MESZ6", None, "give its root (MES)"),
    ("ESZ6", "MESH7", None, "give its root"),
    ("E S", "MES", None, "leader symbol"),
    ("ES", "MES", D(0), "greater than 0"),
    ("ES", "MES", D(-1), "greater than 0"),
    ("ES", "MES", D(101), "at most 100"),
    ("ES", "M.ES", None, "follower symbol"),
])
def test_a_rule_that_could_trade_the_wrong_thing_is_refused(leader, follower, ratio, words):
    with pytest.raises(SymbolMapError, match=words.replace("(", r"\(").replace(")", r"\)")):
        rule_check(leader, follower, ratio)


def test_a_rule_without_ratio_gets_the_notional_of_a_mini_micro_pair():
    assert rule_check("NQ", "MNQ", None).ratio == 10
    assert rule_check("MNQ", "NQ", None).ratio == D("0.1")
    assert rule_check("NQ", "ES", None).ratio == 1
    assert rule_check("NQ", "MNQ", D(2)).ratio == 2


def test_two_rules_for_one_leader_symbol_or_two_roots_on_one_follower_root_are_refused():
    with pytest.raises(SymbolMapError, match="two rules for the leader's NQ"):
        map_check([SymbolRule("NQ", "MNQ", D(10)), SymbolRule("NQ", "NQ", D(1))])
    with pytest.raises(SymbolMapError, match="ES and NQ would both be traded as MNQ"):
        map_check([SymbolRule("NQ", "MNQ", D(10)), SymbolRule("ES", "MNQ", D(1))])
    with pytest.raises(SymbolMapError, match="both be traded as MES"):
        map_check([SymbolRule("NQ", "MES", D(1))], Micro.TO_MICRO)
    map_check([SymbolRule("NQ", "MNQ", D(10)), SymbolRule("NQZ6", "MNQ", D(5))])  # one root


def test_frozen_form_round_trips():
    smap = SymbolMap((SymbolRule("NQ", "MNQ", D(10)), SymbolRule("ESZ6", "MES", D("2.5"))),
                     Micro.TO_MINI)
    assert SymbolMap.from_json(smap.to_json()) == smap
    assert SymbolMap.from_json(None) == SymbolMap()


def test_heal_check_compares_the_follower_symbol_with_the_mapped_leader_symbol():
    smap = SymbolMap((SymbolRule("NQ", "MNQ", D(10)),))
    assert heals({"MNQZ6": 20}, {"NQZ6": 2}, D(1), False, smap)
    assert not heals({"NQZ6": 2}, {"NQZ6": 2}, D(1), False, smap)
    assert not heals({"MNQZ6": 20, "ESZ6": 1}, {"NQZ6": 2}, D(1), False, smap)
    assert heals({"MNQZ6": -10}, {"NQZ6": 2}, D("0.5"), True, smap)


def test_the_ratio_scales_a_fixed_quantity_and_comes_before_the_max_position():
    """A fixed 1 ES traded as MES is 10 MES (the notional kept); the cap is in MES."""
    assert rules.expected_position(3, D(1), False, fixed_qty=1, ratio=D(10)) == 10
    assert rules.expected_position(-1, D(1), True, fixed_qty=2, ratio=D(10)) == 20
    assert rules.expected_position(0, D(1), False, fixed_qty=1, ratio=D(10)) == 0
    assert rules.expected_position(2, D(1), False, fixed_qty=1, ratio=D(10),
                                   max_position=4) == 4
    assert rules.expected_position(2, D(1), False, ratio=D(10), max_position=15) == 15
    # micro to mini: a fixed 5 MES is half an ES, rounded away from zero; 4 MES make none
    assert rules.expected_position(1, D(1), False, fixed_qty=5, ratio=D("0.1")) == 1
    assert rules.expected_position(1, D(1), False, fixed_qty=4, ratio=D("0.1")) == 0
    assert expected_positions({"ESZ6": 3, "NQ": 1}, D(1), False, TO_MICRO, fixed_qty=1,
                              max_position=8) == {"MESZ6": 8, "MNQ": 8}
    assert heals({"MESZ6": 10}, {"ESZ6": 4}, D(1), False, TO_MICRO, fixed_qty=1)


def test_facts_carry_the_ratio_into_every_expected_position_of_the_rules():
    facts = rules.FollowerFacts(position=0, multiplier=D(1), fixed_qty=1, ratio=D(10),
                                limits=rules.RiskLimits(max_position=6))
    verdict = rules.decide(rules.LeaderMove(0, 2), facts)
    assert (verdict.reason, verdict.e1) == (rules.Reason.RISK_LIMIT, 6)
    assert sum(leg.qty for leg in verdict.legs) == 6


# --- properties ------------------------------------------------------------------------------

positions = st.integers(min_value=-500, max_value=500)
multipliers = st.decimals(min_value=D("0.01"), max_value=D(10), places=2)
ratios = st.sampled_from([D(10), D("0.1"), D(1), D(2), D("2.5"), D("0.5")])
reverse = st.booleans()


def scaled_multiplier(multiplier: D, route: Route) -> D:
    """The multiplier E(P) uses on the follower's symbol: the notional's ratio applied."""
    return multiplier * route.ratio


@given(positions, multipliers, ratios, reverse)
def test_mapping_never_changes_the_sign_logic(p, m, r, rev):
    e = rules.expected_position(p, scaled_multiplier(m, Route("X", r)), rev)
    assert rules.sign(e) in (0, (-1 if rev else 1) * rules.sign(p))


@given(positions, multipliers, ratios, reverse)
def test_notional_kept_within_rounding(p, m, r, rev):
    """E for a mapped follower is ratio x E unmapped, give or take the two roundings."""
    mapped = rules.expected_position(p, m * r, rev)
    unmapped = rules.expected_position(p, m, rev)
    assert abs(mapped - r * unmapped) <= (r + 1) / 2


@given(positions, positions, positions, multipliers, ratios, reverse, st.booleans())
def test_exits_never_exceed_what_the_follower_holds_on_its_own_symbol(p0, p1, c, m, r, rev,
                                                                       close_only):
    if p0 == p1:
        return
    facts = rules.FollowerFacts(position=c, multiplier=scaled_multiplier(m, Route("MNQ", r)),
                                reverse=rev, close_only=close_only)
    verdict = rules.decide(rules.LeaderMove(p0, p1), facts)
    exits = sum(leg.qty for leg in verdict.legs if leg.kind == rules.LegKind.EXIT)
    assert exits <= abs(c)
    for leg in verdict.legs:
        if leg.kind == rules.LegKind.EXIT:
            assert rules.sign(leg.signed) == -rules.sign(c)


symbols = st.sampled_from(["ESZ6", "ESH7", "MESZ6", "NQ", "MNQ", "CLN6", "MCLN6", "ZN", "GC"])


@given(st.dictionaries(symbols, positions), multipliers, reverse,
       st.sampled_from(list(Micro)))
def test_an_unmapped_heal_check_is_the_leaders_own_and_routes_never_collide(leader, m, rev, micro):
    follower = {s: rules.expected_position(p, m, rev) for s, p in leader.items()}
    assert heals(follower, leader, m, rev)
    smap = SymbolMap(micro=micro)
    routed = [smap.route(s).symbol for s in leader if not smap.route(s).blocked]
    assert len(routed) == len(set(routed))  # one follower symbol per leader symbol
    assert heals(expected_positions(leader, m, rev, smap), leader, m, rev, smap)
