"""Scenario files for `copier_replay`: parsed and validated in full before anything is written.

Bad input gets one line naming where it is (`step 3 (fill): ...`), and the
replay does nothing at all: no half-built database to clean up.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError

from accounts.symbols import normalise_symbol
from copier.domain import guard, rules, symbol_map
from core.trading import MAX_VENUE_ID, Side


class ScenarioError(ValueError):
    """A scenario that cannot run; the message names the step or the section."""


OPS = ("fill", "outage", "restore", "fail_orders", "reject_orders", "advance", "release",
       "enable",
       # beyond docs/rules.md#scenario-replay's list, for our own scenarios and the property model
       # (docs/scenarios.md): crashes and settings changed between a crash and its re-run
       "crash", "recover", "reverse", "join", "leave",
       # follower and group modes, and the kill switch's flatten (docs/scenarios.md)
       "mode", "group_mode", "flatten",
       # the market moves (a price for the daily loss limit's P&L, docs/scenarios.md)
       "price",
       # orders the broker acknowledges and fills later, in parts, or cancels (docs/rules.md#input)
       "hold_orders", "fill_held", "cancel_held")
# The ops that act on a follower's held orders (`hold_orders` arms them).
HELD_OPS = ("fill_held", "cancel_held")

MODES = ("active", "exits_only", "off")


@dataclass(frozen=True)
class FollowerSpec:
    account: str
    multiplier: Decimal
    enabled: bool
    # sizing and risk limits (docs/scenarios.md "Followers"): None is "not used"/"no limit"
    fixed_qty: int | None = None
    max_order_qty: int | None = None
    max_position: int | None = None
    max_symbols: int | None = None
    window: rules.TradingWindow | None = None
    symbols: symbol_map.SymbolMap = symbol_map.NO_MAPPING  # "symbols" and "micro"
    daily_loss_limit: Decimal | None = None
    daily_loss_action: str = "lock"
    guard: guard.GuardRules | None = None  # its account guard (docs/scenarios.md)
    guard_line: Decimal | None = None  # a person's "my line is now ..."

    def risk_fields(self) -> dict[str, Any]:
        """The Follower model's fields for these settings."""
        w = self.window
        return {"daily_loss_limit": self.daily_loss_limit,
                "daily_loss_action": self.daily_loss_action,
                "fixed_qty": self.fixed_qty, "max_order_qty": self.max_order_qty,
                "max_position": self.max_position, "max_symbols": self.max_symbols,
                "window_start": w.start if w else None, "window_end": w.end if w else None,
                "window_tz": w.tz if w else "", "window_days": rules.days_text(w.days) if w
                else ""}


@dataclass(frozen=True)
class GroupSpec:
    name: str
    leader: str
    reverse: bool
    exit_mode: str
    followers: tuple[FollowerSpec, ...]


@dataclass(frozen=True)
class Step:
    index: int  # 1-based, as people count steps
    op: str
    args: dict[str, Any]


@dataclass(frozen=True)
class Scenario:
    accounts: tuple[str, ...]
    groups: tuple[GroupSpec, ...]
    steps: tuple[Step, ...]

    @property
    def symbols(self) -> list[str]:
        """Every symbol the steps trade, and every follower symbol a leader's fill maps to:
        a venue lists them as contracts before the replay."""
        traded = {str(s.args["symbol"]) for s in self.steps if "symbol" in s.args}
        for group in self.groups:
            led = {str(s.args["symbol"]) for s in self.steps
                   if s.op == "fill" and s.args.get("account") == group.leader}
            for f in group.followers:
                traded |= {route.symbol for route in map(f.symbols.route, led)
                           if not route.blocked}
        return sorted(traded)


def _text(where: str, value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ScenarioError(f"{where}: {what} must be non-empty text, got {value!r}")
    return value.strip()


def _bool(where: str, value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise ScenarioError(f"{where}: {what} must be true or false, got {value!r}")
    return value


# A fault's count is kept in the sim's 32-bit columns (SimAccount.fail_next...): a count
# beyond this is a typo, refused here rather than stored as another number.
MAX_FAULT_COUNT = 100_000


def _count(where: str, value: Any, what: str, *, positive: bool, most: int) -> int:
    """A whole number from 1 (`positive`) or 0 up to `most`: what the venue's books hold. A
    fill beyond the copier's own bound (rules.MAX_VENUE_QTY) is still a fill a venue may
    report, which the copier must refuse: only the books' width limits it here."""
    if isinstance(value, bool) or not isinstance(value, int) or value < (1 if positive else 0):
        bound = "> 0" if positive else ">= 0"
        raise ScenarioError(f"{where}: {what} must be a whole number {bound}, got {value!r}")
    if value > most:
        raise ScenarioError(f"{where}: {what} must be at most {most:,}, got {value:,}")
    return value


def _object(where: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ScenarioError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _list(where: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ScenarioError(f"{where}: expected a list, got {type(value).__name__}")
    return value


def load(text: str) -> Scenario:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ScenarioError(
            f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    doc = _object("scenario", doc)
    if "scenario" in doc:  # a worked example {"scenario": ..., "expected": ...}
        doc = _object("scenario", doc["scenario"])
    unknown = set(doc) - {"accounts", "groups", "steps"}
    if unknown:
        raise ScenarioError(f"scenario: unknown keys {sorted(unknown)}")
    accounts = _accounts(_list("accounts", doc.get("accounts", [])))
    groups = _groups(_list("groups", doc.get("groups", [])), accounts)
    followers = {f.account for g in groups for f in g.followers}
    by_name = {g.name: g for g in groups}
    raw_steps = _list("steps", doc.get("steps", []))
    # an account that joins a group at some step follows from then on
    followers |= {r["account"] for r in raw_steps if isinstance(r, dict)
                  and r.get("op") == "join" and isinstance(r.get("account"), str)}
    steps = tuple(
        _step(i, raw, accounts, followers, by_name) for i, raw in enumerate(raw_steps, start=1)
    )
    _holds_check(steps)
    return Scenario(tuple(accounts), groups, steps)


def _holds_check(steps: tuple[Step, ...]) -> None:
    """A `fill_held` / `cancel_held` needs a held order: one `hold_orders` armed for that
    account and not yet settled by an earlier step (a whole `fill_held` or a `cancel_held`
    settles one; a part leaves it held). Whether the copier did send an order to hold is
    known only while replaying: the replay says so then, naming the step."""
    armed: dict[str, int] = {}
    for step in steps:
        account = str(step.args.get("account"))
        if step.op == "hold_orders":
            armed[account] = armed.get(account, 0) + step.args["count"]
        elif step.op in HELD_OPS:
            if armed.get(account, 0) <= 0:
                raise ScenarioError(f"step {step.index} ({step.op}): {account} has no held "
                                    "order (no hold_orders before it left one working)")
            if "qty" not in step.args:
                armed[account] -= 1


def _accounts(raw: list[Any]) -> list[str]:
    names: list[str] = []
    for i, item in enumerate(raw, start=1):
        where = f"accounts[{i}]"
        item = _object(where, item)
        name = _text(where, item.get("name"), "name")
        if len(name) > 64:
            raise ScenarioError(f"{where}: name longer than 64 characters")
        broker = item.get("broker", "sim")
        if broker != "sim":
            raise ScenarioError(f"{where}: replay runs on the sim broker only, got {broker!r}")
        if name in names:
            raise ScenarioError(f"{where}: duplicate account name {name!r}")
        names.append(name)
    return names


def _groups(raw: list[Any], accounts: list[str]) -> tuple[GroupSpec, ...]:
    groups: list[GroupSpec] = []
    seen_followers: set[str] = set()
    for i, item in enumerate(raw, start=1):
        where = f"groups[{i}]"
        item = _object(where, item)
        name = _text(where, item.get("name"), "name")
        leader = _known(where, item.get("leader"), accounts, "leader")
        exit_mode = item.get("exit_mode", "proportional")
        if exit_mode not in ("proportional", "with_leader"):
            raise ScenarioError(f"{where}: exit_mode must be proportional or with_leader, "
                                f"got {exit_mode!r}")
        followers = []
        for j, f in enumerate(_list(f"{where}.followers", item.get("followers", [])), start=1):
            fw = f"{where}.followers[{j}]"
            f = _object(fw, f)
            account = _known(fw, f.get("account"), accounts, "account")
            if account in seen_followers:
                raise ScenarioError(f"{fw}: {account} already follows a group")
            seen_followers.add(account)
            unknown = set(f) - {"account", "multiplier", "enabled", "symbols", "micro",
                                "window", "daily_loss_limit", "daily_loss_action", "guard",
                                *_LIMITS}
            if unknown:
                raise ScenarioError(f"{fw}: unknown keys {sorted(unknown)}")
            followers.append(FollowerSpec(account, _multiplier(fw, f.get("multiplier", "1")),
                                          _bool(fw, f.get("enabled", True), "enabled"),
                                          symbols=_symbol_map(fw, f),
                                          **_risk_settings(fw, f),
                                          **_guard(f"{fw}.guard", f.get("guard"))))
        groups.append(GroupSpec(name, leader, _bool(where, item.get("reverse", False), "reverse"),
                                exit_mode, tuple(followers)))
    leaders = {g.leader for g in groups}
    both = leaders & seen_followers
    if both:
        raise ScenarioError(f"groups: {sorted(both)[0]} is both a leader and a follower")
    if len({g.name for g in groups}) != len(groups):
        raise ScenarioError("groups: duplicate group name")
    return tuple(groups)


def _symbol_map(where: str, raw: dict[str, Any]) -> symbol_map.SymbolMap:
    """A follower's `symbols` ({"NQ": "MNQ"} or {"NQ": {"symbol": "MNQ", "ratio": "10"}})
    and `micro` (true: mini to micro; "to_micro", "to_mini", false or "off")."""
    micro_raw = raw.get("micro", False)
    micro_values = {True: "to_micro", False: "off"}
    micro = micro_values.get(micro_raw, micro_raw) if isinstance(micro_raw, bool) else micro_raw
    if micro not in tuple(symbol_map.Micro):
        raise ScenarioError(f"{where}: micro must be true, false, to_micro, to_mini or off, "
                            f"got {micro_raw!r}")
    rules_raw = _object(f"{where}.symbols", raw.get("symbols", {}))
    found = []
    for leader_raw, target in rules_raw.items():
        at = f"{where}.symbols.{leader_raw}"
        ratio = None
        if isinstance(target, dict):
            unknown = set(target) - {"symbol", "ratio"}
            if unknown:
                raise ScenarioError(f"{at}: unknown keys {sorted(unknown)}")
            ratio, target = target.get("ratio"), target.get("symbol")
        try:
            leader, follower = normalise_symbol(leader_raw), normalise_symbol(target)
            found.append(symbol_map.rule_check(
                leader, follower, None if ratio is None else symbol_map.ratio_parse(ratio)))
        except ValidationError as exc:
            raise ScenarioError(f"{at}: {exc.messages[0]}") from None
        except symbol_map.SymbolMapError as exc:
            raise ScenarioError(f"{at}: {exc}") from None
    smap = symbol_map.SymbolMap(tuple(found), symbol_map.Micro(str(micro)))
    try:
        symbol_map.map_check(smap.rules, smap.micro)
    except symbol_map.SymbolMapError as exc:
        raise ScenarioError(f"{where}.symbols: {exc}") from None
    return smap


def _known(where: str, value: Any, accounts: list[str], what: str) -> str:
    name = _text(where, value, what)
    if name not in accounts:
        raise ScenarioError(f"{where}: unknown account {name!r}")
    return name


def _multiplier(where: str, value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ScenarioError(f"{where}: multiplier must be a number, got {value!r}")
    try:
        m = Decimal(str(value))
    except InvalidOperation:
        raise ScenarioError(f"{where}: multiplier must be a number, got {value!r}") from None
    if not m.is_finite() or m <= 0 or m > rules.MAX_MULTIPLIER:
        raise ScenarioError(f"{where}: multiplier must be > 0 (and at most "
                            f"{rules.MAX_MULTIPLIER}), got {value!r}")
    return m


# A follower's own limits: the bounds the admin enforces (copier.models), so that a scenario
# can never set what a person could not.
_LIMITS = {"fixed_qty": rules.MAX_ORDER_QTY, "max_order_qty": rules.MAX_ORDER_QTY,
           "max_position": rules.MAX_POSITION_LIMIT, "max_symbols": rules.MAX_SYMBOLS_LIMIT}


def _risk_settings(where: str, raw: dict[str, Any]) -> dict[str, Any]:
    """`fixed_qty`, `max_order_qty`, `max_position`, `max_symbols` and `window` of a follower."""
    out: dict[str, Any] = {}
    for name, bound in _LIMITS.items():
        value = raw.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= bound:
            raise ScenarioError(f"{where}: {name} must be a whole number from 1 to {bound} "
                                f"(or absent: none), got {value!r}")
        out[name] = value
    if "fixed_qty" in out and "multiplier" in raw:
        raise ScenarioError(f"{where}: either a multiplier or a fixed_qty, not both")
    if raw.get("window") is not None:
        out["window"] = _window(f"{where}.window", raw["window"])
    if raw.get("daily_loss_limit") is not None:
        out["daily_loss_limit"] = _loss_limit(where, raw["daily_loss_limit"])
    action = raw.get("daily_loss_action", "lock")
    if action not in ("alert", "lock"):
        raise ScenarioError(f"{where}: daily_loss_action must be alert or lock, got {action!r}")
    if "daily_loss_action" in raw and "daily_loss_limit" not in out:
        raise ScenarioError(f"{where}: daily_loss_action without a daily_loss_limit")
    out["daily_loss_action"] = action
    return out


_GUARD_AMOUNTS = ("starting_balance", "drawdown", "trail_stop", "buffer", "warn",
                  "daily_loss", "weekly_loss", "profit_target", "risk_per_contract", "line")
_GUARD_FLAGS = ("daily_loss_hard", "target_flatten")
_GUARD_MODELS = tuple(m.value for m in guard.DrawdownModel)


def _guard_keys(where: str, raw: Any) -> dict[str, Any]:
    raw = _object(where, raw)
    unknown = set(raw) - {*_GUARD_AMOUNTS, *_GUARD_FLAGS, "model", "max_contracts", "flat_by"}
    if unknown:
        raise ScenarioError(f"{where}: unknown keys {sorted(unknown)}")
    for needed in ("starting_balance", "drawdown"):
        if needed not in raw:
            raise ScenarioError(f"{where}: {needed} is required")
    return raw


def _guard(where: str, raw: Any) -> dict[str, Any]:
    """A follower's account guard (docs/scenarios.md "Account guards"): the profile's
    numbers, checked as the admin checks them (copier.domain.guard.GuardRules)."""
    if raw is None:
        return {}
    raw = _guard_keys(where, raw)
    model = raw.get("model", guard.DrawdownModel.EOD_TRAILING.value)
    if model not in _GUARD_MODELS:
        raise ScenarioError(f"{where}: model must be one of {', '.join(_GUARD_MODELS)}, "
                            f"got {model!r}")
    amounts = {n: _number(where, raw[n], n) for n in _GUARD_AMOUNTS
               if raw.get(n) is not None}
    line_now = amounts.pop("line", None)
    kw: dict[str, Any] = {"buffer": Decimal(150), "warn": Decimal(400), **amounts,
                          **{n: _bool(where, raw[n], n) for n in _GUARD_FLAGS if n in raw}}
    if raw.get("max_contracts") is not None:
        kw["max_contracts"] = _count(where, raw["max_contracts"], "max_contracts",
                                     positive=True, most=rules.MAX_POSITION_LIMIT)
    if raw.get("flat_by") is not None:
        try:
            kw["flat_by"] = dt.time.fromisoformat(_text(where, raw["flat_by"], "flat_by"))
        except ValueError:
            raise ScenarioError(f"{where}: flat_by must be HH:MM, got {raw['flat_by']!r}"
                                ) from None
    try:
        rules_ = guard.GuardRules(model=guard.DrawdownModel(model), **kw)
        if line_now is not None:
            guard.Marks.from_line(rules_, line_now, rules_.starting_balance)
    except ValueError as exc:
        raise ScenarioError(f"{where}: {exc}") from None
    return {"guard": rules_, "guard_line": line_now}


def _number(where: str, value: Any, what: str) -> Decimal:
    """A number given as a JSON number or as text ('612.50'); NaN, infinities and
    anything else are refused."""
    try:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise InvalidOperation
        number = Decimal(str(value))
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite():
        raise ScenarioError(f"{where}: {what} must be a number, got {value!r}")
    return number


def _loss_limit(where: str, value: Any) -> Decimal:
    limit = _number(where, value, "daily_loss_limit")
    if not 0 < limit <= rules.MAX_LOSS_LIMIT or limit != limit.quantize(Decimal("0.01")):
        raise ScenarioError(f"{where}: daily_loss_limit must be an amount from 0.01 to "
                            f"{rules.MAX_LOSS_LIMIT} (cents at most), got {value!r}")
    return limit


def _price(where: str, value: Any) -> Decimal:
    price = _number(where, value, "price")
    if not 0 < price < Decimal(10) ** 12:
        raise ScenarioError(f"{where}: price must be a number > 0, got {value!r}")
    return price


def _window(where: str, raw: Any) -> rules.TradingWindow:
    raw = _object(where, raw)
    unknown = set(raw) - {"start", "end", "tz", "days"}
    if unknown:
        raise ScenarioError(f"{where}: unknown keys {sorted(unknown)}")
    times = []
    for key in ("start", "end"):
        text = raw.get(key)
        try:
            if not isinstance(text, str) or len(text) != 5:
                raise ValueError
            times.append(dt.time.fromisoformat(text))
        except ValueError:
            raise ScenarioError(f"{where}: {key} must be a time HH:MM, got {text!r}") from None
    days = raw.get("days", "")
    if isinstance(days, list) and all(isinstance(d, str) for d in days):
        days = ",".join(days)
    if not isinstance(days, str):
        raise ScenarioError(f"{where}: days must be text like 'mon-fri' or a list of day "
                            f"names, got {days!r}")
    tz = raw.get("tz", "UTC")
    if not isinstance(tz, str):
        raise ScenarioError(f"{where}: tz must be a time zone name, got {tz!r}")
    try:
        return rules.TradingWindow(times[0], times[1], tz, rules.days_parse(days))
    except ValueError as exc:
        raise ScenarioError(f"{where}: {exc}") from None


def _step(index: int, raw: Any, accounts: list[str], followers: set[str],
          groups: dict[str, GroupSpec]) -> Step:
    where = f"step {index}"
    raw = _object(where, raw)
    op = raw.get("op")
    if op not in OPS:
        raise ScenarioError(f"{where}: unknown op {op!r} (one of {', '.join(OPS)})")
    where = f"step {index} ({op})"
    args: dict[str, Any] = {}
    if op not in ("advance", "crash", "recover", "reverse", "group_mode", "flatten", "price"):
        args["account"] = _known(where, raw.get("account"), accounts, "account")
    if op in ("group_mode", "flatten"):
        args.update(_target_args(where, raw, accounts, followers, groups))
    if op in ("fill", "release", "price"):
        try:
            args["symbol"] = normalise_symbol(raw.get("symbol"))
        except ValidationError as exc:
            raise ScenarioError(f"{where}: {exc.messages[0]}") from None
    parse = _OP_ARGS.get(op)
    if parse is not None:
        args.update(parse(where, raw, args, followers))
    if op in ("reverse", "join"):
        args.update(_group_args(where, raw, args, groups))
    return Step(index, op, args)


def _group_args(
    where: str, raw: dict[str, Any], args: dict[str, Any], groups: dict[str, GroupSpec]
) -> dict[str, Any]:
    name = _text(where, raw.get("group"), "group")
    if name not in groups:
        raise ScenarioError(f"{where}: unknown group {name!r}")
    if raw["op"] == "reverse":
        return {"group": name, "reverse": _bool(where, raw.get("reverse"), "reverse")}
    if args["account"] in {g.leader for g in groups.values()}:
        raise ScenarioError(f"{where}: {args['account']} leads a group and cannot follow")
    return {"group": name, "multiplier": _multiplier(where, raw.get("multiplier", "1"))}


def _target_args(where: str, raw: dict[str, Any], accounts: list[str], followers: set[str],
                 groups: dict[str, GroupSpec]) -> dict[str, Any]:
    """A group (`group_mode`, `flatten`) or a follower (`flatten`), and a mode where due."""
    args: dict[str, Any] = {}
    if raw["op"] == "flatten" and ("group" in raw) == ("account" in raw):
        raise ScenarioError(f"{where}: give either a group or an account")
    if raw["op"] == "group_mode" or "group" in raw:
        name = _text(where, raw.get("group"), "group")
        if name not in groups:
            raise ScenarioError(f"{where}: unknown group {name!r}")
        args["group"] = name
    else:
        args["account"] = _known(where, raw.get("account"), accounts, "account")
        if args["account"] not in followers:
            raise ScenarioError(f"{where}: {args['account']} follows no group")
    if raw["op"] == "group_mode":
        args["mode"] = _mode(where, raw.get("mode"))
    return args


def _mode(where: str, value: Any) -> str:
    if value not in MODES:
        raise ScenarioError(f"{where}: mode must be one of {', '.join(MODES)}, got {value!r}")
    return str(value)


def _mode_args(
    where: str, raw: dict[str, Any], args: dict[str, Any], followers: set[str]
) -> dict[str, Any]:
    if args["account"] not in followers:
        raise ScenarioError(f"{where}: {args['account']} follows no group")
    return {"mode": _mode(where, raw.get("mode"))}


def _fill_args(where: str, raw: dict[str, Any], _a: dict[str, Any], _f: set[str]) -> dict[str, Any]:
    if raw.get("side") not in tuple(Side):
        raise ScenarioError(f"{where}: side must be buy or sell, got {raw.get('side')!r}")
    args = {"side": raw["side"], "qty": _count(where, raw.get("qty"), "qty", positive=True,
                                               most=MAX_VENUE_ID)}
    if "fill_id" in raw:
        args["fill_id"] = _text(where, raw["fill_id"], "fill_id")[:128]
    if "price" in raw:
        args["price"] = _price(where, raw["price"])
    return args


def _price_args(
    where: str, raw: dict[str, Any], _a: dict[str, Any], _f: set[str]
) -> dict[str, Any]:
    return {"price": _price(where, raw.get("price"))}


def _fault_args(
    where: str, raw: dict[str, Any], _a: dict[str, Any], _f: set[str]
) -> dict[str, Any]:
    return {"count": _count(where, raw.get("count"), "count", positive=False,
                                most=MAX_FAULT_COUNT)}


def _hold_args(
    where: str, raw: dict[str, Any], args: dict[str, Any], followers: set[str]
) -> dict[str, Any]:
    """`hold_orders` (a count > 0), `fill_held` (an optional qty > 0), `cancel_held`: a
    follower's orders, which the copier sends."""
    if args["account"] not in followers:
        raise ScenarioError(f"{where}: {args['account']} follows no group")
    if raw["op"] == "hold_orders":
        return {"count": _count(where, raw.get("count"), "count", positive=True,
                                most=MAX_FAULT_COUNT)}
    if raw["op"] == "fill_held" and "qty" in raw:
        return {"qty": _count(where, raw["qty"], "qty", positive=True,
                              most=MAX_VENUE_ID)}
    return {}


def _advance_args(
    where: str, raw: dict[str, Any], _a: dict[str, Any], _f: set[str]
) -> dict[str, Any]:
    seconds = raw.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not (
        0 <= seconds <= 30 * 86400
    ):
        raise ScenarioError(f"{where}: seconds must be a number from 0 to 2592000, got {seconds!r}")
    return {"seconds": seconds}


def _enable_args(
    where: str, raw: dict[str, Any], args: dict[str, Any], followers: set[str]
) -> dict[str, Any]:
    if args["account"] not in followers:
        raise ScenarioError(f"{where}: {args['account']} follows no group")
    return {"enabled": _bool(where, raw.get("enabled"), "enabled")}


def _leave_args(
    where: str, raw: dict[str, Any], args: dict[str, Any], followers: set[str]
) -> dict[str, Any]:
    if args["account"] not in followers:
        raise ScenarioError(f"{where}: {args['account']} follows no group")
    return {}


_OP_ARGS = {
    "fill": _fill_args,
    "fail_orders": _fault_args,
    "reject_orders": _fault_args,
    "advance": _advance_args,
    "enable": _enable_args,
    "leave": _leave_args,
    "mode": _mode_args,
    "price": _price_args,
    "hold_orders": _hold_args,
    "fill_held": _hold_args,
    "cancel_held": _hold_args,
}
