"""Groups, followers, quarantines, leader events, decisions, failed exits and orders.

The rows are the truth; Celery only triggers work on them. Every state change
that matters for money (an event processed, an order sent, an exit retried)
is a row moving forward through a small state machine, so that a redelivered
or repeated task finds nothing left to do.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import os
import time
from base64 import b32encode, b64decode, b64encode
from binascii import unhexlify
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlencode

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models, transaction
from django.db.models import Max, Q
from django_otp.models import Device, ThrottlingMixin, TimestampMixin
from django_otp.oath import TOTP
from django_otp.util import random_hex

from accounts.models import TradingAccount
from accounts.symbols import normalise_symbol
from copier import outbound
from copier.domain import guard, rules, symbol_map
from core.contracts import contract_parse
from core.fields import EncryptedTextField
from core.trading import OrderStatus, Side

# The rules' words, as every model and form offers them: one list, never retyped.
SIDE_CHOICES = [(side.value, side.value) for side in Side]
LEG_KIND_CHOICES = [(kind.value, kind.value) for kind in rules.LegKind]


def validate_multiplier(value: Decimal) -> None:
    if value is None or value <= 0:
        raise ValidationError("The multiplier must be greater than 0 (e.g. 0.5, 1, 3).")
    if value > rules.MAX_MULTIPLIER:
        raise ValidationError(
            f"The multiplier must be at most {rules.MAX_MULTIPLIER}: one leader contract "
            f"would become {value.normalize():f} on this follower."
        )


MODE_HELP = ("Active: copies entries and exits. Exits only (wind-down): follows the leader's "
             "exits and reductions until flat, never enters. Off is 'enabled' unticked.")


class Mode(models.TextChoices):
    ACTIVE = rules.Mode.ACTIVE.value, "Active"
    EXITS_ONLY = rules.Mode.EXITS_ONLY.value, "Exits only (wind-down)"


MICRO_CHOICES = [
    (symbol_map.Micro.OFF.value, "Off"),
    (symbol_map.Micro.TO_MICRO.value, "Mini to micro (1 ES -> 10 MES)"),
    (symbol_map.Micro.TO_MINI.value, "Micro to mini (10 MES -> 1 ES)"),
]
MICRO_HELP = ("Trade the leader's mini contracts as micros (or micros as minis) of the same "
              "underlying, keeping the notional: ES/MES, NQ/MNQ, YM/MYM, RTY/M2K, CL/MCL, "
              "GC/MGC, ten micros to a mini. Symbol mappings below come first.")


def current_event_watermark() -> int:
    """Id of the newest leader event: a new follower copies only what comes after."""
    return LeaderEvent.objects.aggregate(m=Max("id"))["m"] or 0


class CopyGroup(models.Model):
    """A leader and its followers.

    A new leader means every follower joins it now: earlier events are not theirs. The
    database moves their start (`start_event_id`) on every change of `leader_id`, however
    it is written (migration 0012: a trigger), and a follower's start never moves back, so
    the admin's inline rows saved after the group, from copies loaded before, keep it.
    """

    class ExitMode(models.TextChoices):
        PROPORTIONAL = rules.ExitMode.PROPORTIONAL.value, "Proportional"
        WITH_LEADER = rules.ExitMode.WITH_LEADER.value, "Close fully with the leader's first exit"

    name = models.CharField(max_length=64, unique=True)
    leader = models.ForeignKey(TradingAccount, on_delete=models.PROTECT, related_name="led_groups")
    reverse = models.BooleanField(
        default=False, help_text="Followers take the side opposite the leader."
    )
    exit_mode = models.CharField(
        max_length=16, choices=ExitMode.choices, default=ExitMode.PROPORTIONAL
    )
    enabled = models.BooleanField(default=True)
    mode = models.CharField(
        max_length=16, choices=Mode.choices, default=Mode.ACTIVE,
        help_text=MODE_HELP + " A group in exits only makes all its followers exits only.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "copy group"

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.leader_id and Follower.objects.filter(account_id=self.leader_id).exists():
            raise ValidationError(
                {"leader": "This account is a follower; an account is a leader or a follower, "
                           "never both."}
            )


def validate_fixed_qty(value: int | None) -> None:
    if value is not None and not 0 < value <= rules.MAX_ORDER_QTY:
        raise ValidationError(
            f"The fixed quantity must be from 1 to {rules.MAX_ORDER_QTY} contracts "
            f"(leave it empty to use the multiplier), got {value}.")


def _limit_check(what: str, bound: int, value: int | None) -> None:
    if value is not None and not 0 < value <= bound:
        raise ValidationError(
            f"The {what} must be from 1 to {bound} (leave it empty for no limit; "
            f"to stop entries altogether use exits only), got {value}.")


def validate_max_order_qty(value: int | None) -> None:
    _limit_check("max contracts per order", rules.MAX_ORDER_QTY, value)


def validate_max_position(value: int | None) -> None:
    _limit_check("max position per symbol", rules.MAX_POSITION_LIMIT, value)


def validate_max_symbols(value: int | None) -> None:
    _limit_check("max open symbols", rules.MAX_SYMBOLS_LIMIT, value)


def validate_daily_loss_limit(value: Decimal | None) -> None:
    if value is not None and not (value.is_finite() and 0 < value <= rules.MAX_LOSS_LIMIT):
        raise ValidationError(
            f"The daily loss limit must be an amount from 0.01 to {rules.MAX_LOSS_LIMIT:,} in "
            f"the account's currency (leave it empty for no limit), got {value}.")


class LossAction(models.TextChoices):
    """What reaching the daily loss limit does (docs/rules.md "Daily loss limit")."""

    ALERT = "alert", "Alert only"
    LOCK = "lock", "Lock: no entries until the next session"


def validate_window_days(value: str) -> None:
    try:
        rules.days_parse(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def validate_time_zone(value: str) -> None:
    if not value:
        return
    try:
        rules.TradingWindow(dt.time(0), dt.time(1), value)
    except ValueError:
        raise ValidationError(
            f"Unknown time zone {value!r}: use a name like America/New_York, "
            f"Europe/London or UTC.") from None


# The follower's sizing and risk-limit fields, in the order the admin shows them.
RISK_FIELDS = ["fixed_qty", "max_order_qty", "max_position", "max_symbols", "window_start",
               "window_end", "window_tz", "window_days", "daily_loss_limit",
               "daily_loss_action"]


class Follower(models.Model):
    group = models.ForeignKey(CopyGroup, on_delete=models.CASCADE, related_name="followers")
    account = models.OneToOneField(
        TradingAccount, on_delete=models.PROTECT, related_name="follower",
        help_text="An account follows at most one group.",
    )
    multiplier = models.DecimalField(
        max_digits=12, decimal_places=4, default=Decimal("1"), validators=[validate_multiplier]
    )
    enabled = models.BooleanField(default=True)
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.ACTIVE,
                            help_text=MODE_HELP)
    # Sizing and risk limits (docs/rules.md): empty is "not used" / "no limit".
    fixed_qty = models.PositiveIntegerField(
        "fixed quantity", null=True, blank=True, validators=[validate_fixed_qty],
        help_text="Contracts this follower holds whenever the leader holds any (on the "
                  "leader's side, or the opposite one in a reverse group), instead of the "
                  "multiplier. Empty: use the multiplier.")
    max_order_qty = models.PositiveIntegerField(
        "max contracts per order", null=True, blank=True,
        validators=[validate_max_order_qty],
        help_text="A copied entry larger than this is cut to it. Exits are never cut.")
    max_position = models.PositiveIntegerField(
        "max position per symbol", null=True, blank=True,
        validators=[validate_max_position],
        help_text="The follower never holds more than this many contracts on a symbol "
                  "through a copied entry; its expected position is capped at it.")
    max_symbols = models.PositiveIntegerField(
        "max open symbols", null=True, blank=True,
        validators=[validate_max_symbols],
        help_text="An entry that would open one more symbol than this is not copied.")
    window_start = models.TimeField(
        "trading window from", null=True, blank=True,
        help_text="Entries are copied only inside the window; exits always. Empty: always.")
    window_end = models.TimeField(
        "trading window to", null=True, blank=True,
        help_text="Before 'from' means overnight (e.g. 18:00 to 17:00).")
    window_tz = models.CharField(
        "window time zone", max_length=64, blank=True, default="",
        validators=[validate_time_zone], help_text="e.g. America/New_York; empty: UTC.")
    window_days = models.CharField(
        "window days", max_length=64, blank=True, default="",
        validators=[validate_window_days],
        help_text="Days a window opens: mon-fri, sun-thu, mon,wed,fri; empty: every day.")
    daily_loss_limit = models.DecimalField(
        "daily loss limit", max_digits=12, decimal_places=2, null=True, blank=True,
        validators=[validate_daily_loss_limit],
        help_text="An amount in the account's currency (e.g. 500): when the account's realised "
                  "loss this session (from its broker) reaches it, you are alerted and, in "
                  "lock mode, no entry is copied until the next session. Empty: no limit.")
    daily_loss_action = models.CharField(
        "when the loss limit is reached", max_length=8, choices=LossAction.choices,
        default=LossAction.LOCK,
        help_text="Alert only, or lock: no entries until the session resets (exits always go "
                  "out).")
    start_event_id = models.BigIntegerField(
        default=current_event_watermark, editable=False,
        help_text="Leader events up to this id happened before the account joined.",
    )
    # Symbol mapping (copier.domain.symbol_map): the automatic conversion here, explicit rules in
    # SymbolMapping rows.
    micro = models.CharField(
        "mini/micro conversion", max_length=8, choices=MICRO_CHOICES,
        default=symbol_map.Micro.OFF.value, help_text=MICRO_HELP,
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["group", "account"]
        constraints = [
            models.CheckConstraint(condition=Q(multiplier__gt=0), name="follower_multiplier_gt_0"),
            *(models.CheckConstraint(condition=Q(**{f"{name}__isnull": True})
                                     | Q(**{f"{name}__gt": 0}), name=f"follower_{name}_gt_0")
              for name in ("fixed_qty", "max_order_qty", "max_position", "max_symbols")),
            models.CheckConstraint(
                condition=Q(daily_loss_limit__isnull=True) | Q(daily_loss_limit__gt=0),
                name="follower_daily_loss_limit_gt_0"),
            models.CheckConstraint(
                condition=Q(window_start__isnull=True, window_end__isnull=True)
                | (Q(window_start__isnull=False, window_end__isnull=False)
                   & ~Q(window_start=models.F("window_end"))),
                name="follower_window_both_and_not_empty"),
        ]

    def __str__(self) -> str:
        if self.fixed_qty is not None:
            return f"{self.account} follows {self.group} fixed {self.fixed_qty}"
        return f"{self.account} follows {self.group} x{self.multiplier.normalize()}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Joining (moved to another group, or its account replaced) starts with the next
        event: the copier never replays a leader's history onto an account. So does a new
        mini/micro conversion (`symbols_rejoin`). The database holds the rule too (see
        CopyGroup): this keeps the saved instance's own start up to date."""
        if self.pk and Follower.objects.filter(pk=self.pk).exclude(
            group_id=self.group_id, account_id=self.account_id, micro=self.micro
        ).exists():
            self.start_event_id = current_event_watermark()
            if kwargs.get("update_fields") is not None:
                kwargs["update_fields"] = {*kwargs["update_fields"], "start_event_id"}
        super().save(*args, **kwargs)

    def symbols(self) -> symbol_map.SymbolMap:
        """The follower's mapping as the rules read it (copier.domain.symbol_map)."""
        return symbol_map.SymbolMap(
            tuple(m.rule() for m in sorted(self.symbol_mappings.all(), key=lambda m: m.pk)),
            symbol_map.Micro(self.micro))

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.account_id and self.group_id and self.account_id == self.group.leader_id:
            errors["account"] = "The group's leader cannot follow its own group."
        elif self.account_id and CopyGroup.objects.filter(leader_id=self.account_id).exists():
            errors["account"] = (
                "This account leads a group; an account is a leader or a follower, never both."
            )
        errors.update(self._risk_errors())
        if errors:
            raise ValidationError(errors)

    def _risk_errors(self) -> dict[str, str]:
        """Sizing and risk limits that cannot work together; field by field, in words."""
        errors: dict[str, str] = {}
        if self.fixed_qty is not None and self.multiplier is not None and (
                self.multiplier != 1):
            errors["fixed_qty"] = (
                "Either a multiplier or a fixed quantity: empty the fixed quantity to size by "
                f"the multiplier ({self.multiplier.normalize():f}), or set the multiplier back "
                "to 1 to use the fixed quantity.")
        if (self.window_start is None) != (self.window_end is None):
            missing = "window_end" if self.window_end is None else "window_start"
            errors[missing] = ("A trading window needs both its start and its end (leave both "
                               "empty to copy entries at any time).")
        elif self.window_start is not None and self.window_start == self.window_end:
            errors["window_end"] = ("The window ends when it starts: leave both empty to copy "
                                    "entries at any time (an end before the start is an "
                                    "overnight window).")
        elif self.window_start is None and (self.window_tz or self.window_days):
            errors["window_start"] = ("A time zone or days were given without a window: set "
                                      "its start and end, or empty them.")
        return errors

    def trading_window(self) -> rules.TradingWindow | None:
        if self.window_start is None or self.window_end is None:
            return None
        return rules.TradingWindow(self.window_start, self.window_end, self.window_tz or "UTC",
                                   rules.days_parse(self.window_days))

    def expected_position(self, p: int, *, reverse: bool | None = None,
                          ratio: Decimal = Decimal(1)) -> int:
        """E(P) with this follower's sizing (multiplier or fixed quantity) and max position:
        the one place the settings meet the rule, for every caller outside an event's seats.
        `ratio`: the symbol mapping's for the symbol (`symbols().route(s).ratio`)."""
        return rules.expected_position(
            p, self.multiplier, self.group.reverse if reverse is None else reverse,
            fixed_qty=self.fixed_qty, max_position=self.max_position, ratio=ratio)

    def per_leader_contract(self, leader_qty: int = 1) -> int:
        """What `leader_qty` leader contracts become on this follower (the admin's preview),
        before any max position."""
        return abs(rules.expected_position(leader_qty, self.multiplier, False,
                                           fixed_qty=self.fixed_qty))


class SessionLoss(models.Model):
    """A follower's realised P&L in one trading session as last read from its broker, and
    what its daily loss limit did about it (copier.services.losslimit).

    One row per follower and session: the periodic check updates it. `reached_at` is when
    the loss was first found at or beyond the limit (the alert is raised then, once);
    `locked_until` is set in lock mode (the next session reset) and is what the engine
    reads to hold entries. A failed read never changes the lock.
    """

    follower = models.ForeignKey(Follower, on_delete=models.CASCADE,
                                 related_name="session_losses")
    session_start = models.DateTimeField(help_text="The session's reset (COPIER_SESSION_RESET).")
    realized = models.DecimalField("realised P&L", max_digits=16, decimal_places=2, null=True,
                                   blank=True, help_text="As last read from the broker.")
    read_at = models.DateTimeField(null=True, blank=True)
    read_error = models.TextField(blank=True, default="",
                                  help_text="Why the last read failed (empty: it worked).")
    limit = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True,
                                help_text="The limit that was reached.")
    reached_at = models.DateTimeField(null=True, blank=True)
    locked_at = models.DateTimeField(null=True, blank=True)
    locked_until = models.DateTimeField(null=True, blank=True)
    cleared_by = models.CharField(max_length=150, blank=True, default="",
                                  help_text="Who lifted the lock before the session ended.")

    class Meta:
        ordering = ["-session_start", "follower"]
        constraints = [
            models.UniqueConstraint(fields=["follower", "session_start"],
                                    name="sessionloss_one_per_session"),
        ]
        # Every event's first statement asks, per follower, for the lock its fill fell in
        # (`copier.sql.EVENT_RUN`). A row is kept per follower and session: through the
        # unique index that probe would read a year's sessions of each follower on every
        # event; locked sessions are few.
        indexes = [
            models.Index(fields=["follower", "-locked_at"], name="sessionloss_locked",
                         condition=models.Q(locked_until__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.follower_id} session {self.session_start:%Y-%m-%d %H:%M}"


class AccountGuard(models.Model):
    """One trading account's guard against its prop firm's drawdown line
    (docs/rules.md#the-account-guard, copier.domain.guard): the profile (a firm's preset or
    a person's numbers, with where they come from and when a person last checked them) and
    what the copier keeps between equity readings (the peak the line trails, the balances
    the day's and week's losses count from, the last reading, the lock).

    A lock is only ever lifted by a person (`copier.services.guard.guard_resume`)."""

    class Model(models.TextChoices):
        STATIC = "static", "Static"
        EOD_TRAILING = "eod_trailing", "Trailing on the end-of-day balance"
        INTRADAY_TRAILING = "intraday_trailing", "Trailing on the intraday equity peak"

    class State(models.TextChoices):
        OK = "ok", "OK"
        WARNING = "warning", "Warning"
        ENTRIES_STOPPED = "entries_stopped", "Entries stopped"
        LOCKED = "locked", "Locked"

    account = models.OneToOneField(TradingAccount, on_delete=models.CASCADE,
                                   related_name="guard")
    enabled = models.BooleanField(default=True)
    preset = models.CharField(max_length=40, blank=True, default="",
                              help_text="The firm's rules these numbers came from (empty: "
                                        "your own).")
    source_url = models.URLField("source", blank=True, default="",
                                 help_text="The firm's public page the numbers are from.")
    checked_on = models.DateField(null=True, blank=True,
                                  help_text="When the numbers were last checked against the "
                                            "firm's page: firms change their rules.")
    starting_balance = models.DecimalField(max_digits=14, decimal_places=2)
    drawdown = models.DecimalField(max_digits=14, decimal_places=2,
                                   help_text="The drawdown's size, e.g. 2000.")
    drawdown_model = models.CharField(max_length=20, choices=Model.choices,
                                      default=Model.EOD_TRAILING)
    trail_stop = models.DecimalField(
        max_digits=14, decimal_places=2, null=True, blank=True,
        help_text="Where a trailing line stops, above the starting balance (0: at the "
                  "starting balance; 100: starting balance + $100). Empty: never stops.")
    buffer = models.DecimalField(max_digits=14, decimal_places=2, default=Decimal(150),
                                 help_text="How far above the line the guard flattens.")
    warn = models.DecimalField("warning distance", max_digits=14, decimal_places=2,
                               default=Decimal(400),
                               help_text="How far above the line an alert is raised.")
    daily_loss = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True,
                                     help_text="Realised + open loss in a session.")
    daily_loss_hard = models.BooleanField(
        default=True, help_text="Hard: the firm fails the account (flatten and lock). "
                                "Soft: it stops the day (entries stop, positions kept).")
    weekly_loss = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    profit_target = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True,
                                        help_text="Evaluation passed: entries stop.")
    target_flatten = models.BooleanField(default=False,
                                         help_text="Also flatten at the profit target.")
    max_contracts = models.PositiveIntegerField(null=True, blank=True)
    flat_by = models.TimeField(null=True, blank=True,
                               help_text="Flat by this local time (Topstep: 15:10 CT).")
    session_reset = models.TimeField(default=dt.time(17, 0),
                                     help_text="When the firm's session starts, local time.")
    tz = models.CharField("time zone", max_length=64, default="America/Chicago")
    risk_per_contract = models.DecimalField(
        max_digits=14, decimal_places=2, null=True, blank=True,
        help_text="The loss the guard assumes per contract held after an entry, when the "
                  "leader's stop is unknown. Empty: only equity already inside the buffer "
                  "refuses an entry.")
    # kept between readings
    high_water = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    day_start = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    week_start = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    line = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    line_source = models.CharField(max_length=20, blank=True, default="",
                                   help_text="computed, venue or person")
    balance = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    open_pnl = models.DecimalField("open P&L", max_digits=14, decimal_places=2, null=True,
                                   blank=True)
    equity = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    contracts = models.IntegerField(default=0)
    equity_source = models.CharField(max_length=40, blank=True, default="",
                                     help_text="Where the last reading came from.")
    read_at = models.DateTimeField(null=True, blank=True)
    state = models.CharField(max_length=20, choices=State.choices, default=State.OK)
    findings = models.JSONField(default=list, blank=True)
    locked_at = models.DateTimeField(null=True, blank=True)
    flattened_at = models.DateTimeField(null=True, blank=True)
    resumed_at = models.DateTimeField(null=True, blank=True)
    resumed_by = models.CharField(max_length=150, blank=True, default="")
    read_error = models.TextField(blank=True, default="",
                                  help_text="Why the last reading failed (empty: it did not).")
    # The followers the guard itself switched to exits only: a person's resume (or, for a
    # soft stop, the next session) sets these, and only these, active again.
    switched = models.JSONField(default=list, blank=True)
    # What a leader event freezes with the follower (copier.sql.EVENT_RUN): the profile, the
    # marks, the last reading and the state as one value (copier.domain.guard.Standing),
    # written with every save; None until the account was read, or while the profile does
    # not make sense (no entry check against numbers that are not there).
    standing = models.JSONField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "account guard"

    def __str__(self) -> str:
        return f"guard of {self.account}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.standing = self.standing_now()
        fields = kwargs.get("update_fields")
        if fields is not None:
            kwargs["update_fields"] = {*fields, "standing"}
        super().save(*args, **kwargs)

    def guard_rules(self) -> guard.GuardRules:
        """The profile as the pure rules read it; nonsense numbers are a ValueError."""
        named = {f.name: getattr(self, f.name) for f in dataclasses.fields(guard.GuardRules)
                 if f.name != "model"}
        return guard.GuardRules(model=guard.DrawdownModel(self.drawdown_model), **named)

    @staticmethod
    def profile_fields(rules: guard.GuardRules) -> dict[str, Any]:
        """The row's fields for a profile (a preset's, a scenario's): `guard_rules` the
        other way round, so the two cannot name the numbers differently."""
        values = {f.name: getattr(rules, f.name) for f in dataclasses.fields(rules)}
        values["drawdown_model"] = values.pop("model").value
        return values

    def guard_marks(self, balance: Decimal | None = None) -> guard.Marks:
        """What was kept, or a fresh start from the starting balance."""
        if self.high_water is None or self.day_start is None or self.week_start is None:
            # The peak starts at the starting balance, not at a first reading's: an end-of-
            # day peak must not take in the day so far (a person sets the line where the
            # history is known); the day's and week's losses count from what is read.
            fresh = guard.Marks.fresh(self.guard_rules())
            at = fresh.day_start if balance is None else balance
            return guard.Marks(fresh.high_water, day_start=at, week_start=at)
        return guard.Marks(high_water=self.high_water, day_start=self.day_start,
                           week_start=self.week_start)

    def standing_now(self) -> dict[str, Any] | None:
        """The guard as an event's entry check reads it (None: nothing to check against)."""
        if self.read_at is None or self.balance is None or self.open_pnl is None:
            return None
        try:
            rules = self.guard_rules()
        except (ValueError, TypeError):
            return None
        marks = self.guard_marks(self.balance)
        return guard.Standing(
            rules, marks, guard.Reading(self.balance, self.open_pnl, self.contracts),
            guard.GuardState(self.state),
            tuple(guard.Finding.from_json(f) for f in self.findings)).to_json()

    def clean(self) -> None:
        try:
            self.guard_rules()
        except (ValueError, TypeError) as exc:
            raise ValidationError(str(exc)[:1].upper() + str(exc)[1:] + ".") from None


def symbols_rejoin(follower_id: int) -> None:
    """A follower whose symbol mapping changed starts again with the leader's next event,
    as one that joins: events before were decided on the old symbols (their watermarks
    are on those rows), and must never be decided again on the new ones."""
    Follower.objects.filter(pk=follower_id).update(start_event_id=current_event_watermark())


def _symbol_field_clean(value: str) -> str:
    try:
        return normalise_symbol(value)
    except ValidationError as exc:
        raise ValidationError(exc.messages[0]) from None


class SymbolMapping(models.Model):
    """One explicit symbol mapping of a follower: the leader's root (or one contract) is
    traded on the follower as another root, at a ratio (copier.domain.symbol_map)."""

    follower = models.ForeignKey(Follower, on_delete=models.CASCADE,
                                 related_name="symbol_mappings")
    leader_symbol = models.CharField(
        max_length=32, help_text="A root (NQ: every NQ contract) or one contract (NQZ6).")
    follower_symbol = models.CharField(
        max_length=32, help_text="A root (MNQ): the follower trades the leader's contract "
                                 "month (NQZ6 -> MNQZ6) and rolls with it.")
    ratio = models.DecimalField(
        max_digits=12, decimal_places=4, null=True, blank=True,
        help_text="Follower contracts per leader contract, times the multiplier. Empty: 10 "
                  "for a mini to its micro (NQ -> MNQ), 0.1 the other way, else 1.")

    class Meta:
        ordering = ["follower", "id"]
        constraints = [
            models.UniqueConstraint(fields=["follower", "leader_symbol"],
                                    name="symbolmapping_one_per_leader_symbol"),
            models.CheckConstraint(condition=Q(ratio__isnull=True) | Q(ratio__gt=0),
                                   name="symbolmapping_ratio_gt_0"),
        ]

    def __str__(self) -> str:
        return f"{self.leader_symbol} -> {self.follower_symbol} x{self.rule().ratio.normalize()}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        super().save(*args, **kwargs)
        symbols_rejoin(self.follower_id)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        follower_id = self.follower_id
        deleted = super().delete(*args, **kwargs)
        symbols_rejoin(follower_id)
        return deleted

    def rule(self) -> symbol_map.SymbolRule:
        return symbol_map.SymbolRule(
            self.leader_symbol, self.follower_symbol,
            self.ratio if self.ratio is not None else symbol_map.default_ratio(
                contract_parse(self.leader_symbol).root,
                contract_parse(self.follower_symbol).root))

    def clean(self) -> None:
        errors: dict[str, str] = {}
        for name in ("leader_symbol", "follower_symbol"):
            try:
                setattr(self, name, _symbol_field_clean(getattr(self, name) or ""))
            except ValidationError as exc:
                errors[name] = exc.messages[0]
        if errors:
            raise ValidationError(errors)
        try:
            symbol_map.rule_check(self.leader_symbol, self.follower_symbol, self.ratio)
        except symbol_map.SymbolMapError as exc:
            field = "ratio" if str(exc).startswith("ratio") else (
                "leader_symbol" if str(exc).startswith("leader") else "follower_symbol")
            raise ValidationError({field: str(exc)}) from None


class Quarantine(models.Model):
    """(follower, symbol) taken out of copying until a person or a flat-flat state lifts it."""

    class Reason(models.TextChoices):
        OPPOSITE_SIDE = "opposite_side"
        REJECTED = "rejected"

    account = models.ForeignKey(
        TradingAccount, on_delete=models.CASCADE, related_name="quarantines"
    )
    symbol = models.CharField(max_length=32)
    reason = models.CharField(max_length=16, choices=Reason.choices)
    detail = models.TextField(blank=True, default="")
    event = models.ForeignKey(
        "LeaderEvent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField()
    lifted_at = models.DateTimeField(null=True, blank=True)
    lifted_by = models.CharField(max_length=150, blank=True, default="")

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "symbol"], condition=Q(lifted_at__isnull=True),
                name="quarantine_one_active_per_symbol",
            )
        ]

    def __str__(self) -> str:
        return f"{self.account}:{self.symbol} ({self.reason})"


class LeaderEvent(models.Model):
    """A leader fill, stored before anything else happens (the outbox)."""

    class Status(models.TextChoices):
        RECEIVED = "received"
        DISPATCHED = "dispatched"  # picked up by a worker
        DONE = "done"

    class Source(models.TextChoices):
        STREAM = "stream"
        RECONCILE = "reconcile", "Missed while disconnected (close-only)"

    account = models.ForeignKey(
        TradingAccount, on_delete=models.PROTECT, related_name="leader_events"
    )
    fill_id = models.CharField("broker fill id", max_length=128)
    symbol = models.CharField(max_length=32)
    side = models.CharField(max_length=4, choices=SIDE_CHOICES)
    # Quantities and positions in 64-bit columns, as every column holding a number that came
    # from a venue (accounts.Position): a 32-bit one stored 3,000,000,000 as -1,294,967,296.
    # What a venue says is range-checked before (rules.MAX_VENUE_QTY); the width is for
    # what the copier computes from it.
    qty = models.PositiveBigIntegerField()
    p0 = models.BigIntegerField("P0", help_text="Leader position before the fill.")
    p1 = models.BigIntegerField("P1", help_text="Leader position after the fill.")
    close_only = models.BooleanField(default=False)
    prev_event_id = models.BigIntegerField(
        null=True, blank=True, editable=False,
        help_text="The leader's previous event on this symbol: lets a follower see at once "
                  "whether an earlier event is still undecided for it.",
    )
    runs = models.PositiveIntegerField(
        default=0, editable=False,
        help_text="Times processing started; after a crash, orders are looked up before resending.",
    )
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.STREAM)
    fill_time = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RECEIVED)
    followers_total = models.PositiveIntegerField(null=True, blank=True)
    followers_frozen = models.JSONField(
        null=True, blank=True, editable=False,
        help_text="The followers and their settings when the event first ran: a re-run after "
                  "a crash decides for the same followers with the same settings, so a "
                  "setting changed in between never makes the copier forget or misread an "
                  "order that went out.",
    )
    dispatched_at = models.DateTimeField(null=True, blank=True)
    redispatched_at = models.DateTimeField(
        null=True, blank=True, editable=False,
        help_text="Last periodic re-dispatch: the sweep takes the longest-waiting first, so a "
                  "stuck event never starves the others.",
    )
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["account", "fill_id"], name="event_unique_fill"),
            models.CheckConstraint(condition=Q(qty__gt=0), name="event_qty_gt_0"),
        ]
        indexes = [
            models.Index(fields=["account", "symbol", "id"], name="event_leader_symbol"),
            models.Index(
                fields=["received_at"], condition=~Q(status="done"), name="event_open"
            ),
        ]

    def __str__(self) -> str:
        return (f"#{self.pk} {self.account} {self.side} {self.qty} {self.symbol} "
                f"({self.p0}->{self.p1})")

    def clean(self) -> None:
        self.symbol = normalise_symbol(self.symbol)


class OperatorAction(models.Model):
    """A person's kill-switch action (copier.services.killswitch): stop entries, resume
    them, switch copying off or on, or flatten. Each follower it touched gets a Decision
    that points here, so that a follower's history shows what a person did to it, beside
    what the rules did."""

    class Kind(models.TextChoices):
        ENTRIES_STOP = "entries_stop", "Stop copying entries"
        ENTRIES_RESUME = "entries_resume", "Resume entries"
        FLATTEN = "flatten", "Flatten and stop entries"
        # A group's or follower's `enabled` unticked or ticked (its form, the dashboard)
        COPYING_OFF = "copying_off", "Switch copying off"
        COPYING_ON = "copying_on", "Switch copying on"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    group = models.ForeignKey(CopyGroup, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="operator_actions",
                              help_text="The group it was taken on; empty: several or all.")
    by = models.CharField(max_length=150, help_text="Who: a user name, or cli:<user>.")
    created_at = models.DateTimeField()
    detail = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-id"]
        permissions = [
            ("kill_switch", "Can stop and resume the copying of entries (kill switch)"),
            ("flatten", "Can flatten followers' positions"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind} by {self.by}"


class Decision(models.Model):
    """What the rules decided for one follower on one leader event, and why; or what an
    operator's action (kill switch, flatten) did to it (`action` instead of `event`).

    Written once, in the transaction that placed its orders (a crash rolls it back, and
    the event's re-run decides again). Settled then too, unless an order it sent is
    still working at the broker: it stays open (`settled_at` empty, the legs after a
    working exit `waiting`) until that order settles (copier.services.working), and
    no later event is decided for its (follower, symbol) meanwhile.
    """

    event = models.ForeignKey(LeaderEvent, null=True, blank=True, on_delete=models.CASCADE,
                              related_name="decisions")
    action = models.ForeignKey(OperatorAction, null=True, blank=True, on_delete=models.CASCADE,
                               related_name="decisions")
    account = models.ForeignKey(TradingAccount, on_delete=models.CASCADE, related_name="decisions")
    symbol = models.CharField(max_length=32)
    reason = models.CharField(max_length=24, choices=[(r.value, r.value) for r in rules.Reason])
    # What the rules, the engine or a person noted beside the reason: each a
    # `rules.Note` as JSON ({"kind": ..., its numbers}), read back as data (`note_list`)
    # and put in words from it, never parsed from words.
    notes = models.JSONField(default=list, blank=True)
    position_before = models.BigIntegerField(
        null=True, blank=True, help_text="C when evaluated (empty: an action on all symbols).")
    # E0 and E1 are what the rules computed, however large: an absurd multiplier must be
    # recorded and denied, never fail the batch it is in. An operator action has none.
    expected_before = models.BigIntegerField(null=True, blank=True, help_text="E0.")
    expected_after = models.BigIntegerField(null=True, blank=True, help_text="E1.")
    planned_legs = models.JSONField(default=list, blank=True)
    placed_legs = models.JSONField(default=list, blank=True)
    position_after = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField()
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-event_id", "account__name"]
        constraints = [
            models.UniqueConstraint(fields=["event", "account"], name="decision_event_account"),
            models.UniqueConstraint(fields=["action", "account", "symbol"],
                                    name="decision_action_account_symbol"),
            models.CheckConstraint(
                condition=Q(event__isnull=False, action__isnull=True)
                | Q(event__isnull=True, action__isnull=False),
                name="decision_event_xor_action",
            ),
        ]
        indexes = [
            # the few decisions still open (an order they sent works at the broker), which
            # the periodic sweep reads every few seconds among all decisions ever taken
            models.Index(fields=["account", "symbol"], condition=Q(settled_at__isnull=True),
                         name="decision_open"),
        ]

    def __str__(self) -> str:
        if self.event_id is None:
            return f"action {self.action_id} / {self.account}: {self.reason}"
        return f"event {self.event_id} / {self.account}: {self.reason}"

    def note_list(self) -> list[rules.Note]:
        return [rules.Note.from_json(n) for n in self.notes or []]

    @property
    def detail(self) -> str:
        """The notes in words, for the admin and a log (`rules.notes_text`)."""
        return rules.notes_text(self.note_list())


class InvalidTransition(Exception):
    """A state change that a state machine does not allow (a bug, never data)."""


class FailedExit(models.Model):
    """An exit that could not be placed yet: kept, retried with backoff, never dropped.

    pending -> in_flight (claimed for an attempt) -> pending (failed, or paused meanwhile)
    | done | resolved | rejected; in_flight -> in_flight (a stale claim taken over);
    pending -> done | rejected (its unknown order settled by a look-up or the stream).
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        IN_FLIGHT = "in_flight", "Being attempted"
        DONE = "done"
        RESOLVED = "resolved", "Nothing left to close"
        REJECTED = "rejected"

    TRANSITIONS = {
        Status.PENDING: {Status.IN_FLIGHT, Status.DONE, Status.REJECTED},
        Status.IN_FLIGHT: {Status.IN_FLIGHT, Status.PENDING, Status.DONE, Status.RESOLVED,
                           Status.REJECTED},
        Status.DONE: set(),
        Status.RESOLVED: set(),
        Status.REJECTED: set(),
    }

    account = models.ForeignKey(
        TradingAccount, on_delete=models.CASCADE, related_name="failed_exits"
    )
    symbol = models.CharField(max_length=32)
    side = models.CharField(max_length=4, choices=SIDE_CHOICES)
    qty = models.PositiveBigIntegerField()
    event = models.ForeignKey(
        LeaderEvent, null=True, blank=True, on_delete=models.SET_NULL, related_name="failed_exits"
    )
    action = models.ForeignKey(
        OperatorAction, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="failed_exits",
        help_text="The flatten it closes for: its target is flat, not the leader's E(P).",
    )
    first_failed_at = models.DateTimeField()
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    last_error = models.TextField(blank=True, default="")
    in_flight_since = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["account__name", "symbol", "id"]
        indexes = [
            models.Index(
                fields=["next_attempt_at"], condition=Q(status="pending"), name="failedexit_due"
            ),
            models.Index(fields=["first_failed_at"], name="failedexit_age"),
            # The listener asks every second which followers a flatten's exit waits on
            # (their stream is kept whatever their mode): only those rows are read.
            models.Index(fields=["account"], name="failedexit_flatten_open",
                         condition=Q(action__isnull=False, status__in=["pending", "in_flight"])),
        ]

    def __str__(self) -> str:
        return f"{self.account}: {self.side} {self.qty} {self.symbol} ({self.status})"

    @classmethod
    def moving_to(cls, status: str) -> list[str]:
        """The statuses that may move to `status`: a conditional UPDATE filters on them, so
        that a change made in bulk obeys the same table as `move_to`."""
        sources: list[str] = [
            source for source, targets in cls.TRANSITIONS.items() if status in targets
        ]
        if not sources:
            raise InvalidTransition(f"failed exit: nothing moves to {status}")
        return sources

    def can_move_to(self, status: str) -> bool:
        return status in self.TRANSITIONS[self.Status(self.status)]

    def move_to(self, status: str) -> None:
        if not self.can_move_to(status):
            raise InvalidTransition(f"failed exit {self.pk}: {self.status} -> {status}")
        self.status = status


class Order(models.Model):
    """An order of the copier's, from the broker being asked to its answer.

    submitting -> filled | accepted | rejected | cancelled | unknown | failed;
    unknown -> filled | accepted | rejected | cancelled | failed (after a look-up by
    client order id); accepted (working) -> filled | cancelled | rejected. `failed`
    means it never reached the broker. An order settles by the sum of its fills:
    `filled` with `filled_qty < qty` is one the broker cancelled or expired after a
    part filled; `cancelled` is one it ended with nothing filled.
    An order is `submitting` only in memory, while the broker is asked: its row is
    written with the answer, and one whose answer is lost is written `unknown`
    (a constraint refuses a stored `submitting`). The plan is the decision's.
    """

    class Status(models.TextChoices):
        # The values are core.trading.OrderStatus's, the vocabulary a venue answers in.
        SUBMITTING = OrderStatus.SUBMITTING, "Being sent (never stored)"
        ACCEPTED = OrderStatus.ACCEPTED, "Accepted"
        FILLED = OrderStatus.FILLED, "Filled"
        REJECTED = OrderStatus.REJECTED, "Rejected"
        UNKNOWN = OrderStatus.UNKNOWN, "Unknown (look up before resending)"
        FAILED = OrderStatus.FAILED, "Failed before reaching the broker"
        CANCELLED = OrderStatus.CANCELLED, "Cancelled at the broker with nothing filled"

    TRANSITIONS = {
        Status.SUBMITTING: {Status.FILLED, Status.ACCEPTED, Status.REJECTED, Status.UNKNOWN,
                            Status.FAILED, Status.CANCELLED},
        Status.UNKNOWN: {Status.FILLED, Status.ACCEPTED, Status.REJECTED, Status.FAILED,
                         Status.CANCELLED},
        # Working: more parts may fill (it stays accepted), or the venue ends it, filled
        # in full, in part (filled, `filled_qty < qty`) or not at all (cancelled).
        Status.ACCEPTED: {Status.ACCEPTED, Status.FILLED, Status.REJECTED, Status.CANCELLED},
        Status.FILLED: set(),
        Status.REJECTED: set(),
        Status.FAILED: set(),
        Status.CANCELLED: set(),
    }

    client_order_id = models.CharField(max_length=64, unique=True)
    account = models.ForeignKey(TradingAccount, on_delete=models.CASCADE, related_name="orders")
    symbol = models.CharField(max_length=32)
    side = models.CharField(max_length=4, choices=SIDE_CHOICES)
    qty = models.PositiveBigIntegerField()
    kind = models.CharField(max_length=8, choices=LEG_KIND_CHOICES)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SUBMITTING)
    filled_qty = models.PositiveBigIntegerField(default=0)
    broker_order_id = models.CharField(max_length=64, blank=True, default="")
    message = models.TextField(blank=True, default="")
    decision = models.ForeignKey(
        Decision, null=True, blank=True, on_delete=models.CASCADE, related_name="orders"
    )
    failed_exit = models.ForeignKey(
        FailedExit, null=True, blank=True, on_delete=models.SET_NULL, related_name="orders"
    )
    created_at = models.DateTimeField()
    submitted_at = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(
        null=True, blank=True,
        help_text="When the broker accepted the order, where its fill is read afterwards.")
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(qty__gt=0), name="order_qty_gt_0"),
            models.CheckConstraint(condition=~Q(status="submitting"),
                                   name="order_stored_with_an_answer"),
        ]
        indexes = [
            # "nothing for that (follower, symbol) is sent while an order's outcome is unknown"
            models.Index(fields=["account", "symbol"], condition=Q(status="unknown"),
                         name="order_unknown"),
            # "no decision on a position that a working order will still change"
            models.Index(fields=["account", "symbol"], condition=Q(status="accepted"),
                         name="order_working"),
            # A fill names its order by the broker's id where the venue did not give our tag:
            # whether that order is one of the copier's is asked on every such fill.
            models.Index(fields=["account", "broker_order_id"],
                         condition=~Q(broker_order_id=""), name="order_broker_order_id"),
        ]

    def __str__(self) -> str:
        return f"{self.client_order_id}: {self.side} {self.qty} {self.symbol} ({self.status})"

    @property
    def unfilled(self) -> int:
        """What a settled order left undone (the broker cancelled or expired the rest)."""
        if self.status in (self.Status.FILLED, self.Status.CANCELLED):
            return max(0, self.qty - self.filled_qty)
        return 0

    def move_to(self, status: str) -> None:
        allowed = self.TRANSITIONS[self.Status(self.status)]
        if status not in allowed:
            raise InvalidTransition(f"order {self.client_order_id}: {self.status} -> {status}")
        self.status = status


class RefusedFill(models.Model):
    """A fill or a position statement from a broker that the copier could not accept, and why.

    Nothing a broker says is dropped silently: the row is kept for a person to see. After a
    refused fill the account's positions were re-read from the broker, so that the copier's
    view of it does not stay wrong (docs/rules.md#refused-and-duplicate-fills); a refused
    statement (a position on a contract the venue's look-up does not know, or of a size no
    account holds) was not applied, and the rest of its read was.
    """

    class Kind(models.TextChoices):
        FILL = "fill"
        POSITION = "position", "position statement"

    account = models.ForeignKey(
        TradingAccount, on_delete=models.CASCADE, related_name="refused_fills"
    )
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.FILL)
    fill_id = models.CharField("broker fill id", max_length=128, blank=True, default="")
    payload = models.JSONField(help_text="The fill or position as the broker gave it.")
    reason = models.TextField()
    received_at = models.DateTimeField()

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        what = f"fill {self.fill_id or '?'}" if self.kind == self.Kind.FILL else "position"
        return f"{self.account}: {what} refused ({self.reason})"


class AlertKind(models.TextChoices):
    """What a person is told about: the states in which copying stopped doing its job."""

    QUARANTINE = "quarantine"
    PAUSE = "pause"
    ABANDONED_EXIT = "abandoned_exit", "Abandoned exit"
    REJECTION = "rejection", "Permanent rejection"
    DISCONNECT = "disconnect"
    KILL_SWITCH = "kill_switch", "Kill switch"
    LOSS_LIMIT = "loss_limit", "Daily loss limit"
    GUARD = "guard", "Account guard"


def validate_alert_emails(value: str) -> None:
    """Each address on its own: the form names the one that is wrong."""
    from django.core.validators import validate_email

    bad = []
    for address in alert_emails_split(value):
        try:
            validate_email(address)
        except ValidationError:
            bad.append(address)
    if bad:
        raise ValidationError(
            "Not an email address: %(bad)s (one address per line, or comma separated).",
            params={"bad": ", ".join(bad)},
        )


def alert_emails_split(value: str) -> list[str]:
    return [a.strip() for a in value.replace(",", "\n").replace(";", "\n").splitlines()
            if a.strip()]


def webhook_policy() -> outbound.Policy:
    """Which non-public addresses the operator lets webhooks go to (settings)."""
    from django.conf import settings

    return outbound.Policy.of(allow_private=settings.COPIER_WEBHOOK_ALLOW_PRIVATE,
                              networks=settings.COPIER_WEBHOOK_ALLOWED_NETWORKS)


def validate_webhook_url(value: str) -> None:
    """An http(s) URL to a public address; the message never repeats the URL (it carries the
    channel's token). The address is judged first, so that a spelling of loopback the URL
    syntax refuses (http://2130706433/) is named for what it is. A host that does not
    resolve now is let through: the sender judges it again at every send."""
    from django.core.validators import URLValidator

    if not value:
        return
    try:
        outbound.url_target(str(value), webhook_policy())
    except outbound.AddressRefused as exc:
        raise ValidationError(
            "Refused: %(reason)s. Alerts are sent to public addresses only; %(hint)s.",
            params={"reason": str(exc), "hint": outbound.ALLOW_HINT}) from None
    except (outbound.BadUrl, outbound.HostUnresolved):
        pass  # the URL's syntax is judged below; an unresolved name, at each send
    try:
        URLValidator(schemes=["http", "https"])(str(value))
    except ValidationError:
        raise ValidationError(
            "Enter the webhook's full http(s) URL, e.g. https://hooks.slack.com/services/... "
            "or https://discord.com/api/webhooks/...") from None


class AlertConfig(models.Model):
    """Where a copy group's alerts go and which ones it wants.

    The webhook URL is encrypted at rest like broker credentials: a Slack or Discord
    webhook URL is its own token, and anyone holding it can post to the channel.
    """

    group = models.OneToOneField(CopyGroup, on_delete=models.CASCADE, related_name="alert_config")
    emails = models.TextField(
        blank=True, default="", validators=[validate_alert_emails],
        help_text="Addresses to email, one per line or comma separated.",
    )
    webhook_url = EncryptedTextField(
        "webhook URL", blank=True, default="", validators=[validate_webhook_url],
        help_text="A Slack or Discord compatible webhook (JSON with 'text' and 'content'). "
                  "Encrypted at rest, never logged.",
    )
    on_quarantine = models.BooleanField("quarantines", default=True)
    on_pause = models.BooleanField("pauses (Sync Divergence Guard)", default=True)
    on_abandoned_exit = models.BooleanField("exits abandoned after 7 days", default=True)
    on_rejection = models.BooleanField("permanent rejections", default=True)
    on_disconnect = models.BooleanField("long disconnects", default=True)
    on_kill_switch = models.BooleanField("kill switch", default=True)
    on_loss_limit = models.BooleanField(
        "daily loss limits", default=True,
        help_text="A follower's loss limit reached, or its realised P&L unreadable.")
    disconnect_after_seconds = models.PositiveIntegerField(
        default=120, validators=[MinValueValidator(10)],
        help_text="An account of the group disconnected this long raises an alert.",
    )

    class Meta:
        verbose_name = "alert configuration"

    def __str__(self) -> str:
        return f"alerts of {self.group}"

    def wants(self, kind: str) -> bool:
        return bool(getattr(self, f"on_{kind}", True))


class Alert(models.Model):
    """One alert in the outbox: written with the state change it reports, sent later.

    pending -> sending (claimed by a sender) -> sent | pending (a delivery failed:
    retried after a backoff) | dropped (nobody wants it); a claim left `sending` by a
    sender that died is taken over after a while (sent at least once).
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        SENDING = "sending"
        SENT = "sent"
        DROPPED = "dropped", "Not sent (no destination, or the kind is turned off)"

    kind = models.CharField(max_length=16, choices=AlertKind.choices)
    group = models.ForeignKey(
        CopyGroup, null=True, blank=True, on_delete=models.CASCADE, related_name="alerts"
    )
    account = models.ForeignKey(
        TradingAccount, null=True, blank=True, on_delete=models.SET_NULL, related_name="alerts"
    )
    about = models.CharField(max_length=100, blank=True, default="",
                             help_text="What it is about in a summary line, e.g. 'F1 MNQ'.")
    text = models.TextField()
    created_at = models.DateTimeField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    claimed_at = models.DateTimeField(null=True, blank=True)
    delivered = models.JSONField(default=list, blank=True,
                                 help_text="Destinations it reached (email, webhook).")
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    dedupe_key = models.CharField(max_length=200, null=True, blank=True, unique=True,
                                  editable=False)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["next_attempt_at"], condition=Q(status__in=["pending", "sending"]),
                         name="alert_due"),
        ]

    def __str__(self) -> str:
        return f"{self.kind}: {self.about or self.text[:60]} ({self.status})"


class AlertThrottle(models.Model):
    """When a channel (a group's destinations, or the operator's) last got a message.

    Its row is also the lock a sender holds while it claims that channel's alerts, so
    two senders never both send to one channel within the rate limit.
    """

    key = models.CharField(max_length=32, unique=True)
    last_sent_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.key}: {self.last_sent_at}"


class MetricTally(models.Model):
    """A counter of /metrics, folded in from new rows at scrape time (copier.metrics).

    Kept in the database so that every web process reports the same monotonic value.
    """

    key = models.CharField(max_length=200, unique=True)
    value = models.FloatField(default=0)

    def __str__(self) -> str:
        return f"{self.key}={self.value}"


class AuditEntry(models.Model):
    """One thing a person did, or one change to what the copier trades with: who, when,
    what, before and after (copier.services.audit writes them).

    Append-only: the model refuses to be saved again or deleted, and a trigger in the
    database (migration 0020) refuses UPDATE and DELETE unless the transaction set
    `copier.audit_prune`, which only the superuser's prune (`audit_prune`) does. No
    foreign keys: an entry outlives the user, group or account it names, and deleting
    them never touches it. A secret's value is never in `changes`, only that it changed.
    """

    class Action(models.TextChoices):
        ADD = "add", "added"
        CHANGE = "change", "changed"
        DELETE = "delete", "deleted"
        ENTRIES_STOP = "entries_stop", "stopped entries (kill switch)"
        ENTRIES_RESUME = "entries_resume", "resumed entries"
        FLATTEN = "flatten", "flattened"
        # a group's or follower's own switch as the kill switch records it (OperatorAction)
        COPYING_OFF = "copying_off", "switched copying off"
        COPYING_ON = "copying_on", "switched copying on"
        QUARANTINE_LIFT = "quarantine_lift", "lifted a quarantine"
        LOSS_LOCK_LIFT = "loss_lock_lift", "lifted a daily loss lock"
        FOLLOWER_SWITCH = "follower_switch", "switched a follower (dashboard)"
        CONNECTION_TEST = "connection_test", "tested a broker connection"
        SIM_CONTROL = "sim_control", "sim broker control"
        PRUNE = "prune", "pruned the audit log"
        # the operator's login (copier.services.second_factor)
        SECOND_FACTOR_ENROL = "second_factor_enrol", "enrolled a second factor"
        SECOND_FACTOR_RESET = "second_factor_reset", "reset a second factor"
        RECOVERY_CODES = "recovery_codes", "made new recovery codes"
        RECOVERY_CODE_USED = "recovery_code_used", "logged in with a recovery code"
        LOGIN_UNLOCK = "login_unlock", "unlocked a locked-out login"
        GUARD_RESUME = "guard_resume", "resumed an account guard"
        GUARD_LINE = "guard_line", "set an account guard's line"

    at = models.DateTimeField(db_index=True)
    user_id = models.IntegerField(
        null=True, blank=True,
        help_text="The user's id then (kept when the user is deleted); empty: not a user "
                  "of this site (a command line, the copier itself).")
    who = models.CharField(max_length=150, help_text="A user name, or cli:<user>.")
    action = models.CharField(max_length=24, choices=Action.choices)
    object_type = models.CharField(max_length=100, blank=True, default="",
                                   help_text="app_label.model of what it was done to.")
    object_id = models.CharField(max_length=64, blank=True, default="")
    object_repr = models.CharField("object", max_length=200, blank=True, default="")
    changes = models.JSONField(
        default=dict, blank=True,
        help_text='{field: [before, after]}; a secret: {field: "changed"}.')
    detail = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = "audit entry"
        verbose_name_plural = "audit log"
        # read by whoever may; nobody is given add, change or delete: entries are written
        # by the code paths that record, and removed only by a superuser's prune
        default_permissions = ("view",)
        indexes = [models.Index(fields=["object_type", "object_id"], name="audit_object"),
                   models.Index(fields=["who", "at"], name="audit_who")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.who} {self.action} {self.object_repr}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AuditImmutable("An audit entry is never changed once written.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise AuditImmutable("An audit entry is only removed by a superuser's prune "
                             "(copier.services.audit.audit_prune).")


class AuditImmutable(Exception):
    """Something tried to change or delete an audit entry outside the superuser's prune."""


# --- The operator's second factor (copier.services.second_factor) -------------------------
# django-otp's own devices keep an authenticator's key and the recovery codes as they are
# (plain text): a database dump or backup would hand out every operator's second factor.
# These are django-otp devices too (its login, middleware and devices_for_user find them),
# with the key encrypted like a broker credential and each recovery code kept only as a
# salted scrypt digest.


def totp_key_new() -> str:
    """20 random bytes, hex-encoded: the key django-otp's TOTPDevice makes."""
    return str(random_hex(20))


class AuthenticatorDevice(TimestampMixin, ThrottlingMixin, Device):
    """An authenticator app (TOTP, RFC 6238), checked as django-otp's TOTPDevice checks it.

    The key is an EncryptedTextField (Fernet under COPIER_ENCRYPTION_KEY; copier_rotate_key
    encrypts it again with the other secrets). `verify_token` is TOTPDevice's (django-otp
    1.7.5): a code of `tolerance` steps around the known drift is taken, never one of a step
    at or before the last one taken (`last_t`: a code works once), the drift follows the
    phone's clock (OTP_TOTP_SYNC), and wrong codes slow the device down (ThrottlingMixin)."""

    key = EncryptedTextField(default=totp_key_new, editable=False,
                             help_text="A hex-encoded secret key, encrypted at rest.")
    # Annotated: django-otp's bases are untyped, so the stubs' plugin infers nothing here.
    step: models.PositiveSmallIntegerField[int, int] = models.PositiveSmallIntegerField(
        default=30, help_text="The time step in seconds.")
    t0: models.BigIntegerField[int, int] = models.BigIntegerField(
        default=0, help_text="The Unix time steps count from.")
    digits: models.PositiveSmallIntegerField[int, int] = models.PositiveSmallIntegerField(
        choices=[(6, 6), (8, 8)], default=6)
    tolerance: models.PositiveSmallIntegerField[int, int] = models.PositiveSmallIntegerField(
        default=1, help_text="Time steps in the past or future a code may be of.")
    drift: models.SmallIntegerField[int, int] = models.SmallIntegerField(
        default=0, help_text="Time steps the app's clock is known to be off by.")
    last_t: models.BigIntegerField[int, int] = models.BigIntegerField(
        default=-1, help_text="The time step of the last code taken: the next must be later.")

    class Meta(Device.Meta):
        verbose_name = "authenticator app"

    @property
    def bin_key(self) -> bytes:
        return unhexlify(str(self.key).encode())

    def verify_token(self, token: Any) -> bool:
        allowed, _why = self.verify_is_allowed()
        if not allowed:
            return False
        try:
            number = int(token)
        except (TypeError, ValueError):
            verified = False
        else:
            totp = TOTP(self.bin_key, self.step, self.t0, self.digits, self.drift)
            totp.time = time.time()
            verified = bool(totp.verify(number, self.tolerance, self.last_t + 1))
            if verified:
                self.last_t = totp.t()
                if getattr(settings, "OTP_TOTP_SYNC", True):
                    self.drift = totp.drift
                self.throttle_reset(commit=False)
                self.set_last_used_timestamp(commit=False)
                self.save()
        if not verified:
            self.throttle_increment(commit=True)
        return verified

    def get_throttle_factor(self) -> int:
        return int(getattr(settings, "OTP_TOTP_THROTTLE_FACTOR", 1))

    @property
    def config_url(self) -> str:
        """The otpauth:// URL an app scans (Google's Key URI format), as TOTPDevice makes
        it: the issuer is OTP_TOTP_ISSUER."""
        label = str(self.user.get_username())
        params = urlencode({"secret": b32encode(self.bin_key), "algorithm": "SHA1",
                            "digits": self.digits, "period": self.step})
        issuer = getattr(settings, "OTP_TOTP_ISSUER", "")
        if callable(issuer):
            issuer = issuer(self)
        if isinstance(issuer, str) and issuer:
            issuer = issuer.replace(":", "")
            label = f"{issuer}:{label}"
            params += f"&issuer={quote(issuer)}"  # RFC 3986, not quote_plus
        return f"otpauth://totp/{quote(label)}?{params}"


# scrypt's cost: N is settings.COPIER_RECOVERY_SCRYPT_N (why it is what it is, there)
_SCRYPT_R, _SCRYPT_P = 8, 1


def _scrypt(code: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(code.encode(), salt=salt, n=n, r=r, p=p, maxmem=2**26, dklen=32)


class RecoveryCodeDevice(TimestampMixin, ThrottlingMixin, Device):
    """A user's recovery codes, each usable once (django-otp's StaticDevice, hashed).

    Shown once when made; kept only as salted digests (RecoveryCode), so the database
    holds nothing that logs in. A code taken is deleted under a row lock: two logins with
    the same code, one gets in. Wrong codes slow the device down, as the app's do."""

    class Meta(Device.Meta):
        verbose_name = "recovery codes"

    def get_throttle_factor(self) -> int:
        return int(getattr(settings, "OTP_STATIC_THROTTLE_FACTOR", 1))

    def verify_token(self, token: Any) -> bool:
        allowed, _why = self.verify_is_allowed()
        if not allowed:
            return False
        with transaction.atomic():
            codes = list(self.codes.select_for_update().order_by("pk"))
            match = next((c for c in codes if c.matches(str(token))), None)
            if match is None:
                self.throttle_increment(commit=True)
                return False
            match.delete()
            self.throttle_reset(commit=False)
            self.set_last_used_timestamp(commit=False)
            self.save()
        return True


class RecoveryCode(models.Model):
    """One recovery code, as `scrypt$n$r$p$salt$digest` (base64): never the code."""

    device = models.ForeignKey(RecoveryCodeDevice, related_name="codes",
                               on_delete=models.CASCADE)
    digest = models.CharField(max_length=200)

    class Meta:
        verbose_name = "recovery code"

    def __str__(self) -> str:
        return f"recovery code #{self.pk}"

    @staticmethod
    def random_code() -> str:
        """Eight characters of lower-case base32 (40 bits), as django-otp's StaticToken."""
        return b32encode(os.urandom(5)).decode().lower()

    @staticmethod
    def digest_of(code: str) -> str:
        salt = os.urandom(16)
        n = int(settings.COPIER_RECOVERY_SCRYPT_N)
        derived = _scrypt(code, salt, n, _SCRYPT_R, _SCRYPT_P)
        return "$".join(["scrypt", str(n), str(_SCRYPT_R), str(_SCRYPT_P),
                         b64encode(salt).decode(), b64encode(derived).decode()])

    def matches(self, code: str) -> bool:
        try:
            kind, n, r, p, salt, derived = self.digest.split("$")
            if kind != "scrypt":
                return False
            want = b64decode(derived)
            got = _scrypt(code, b64decode(salt), int(n), int(r), int(p))
        except ValueError:
            return False
        return hmac.compare_digest(got, want)
