"""The operator's interface: groups and followers, quarantines, and the read-only audit
(leader events, the decision taken for each follower and why, orders, failed exits, fills
the copier refused)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from axes.models import AccessAttempt
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import PeriodicTask

from copier.console.audit import AuditedAdmin
from copier.console.decisions import (
    change_url,
    changelist_url,
    decision_text,
    event_follower_latencies,
    latency_html,
    link,
    links,
    order_latency_ms,
)
from copier.console.display import signed, time_display
from copier.console.sentences import legs_text
from copier.domain import presets, rules, symbol_map
from copier.domain.guard import Finding
from copier.models import (
    RISK_FIELDS,
    AccountGuard,
    AlertConfig,
    AuditEntry,
    AuthenticatorDevice,
    CopyGroup,
    Decision,
    FailedExit,
    Follower,
    LeaderEvent,
    LossAction,
    Mode,
    OperatorAction,
    Order,
    Quarantine,
    RefusedFill,
    SymbolMapping,
)
from copier.services import audit, guard, killswitch, lockout, losslimit, second_factor
from core import clock


class AuditAdmin(admin.ModelAdmin):
    """Rows written as the copier (or the sim broker) works: people read them, never edit
    them, or the record of what happened and why would no longer be one. The one read-only
    base, the sim's books use it too."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class FollowerFormSet(forms.BaseInlineFormSet):
    """Checks that need the group being edited, which may not be saved yet."""

    def clean(self) -> None:
        super().clean()
        leader_id = self.instance.leader_id
        for form in self.forms:
            if not hasattr(form, "cleaned_data") or form.cleaned_data.get("DELETE"):
                continue
            account = form.cleaned_data.get("account")
            if account is not None and account.pk == leader_id:
                form.add_error("account", "The group's leader cannot follow its own group.")


ON_DISABLE_CHOICES = [
    ("", "—"),
    ("exits_only", "Exits only: follow the leader's exits until flat (recommended)"),
    ("off", "Off anyway: stop copying; the positions stay open and unmanaged"),
]


class _ModeFormMixin(forms.ModelForm):
    """`mode` beside `enabled`, and the question unticking `enabled` asks when the account
    (or a follower of the group) holds positions: exits only (default) or off anyway.

    A model's `clean` cannot ask a person anything: the form does, with a field that is
    required only then. The first save shows the question with exits only chosen.
    """

    on_disable = forms.ChoiceField(
        choices=ON_DISABLE_CHOICES, required=False, label="if unticked while holding",
        help_text="Asked when 'enabled' is unticked while positions are held.")

    # Whether this form's user may stop and resume entries (copier.kill_switch): the
    # admin sets it on the form class it builds for each request (`_switch_permission`).
    may_switch = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["mode"].required = False  # an older client's post keeps the mode

    def _held(self) -> dict[str, dict[str, int]]:
        """Account name -> positions held, of the accounts that unticking would strand."""
        raise NotImplementedError

    def _switch_changed(self, data: dict[str, Any]) -> list[str]:
        """The fields whose change here would stop or resume entries (a saved row's)."""
        if not self.instance.pk:  # a new group or follower: it stops or resumes nothing
            return []
        return [name for name in ("enabled", "mode")
                if name in data and data[name] != getattr(self.instance, name)]

    def _switch_refused(self, data: dict[str, Any]) -> bool:
        """Without the kill-switch permission, a change that stops or resumes entries is an
        error on its field, and nothing of the form is saved."""
        changed = [] if self.may_switch else self._switch_changed(data)
        for name in changed:
            self.add_error(name, (
                "Stopping or resuming entries (enabled, mode, or a move to a group with "
                "another mode) needs the kill-switch permission (copier.kill_switch); "
                "nothing was changed."))
        return bool(changed)

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if not data.get("mode"):
            data["mode"] = getattr(self.instance, "mode", "") or Mode.ACTIVE
        if self._switch_refused(data):
            return data
        disabling = bool(self.instance.pk) and self.initial.get("enabled") and not data.get(
            "enabled")
        held_by = self._held() if disabling else {}
        if not held_by:
            return data
        choice = data.get("on_disable")
        if choice == "exits_only":
            data["enabled"], data["mode"] = True, Mode.EXITS_ONLY
        elif choice != "off":
            held = "; ".join(f"{name} holds {killswitch.describe_held(h)}"
                             for name, h in sorted(held_by.items()))
            shown = self.data.copy()  # type: ignore[attr-defined]  # a QueryDict
            shown[self.add_prefix("on_disable")] = "exits_only"  # shown again, exits only chosen
            self.data = shown
            self.add_error("on_disable", (
                f"{held}. Choose what happens: exits only (recommended: its exits are still "
                f"copied until flat) or off anyway (the positions stay open, unmanaged); "
                f"or flatten first."))
        return data


def sizing_preview(follower: Follower | None) -> str:
    """What one (and five) leader contracts become on this follower, as saved: the number
    a trader checks before trusting a multiplier, a fixed quantity or a cap."""
    if follower is None or follower.pk is None or follower.group_id is None:
        return "shown once saved"
    one, five = follower.expected_position(1), follower.expected_position(5)
    side = " (on the opposite side: reverse group)" if follower.group.reverse else ""
    text = (f"1 leader contract \u2192 {abs(one)} on this follower; "
            f"5 \u2192 {abs(five)}{side}")
    if follower.max_position is not None and abs(five) < follower.per_leader_contract(5):
        text += f" (capped at the max position, {follower.max_position})"
    return text


def session_loss_text(follower: Follower | None) -> str:
    """The follower's realised P&L this session as last read, and its lock: what a person
    checks before lifting one."""
    if follower is None or follower.pk is None:
        return "shown once saved"
    if follower.daily_loss_limit is None:
        return "no daily loss limit"
    row = losslimit.session_loss_now(follower)
    if row is None:
        return "not read yet this session"
    parts = []
    if row.realized is not None and row.read_at is not None:
        parts.append(f"realised {rules.money(row.realized)} (read {time_display(row.read_at)})")
    if row.read_error:
        parts.append(f"last read failed: {row.read_error}")
    now = clock.now()
    if row.locked_until is not None and row.locked_until > now:
        parts.append(f"LOCKED: no entries until {time_display(row.locked_until)}")
    elif row.cleared_by:
        parts.append(f"lock lifted by {row.cleared_by}")
    elif row.reached_at is not None:
        parts.append(f"limit reached at {time_display(row.reached_at)} (alert only)")
    return "; ".join(parts)


class FollowerForm(_ModeFormMixin):
    class Meta:
        model = Follower
        fields = ["group", "account", "multiplier", "enabled", "mode", "micro", *RISK_FIELDS]
        widgets = {"window_tz": forms.TextInput(attrs={"size": 20,
                                                       "placeholder": "America/New_York"}),
                   "window_days": forms.TextInput(attrs={"size": 12, "placeholder": "mon-fri"})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "micro" in self.fields:  # an older client's post keeps the conversion
            self.fields["micro"].required = False
        if "daily_loss_action" in self.fields:  # and the loss limit's action
            self.fields["daily_loss_action"].required = False

    def clean_daily_loss_action(self) -> str:
        return str(self.cleaned_data.get("daily_loss_action")
                   or self.instance.daily_loss_action or LossAction.LOCK)

    def clean_micro(self) -> str:
        return str(self.cleaned_data.get("micro") or self.instance.micro
                   or symbol_map.Micro.OFF.value)

    def _switch_changed(self, data: dict[str, Any]) -> list[str]:
        """Moving to another group changes what it copies when the groups' switches
        differ: that, too, stops or resumes entries."""
        changed = super()._switch_changed(data)
        new_group = data.get("group")
        if (self.instance.pk and new_group is not None
                and new_group.pk != self.instance.group_id):
            old = self.instance
            moved = Follower(enabled=data.get("enabled", old.enabled),
                             mode=data.get("mode", old.mode))
            if (killswitch.copying_state(moved, new_group)
                    != killswitch.copying_state(moved, old.group)):
                changed.append("group")
        return changed

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        resuming = (data.get("enabled") and data.get("mode") == Mode.ACTIVE
                    and killswitch.Switch.of(self.instance) != killswitch.Switch(True,
                                                                                 Mode.ACTIVE))
        if self.instance.pk and resuming and (why := killswitch.guard_stopped(self.instance)):
            self.add_error("mode", f"Not active: {why}; nothing was changed.")
        return data

    def _held(self) -> dict[str, dict[str, int]]:
        account_id = self.instance.account_id
        held = killswitch.held_positions([account_id]).get(account_id)
        return {self.instance.account.name: held} if held else {}


class CopyGroupForm(_ModeFormMixin):
    class Meta:
        model = CopyGroup
        fields = ["name", "leader", "reverse", "exit_mode", "enabled", "mode"]

    def _held(self) -> dict[str, dict[str, int]]:
        followers = list(self.instance.followers.filter(enabled=True).select_related("account"))
        held = killswitch.held_positions(f.account_id for f in followers)
        return {f.account.name: held[f.account_id] for f in followers if f.account_id in held}


class FollowerInline(admin.TabularInline):
    model = Follower
    form = FollowerForm
    formset = FollowerFormSet
    fields = ["account", "multiplier", "fixed_qty", "preview", "enabled", "mode", "on_disable",
              *RISK_FIELDS[1:]]
    readonly_fields = ["preview"]
    autocomplete_fields = ["account"]
    extra = 1

    @admin.display(description="sizing")
    def preview(self, obj: Follower | None) -> str:
        return sizing_preview(obj)

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)
        _switch_permission(formset.form, request)
        return formset


def _switch_permission(form: type[forms.ModelForm], request: HttpRequest) -> Any:
    """The form class built for this request, told whether its user may stop and resume
    entries (a class of its own each time: ModelAdmin.get_form builds a new one)."""
    form.may_switch = request.user.has_perm("copier.kill_switch")  # type: ignore[attr-defined]
    return form


def follower_save(obj: Follower, by: str) -> None:
    """Save a follower from a form; a change of its switch (or of what it copies, moved
    to another group) goes through the kill switch, recorded with who did it."""
    if obj.pk is None:
        obj.save()
        return
    old = Follower.objects.select_related("group").get(pk=obj.pk)
    wanted = killswitch.Switch.of(obj)
    was = killswitch.copying_state(old, old.group)
    obj.enabled, obj.mode = old.enabled, old.mode
    obj.save()
    killswitch.follower_switch(follower=obj, to=wanted, by=by, was=was)


class KillSwitchActions:
    """Permission checks of the kill switch's admin actions (`permissions=[...]`)."""

    def has_kill_switch_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("copier.kill_switch")

    def has_flatten_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("copier.flatten")


def _flatten_confirmed(model_admin: admin.ModelAdmin, request: HttpRequest, *,
                       groups: list[CopyGroup] | None = None,
                       followers: list[Follower] | None = None) -> TemplateResponse | None:
    """The page listing every order a flatten will send; None once confirmed (flattened)."""
    if request.POST.get("confirm") == "yes":
        result = killswitch.flatten(groups=groups, followers=followers,
                                    by=request.user.get_username())
        lines = result.lines()
        model_admin.message_user(
            request, f"Flattened and left exits only: {'; '.join(lines) or 'nothing was open'}.",
            messages.SUCCESS)
        return None
    plan = killswitch.flatten_plan(groups=groups, followers=followers)
    return TemplateResponse(request, "admin/copier/flatten_confirm.html", {
        **model_admin.admin_site.each_context(request),
        "title": "Flatten and stop entries?",
        "plan": plan,
        "targets": [str(g) for g in groups or []] + [f.account.name for f in followers or []],
        "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
        "action": request.POST.get("action", ""),
        "opts": model_admin.model._meta,
    })


@admin.register(CopyGroup)
class CopyGroupAdmin(AuditedAdmin, KillSwitchActions, admin.ModelAdmin):
    form = CopyGroupForm
    fields = ["name", "leader", "reverse", "exit_mode", "enabled", "mode", "on_disable"]
    list_display = ["name", "leader", "reverse", "exit_mode", "enabled", "mode", "follower_count"]
    list_filter = ["enabled", "mode", "reverse", "exit_mode"]
    search_fields = ["name", "leader__name"]
    list_select_related = ["leader"]
    autocomplete_fields = ["leader"]
    inlines = [FollowerInline]
    actions = ["stop_entries", "resume_entries", "flatten_and_stop"]

    @admin.display(description="followers")
    def follower_count(self, obj: CopyGroup) -> int:
        return obj.followers.count()

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False,
                 **kwargs: Any) -> Any:
        return _switch_permission(super().get_form(request, obj, change, **kwargs), request)

    def save_model(self, request: HttpRequest, obj: CopyGroup, form: Any, change: bool
                   ) -> None:
        """A change of the group's switch goes through the kill switch (recorded, alerted);
        the form refused it already to a user without its permission."""
        if not change:
            super().save_model(request, obj, form, change)
            return
        old = CopyGroup.objects.get(pk=obj.pk)
        wanted = killswitch.Switch.of(obj)
        obj.enabled, obj.mode = old.enabled, old.mode
        super().save_model(request, obj, form, change)
        killswitch.group_switch(group=obj, to=wanted, by=request.user.get_username())

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool
                     ) -> None:
        if formset.model is not Follower:
            super().save_formset(request, form, formset, change)
            return
        instances = formset.save(commit=False)
        for obj in formset.deleted_objects:
            obj.delete()
        for obj in instances:
            follower_save(obj, request.user.get_username())
        formset.save_m2m()

    @admin.action(description="Stop copying entries (exits only: exits are still copied)",
                  permissions=["kill_switch"])
    def stop_entries(self, request: HttpRequest, queryset: QuerySet[CopyGroup]) -> None:
        action = killswitch.entries_stop(groups=list(queryset), by=request.user.get_username())
        self.message_user(request, f"{action.detail} (action #{action.pk}).", messages.SUCCESS)

    @admin.action(description="Resume copying entries", permissions=["kill_switch"])
    def resume_entries(self, request: HttpRequest, queryset: QuerySet[CopyGroup]) -> None:
        action = killswitch.entries_resume(groups=list(queryset), by=request.user.get_username())
        self.message_user(request, f"{action.detail} (action #{action.pk}).", messages.SUCCESS)

    @admin.action(description="Flatten and stop entries (asks for confirmation)",
                  permissions=["flatten"])
    def flatten_and_stop(self, request: HttpRequest,
                         queryset: QuerySet[CopyGroup]) -> TemplateResponse | None:
        return _flatten_confirmed(self, request, groups=list(queryset))


WEBHOOK_KEEP = ("Stored encrypted and never shown: the URL is the channel's token. Leave "
                "blank to keep the current one.")


class AlertConfigForm(forms.ModelForm):
    """The webhook URL is write-only, as a broker login is: never rendered back (it is the
    channel's token: whoever reads it can post there), a blank field keeps it, and removing
    it is a box of its own."""

    # one line: the URL, never a text area that invites pasting more
    webhook_url = forms.CharField(
        label="webhook URL", required=False,
        widget=forms.PasswordInput(render_value=False,
                                   attrs={"size": 80, "autocomplete": "off"}),
        help_text=f"A Slack or Discord compatible webhook (JSON with 'text' and 'content'). "
                  f"{WEBHOOK_KEEP}")
    webhook_clear = forms.BooleanField(label="remove the webhook", required=False)

    class Meta:
        model = AlertConfig
        fields = ["group", "emails", "webhook_url", "disconnect_after_seconds", "on_quarantine",
                  "on_pause", "on_abandoned_exit", "on_rejection", "on_disconnect",
                  "on_kill_switch", "on_loss_limit"]
        widgets = {"emails": forms.Textarea(attrs={"rows": 3})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initial["webhook_url"] = ""  # never sent to the browser, nor compared

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        typed = str(cleaned.get("webhook_url") or "")
        if cleaned.get("webhook_clear"):
            if typed:
                self.add_error("webhook_clear", "Type a new webhook URL or remove the "
                                                "webhook, not both.")
            cleaned["webhook_url"] = ""
        elif not typed:
            cleaned["webhook_url"] = str(self.instance.webhook_url or "")  # blank keeps
        return cleaned


@admin.register(AlertConfig)
class AlertConfigAdmin(AuditedAdmin, admin.ModelAdmin):
    """Where a group's alerts go (copier.alerts); a group without one uses the operator's
    addresses from the environment. The webhook URL is shown as set or not set only, on
    every page (AlertConfigForm)."""

    form = AlertConfigForm
    list_display = ["group", "emails", "webhook", "disconnect_after_seconds"]
    readonly_fields = ["webhook"]
    alert_on = ("Alert on", {"fields": ["on_quarantine", "on_pause", "on_abandoned_exit",
                                        "on_rejection", "on_disconnect", "on_kill_switch",
                                        "on_loss_limit"]})

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        """The URL's field only for who may change it; everyone else reads set / not set."""
        if obj is not None and not self.has_change_permission(request, obj):
            return [(None, {"fields": ["group", "emails", "webhook",
                                       "disconnect_after_seconds"]}), self.alert_on]
        webhook = ["webhook", "webhook_url", "webhook_clear"] if obj else ["webhook_url"]
        return [(None, {"fields": ["group", "emails", *webhook, "disconnect_after_seconds"]}),
                self.alert_on]

    @admin.display(description="webhook")
    def webhook(self, obj: AlertConfig) -> str:
        return "set" if obj.webhook_url else "not set"


class SymbolMappingFormSet(forms.BaseInlineFormSet):
    """The follower's rules together, with its mini/micro choice as the form above has it:
    one rule per leader symbol, no follower root fed by two leader roots."""

    def clean(self) -> None:
        super().clean()
        found = []
        for form in self.forms:
            if (not hasattr(form, "cleaned_data") or not form.cleaned_data
                    or form.cleaned_data.get("DELETE") or form.errors):
                continue
            found.append(form.instance.rule())
        try:
            symbol_map.map_check(found, symbol_map.Micro(self.instance.micro))
        except symbol_map.SymbolMapError as exc:
            raise forms.ValidationError(str(exc)) from None


class SymbolMappingInline(admin.TabularInline):
    model = SymbolMapping
    formset = SymbolMappingFormSet
    fields = ["leader_symbol", "follower_symbol", "ratio"]
    extra = 1
    verbose_name = "symbol mapping"
    verbose_name_plural = ("symbol mappings (the leader's symbol on the left is traded as the "
                           "one on the right; the leader's contract month carries over)")


@admin.register(Follower)
class FollowerAdmin(AuditedAdmin, KillSwitchActions, admin.ModelAdmin):
    form = FollowerForm
    fieldsets = [
        (None, {"fields": ["group", "account", "multiplier", "fixed_qty", "preview", "enabled",
                           "mode", "micro", "on_disable"]}),
        ("Risk limits (entries only: exits always go out)", {
            "fields": ["max_order_qty", "max_position", "max_symbols",
                       ("window_start", "window_end", "window_tz", "window_days"),
                       ("daily_loss_limit", "daily_loss_action"), "session_loss"],
            "description": "Empty: no limit. An entry beyond max per order or max position "
                           "is cut to fit; one that would open a symbol beyond max open "
                           "symbols, or that comes outside the trading window, is not "
                           "copied. Each cut or block is a decision with reason risk_limit. "
                           "The limits count the follower's own contracts (after a symbol "
                           "mapping's ratio). The daily loss limit is checked against the "
                           "account's realised P&L this session, read from its broker "
                           "every 15 s; the session resets at "
                           f"{settings.COPIER_SESSION_RESET}."}),
    ]
    readonly_fields = ["preview", "session_loss"]
    inlines = [SymbolMappingInline]
    list_display = ["account", "group", "multiplier", "fixed_qty", "preview", "limits",
                    "enabled", "mode", "micro"]
    list_filter = ["enabled", "mode", "group"]
    search_fields = ["account__name", "group__name"]
    list_select_related = ["account", "group"]
    autocomplete_fields = ["account"]
    actions = ["flatten", "loss_lock_lift"]

    @admin.display(description="sizing")
    def preview(self, obj: Follower | None) -> str:
        return sizing_preview(obj)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False,
                 **kwargs: Any) -> Any:
        return _switch_permission(super().get_form(request, obj, change, **kwargs), request)

    def save_model(self, request: HttpRequest, obj: Follower, form: Any, change: bool
                   ) -> None:
        if change:
            follower_save(obj, request.user.get_username())
        else:
            super().save_model(request, obj, form, change)

    @admin.display(description="this session")
    def session_loss(self, obj: Follower | None) -> str:
        return session_loss_text(obj)

    @admin.action(description="Lift the daily loss lock (entries are copied again this session)",
                  permissions=["kill_switch"])
    def loss_lock_lift(self, request: HttpRequest, queryset: QuerySet[Follower]) -> None:
        lifted = losslimit.loss_locks_lift(queryset.values_list("pk", flat=True),
                                           by=request.user.get_username())
        self.message_user(request, f"{lifted} daily loss lock(s) lifted; not taken again "
                                   f"before the next session.",
                          messages.SUCCESS if lifted else messages.WARNING)

    @admin.display(description="risk limits")
    def limits(self, obj: Follower) -> str:
        parts = [f"{label} {value}" for label, value in (
            ("max/order", obj.max_order_qty), ("max position", obj.max_position),
            ("max symbols", obj.max_symbols)) if value is not None]
        window = obj.trading_window()
        if window is not None:
            parts.append(f"window {window.describe()}")
        if obj.daily_loss_limit is not None:
            parts.append(f"daily loss {rules.money(obj.daily_loss_limit)} "
                         f"({obj.daily_loss_action})")
        return ", ".join(parts) or "none"

    @admin.action(description="Flatten (close every position) and leave exits only",
                  permissions=["flatten"])
    def flatten(self, request: HttpRequest,
                queryset: QuerySet[Follower]) -> TemplateResponse | None:
        return _flatten_confirmed(self, request,
                                  followers=list(queryset.select_related("account")))


class AccountGuardForm(forms.ModelForm):
    """The profile, and a person's "my line is now ..." where the copier did not see the
    account's history (`line_now`: kept as the peak that puts the line there)."""

    apply_preset = forms.ChoiceField(
        label="fill from a firm's preset", required=False,
        choices=[("", "- keep the numbers below -")] + [
            (p.key, f"{p.firm}: {p.plan}") for p in presets.PRESETS],
        help_text="Replaces the firm's numbers below with the preset's (your buffer and "
                  "warning stay). Presets are read from public pages and firms change their "
                  "rules: check them against the firm's page, then set 'checked on'.")
    source_url = forms.URLField(label="source", required=False, assume_scheme="https",
                                help_text="The firm's public page the numbers are from.")
    buffer_percent = forms.DecimalField(
        label="or buffer as % of the drawdown", required=False, min_value=Decimal("0.01"),
        max_value=Decimal("99.99"), decimal_places=2,
        help_text="e.g. 7.5: the buffer is 7.5 % of the drawdown ($150 on $2,000); replaces "
                  "the buffer above.")
    line_now = forms.DecimalField(
        label="set the line now", required=False, max_digits=14, decimal_places=2,
        help_text="Where the firm shows the account's line today, when the copier did not "
                  "watch it from its first day (a trailing line only). Empty: unchanged.")

    class Meta:
        model = AccountGuard
        fields = ["account", "enabled", "preset", "source_url", "checked_on",
                  "starting_balance", "drawdown", "drawdown_model", "trail_stop", "buffer",
                  "warn", "daily_loss", "daily_loss_hard", "weekly_loss", "profit_target",
                  "target_flatten", "max_contracts", "flat_by", "session_reset", "tz",
                  "risk_per_contract"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("starting_balance", "drawdown", "drawdown_model"):  # a preset may
            self.fields[name].required = False                          # fill them

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if data.get("apply_preset"):
            data.update(_preset_fields(presets.BY_KEY[data["apply_preset"]]))
        if data.get("buffer_percent") is not None and data.get("drawdown") is not None:
            data["buffer"] = (data["drawdown"] * data["buffer_percent"] / 100).quantize(
                Decimal("0.01"))
        for name in ("starting_balance", "drawdown", "drawdown_model"):
            if data.get(name) in (None, "") and name not in self.errors:
                self.add_error(name, "Required (or fill it from a firm's preset).")
        line_now = data.get("line_now")
        if line_now is not None and data.get("drawdown_model") == AccountGuard.Model.STATIC:
            self.add_error("line_now", "A static line is the starting balance less the "
                                       "drawdown: it cannot be set; nothing was changed.")
        return data


def _preset_fields(preset: presets.GuardPreset) -> dict[str, Any]:
    """A preset's numbers as the guard's form fields, not checked by a person yet; the
    person's own buffer, warning and risk per contract are left as they are."""
    fields = AccountGuard.profile_fields(preset.rules(buffer=Decimal(0), warn=Decimal(0)))
    for own in ("buffer", "warn", "risk_per_contract"):
        fields.pop(own)
    return {"preset": preset.key, "source_url": preset.source_url, "checked_on": None,
            **fields}


GUARD_CHECK_AGE_DAYS = 90  # a firm's numbers checked longer ago than this are flagged


@admin.register(AccountGuard)
class AccountGuardAdmin(AuditedAdmin, KillSwitchActions, admin.ModelAdmin):
    """Each follower account's guard against its firm's drawdown line
    (docs/rules.md#the-account-guard): the profile, the live numbers and the lock, which
    only a person lifts (action: resume)."""

    form = AccountGuardForm
    list_display = ["account", "state", "equity_shown", "line_shown", "room", "equity_source",
                    "read", "preset", "checked"]
    list_filter = ["state", "enabled", "drawdown_model"]
    search_fields = ["account__name", "preset"]
    list_select_related = ["account"]
    autocomplete_fields = ["account"]
    actions = ["resume"]
    readonly_fields = ["preset_note", "state", "equity_shown", "line_shown", "room", "high_water",
                       "day_start", "week_start", "line_source", "equity_source", "read",
                       "read_error", "why", "locked_at", "flattened_at", "resumed_at",
                       "resumed_by"]
    fieldsets = [
        (None, {"fields": ["account", "enabled", "apply_preset",
                           ("preset", "source_url", "checked_on"), "preset_note"]}),
        ("The firm's line", {"fields": [
            ("starting_balance", "drawdown"), ("drawdown_model", "trail_stop"),
            ("buffer", "buffer_percent", "warn"), "line_now"],
            "description": "The guard flattens and locks the follower at line + buffer, "
                           "alerts at line + warning distance; exits are never held."}),
        ("More of the firm's rules (empty: none)", {"fields": [
            ("daily_loss", "daily_loss_hard"), "weekly_loss", ("profit_target",
                                                                "target_flatten"),
            "max_contracts", ("flat_by", "session_reset", "tz"), "risk_per_contract"]}),
        ("Now", {"fields": ["state", "why", ("equity_shown", "line_shown", "room"),
                            ("high_water", "day_start", "week_start"), "line_source",
                            ("equity_source", "read"), "read_error",
                            ("locked_at", "flattened_at"), ("resumed_at", "resumed_by")]}),
    ]

    @admin.display(description="equity")
    def equity_shown(self, obj: AccountGuard) -> str:
        return rules.money(obj.equity) if obj.equity is not None else "not read yet"

    @admin.display(description="line")
    def line_shown(self, obj: AccountGuard) -> str:
        if obj.line is None:
            return "not read yet"
        return f"{rules.money(obj.line)} ({obj.line_source or 'computed'})"

    @admin.display(description="above the line")
    def room(self, obj: AccountGuard) -> str:
        if obj.line is None or obj.equity is None:
            return "-"
        return f"{rules.money(obj.equity - obj.line)} (buffer {rules.money(obj.buffer)})"

    @admin.display(description="read", ordering="read_at")
    def read(self, obj: AccountGuard) -> str:
        return time_display(obj.read_at) if obj.read_at else "never"

    @admin.display(description="why")
    def why(self, obj: AccountGuard) -> str:
        return "; ".join(Finding.from_json(f).text for f in obj.findings) or "-"

    @admin.display(description="about the preset")
    def preset_note(self, obj: AccountGuard | None) -> str:
        preset = presets.BY_KEY.get(obj.preset) if obj is not None else None
        if preset is None:
            return "your own numbers" if obj is not None and obj.pk else "-"
        return (f"Read on {preset.checked_on:%Y-%m-%d} from {', '.join(preset.read_from)}. "
                f"{preset.note}")

    @admin.display(description="numbers checked", ordering="checked_on")
    def checked(self, obj: AccountGuard) -> str:
        if obj.checked_on is None:
            return "never: check them against the firm's page"
        age = (clock.now().date() - obj.checked_on).days
        stale = " - check them again: firms change their rules" if (
            age > GUARD_CHECK_AGE_DAYS) else ""
        return f"{obj.checked_on:%Y-%m-%d}{stale}"

    def save_model(self, request: HttpRequest, obj: AccountGuard, form: Any, change: bool
                   ) -> None:
        super().save_model(request, obj, form, change)
        line_now = form.cleaned_data.get("line_now")
        if line_now is not None:
            guard.line_set(obj, line_now, by=request.user)

    @admin.action(description="Resume (copy entries again; the next reading judges afresh)",
                  permissions=["kill_switch"])
    def resume(self, request: HttpRequest, queryset: QuerySet[AccountGuard]) -> None:
        stopped = list(queryset.filter(state__in=["locked", "entries_stopped"]))
        for row in stopped:
            guard.guard_resume(row, by=request.user)
        self.message_user(request, f"{len(stopped)} account guard(s) resumed.",
                          messages.SUCCESS if stopped else messages.WARNING)


@admin.register(OperatorAction)
class OperatorActionAdmin(AuditAdmin):
    """Who stopped entries, resumed them or flattened, and when."""

    list_display = ["id", "kind", "group", "by", "created_at", "detail", "audit_link"]
    list_filter = ["kind"]
    search_fields = ["by", "group__name", "detail"]
    list_select_related = ["group"]

    @admin.display(description="audit")
    def audit_link(self, obj: OperatorAction) -> str:
        return link(changelist_url("copier.auditentry", object_type="copier.operatoraction",
                                   object_id=obj.pk), "audit entry")


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """The audit log, read-only for everyone; a superuser may delete (prune) entries, and
    the prune is an entry of its own (copier.services.audit.audit_prune). The database
    refuses any other change or delete (migration 0020)."""

    list_display = ["when", "who", "action", "object_repr", "summary"]
    list_filter = ["action", "object_type", ("at", admin.DateFieldListFilter), "who"]
    search_fields = ["who", "object_repr", "detail"]
    readonly_fields = ("when", "who", "user_id", "action", "object_type", "object_id",
                       "object_link", "changes_table", "detail")
    fields = readonly_fields
    ordering = ["-at", "-id"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    def delete_model(self, request: HttpRequest, obj: AuditEntry) -> None:
        audit.audit_prune(user=request.user, entries=[obj])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[AuditEntry]) -> None:
        audit.audit_prune(user=request.user, entries=queryset)

    @admin.display(description="when", ordering="at")
    def when(self, obj: AuditEntry) -> str:
        return time_display(obj.at)

    @admin.display(description="object", ordering="object_repr")
    def object_link(self, obj: AuditEntry) -> str:
        url = audit_object_url(obj)
        text = obj.object_repr or obj.object_type or "-"
        return link(url, text) if url else text

    @admin.display(description="what changed")
    def summary(self, obj: AuditEntry) -> str:
        fields = ", ".join(sorted(obj.changes)) if isinstance(obj.changes, dict) else ""
        return "; ".join(part for part in (fields, obj.detail[:120]) if part) or "-"

    @admin.display(description="changes (before \u2192 after)")
    def changes_table(self, obj: AuditEntry) -> str:
        changes = obj.changes if isinstance(obj.changes, dict) else {}
        if not changes:
            return "none"
        rows = format_html_join(
            "", '<tr><th>{}</th><td>{}</td><td>{}</td></tr>',
            ((name, *_before_after(value)) for name, value in sorted(changes.items())))
        return format_html('<table data-testid="audit-changes"><tr><th>field</th>'
                           "<th>before</th><th>after</th></tr>{}</table>", rows)


def _before_after(value: Any) -> tuple[str, str]:
    if isinstance(value, list) and len(value) == 2:
        return tuple("-" if v is None else str(v) for v in value)  # type: ignore[return-value]
    return (str(value), str(value))


def audit_object_url(entry: AuditEntry) -> str:
    """The admin page of what an entry is about, while it still exists."""
    from django.apps import apps
    from django.urls import NoReverseMatch

    try:
        model = apps.get_model(entry.object_type)
    except (LookupError, ValueError):
        return ""
    if not entry.object_id or not model._default_manager.filter(pk=entry.object_id).exists():
        return ""
    meta = model._meta
    try:
        return reverse(f"admin:{meta.app_label}_{meta.model_name}_change",
                       args=[entry.object_id])
    except NoReverseMatch:
        return ""


class LinkedLookups:
    """The changelist filters the console links to (account <-> event <-> decision <->
    order), allowed although they are not in list_filter."""

    linked_lookups: tuple[str, ...] = ()

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None
                       ) -> bool:
        if lookup in self.linked_lookups:
            return True
        return super().lookup_allowed(lookup, value, request)  # type: ignore[misc]

    @admin.display(description="account", ordering="account__name")
    def account_link(self, obj: Any) -> str:
        return link(change_url(obj.account), obj.account.name)

    @admin.display(description="follower", ordering="account__name")
    def follower_link(self, obj: Any) -> str:
        return link(change_url(obj.account), obj.account.name)

    @admin.display(description="event", ordering="event_id")
    def event_link(self, obj: Any) -> str:
        if obj.event_id is None:
            return "-"
        return link(reverse("admin:copier_leaderevent_change", args=[obj.event_id]),
                    f"#{obj.event_id}")


@admin.register(Quarantine)
class QuarantineAdmin(AuditedAdmin, LinkedLookups, admin.ModelAdmin):
    list_display = ["created", "account_link", "symbol", "reason", "detail", "lifted",
                    "lifted_by", "related"]
    list_filter = ["reason", ("lifted_at", admin.EmptyFieldListFilter)]
    search_fields = ["account__name", "symbol"]
    list_select_related = ["account"]
    readonly_fields = ("account", "symbol", "reason", "detail", "event", "created", "lifted",
                       "lifted_by", "related")
    fields = readonly_fields
    actions = ["lift"]
    linked_lookups = ("account__id__exact", "event__id__exact", "symbol")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="since", ordering="created_at")
    def created(self, obj: Quarantine) -> str:
        return time_display(obj.created_at)

    @admin.display(description="lifted", ordering="lifted_at")
    def lifted(self, obj: Quarantine) -> str:
        return time_display(obj.lifted_at) if obj.lifted_at else "active"

    @admin.display(description="see")
    def related(self, obj: Quarantine) -> str:
        pairs = [(changelist_url("copier.decision", account__id__exact=obj.account_id,
                                 symbol=obj.symbol), "decisions")]
        if obj.event_id:
            pairs.append((reverse("admin:copier_leaderevent_change", args=[obj.event_id]),
                          f"event #{obj.event_id}"))
        return links(pairs)

    @admin.action(description="Lift the selected quarantines (copying resumes on that symbol)",
                  permissions=["change"])
    def lift(self, request: HttpRequest, queryset: QuerySet[Quarantine]) -> None:
        from copier.services.quarantine import quarantine_lift

        lifted = sum(
            quarantine_lift(account=q.account, symbol=q.symbol, by=request.user.get_username())
            for q in queryset.filter(lifted_at__isnull=True).select_related("account")
        )
        self.message_user(request, f"{lifted} quarantine(s) lifted.",
                          messages.SUCCESS if lifted else messages.WARNING)


class DecisionInline(admin.TabularInline):
    """An event's decisions: who, what it means in words, how fast."""

    model = Decision
    readonly_fields = ("follower", "sentence", "latency")
    fields = readonly_fields
    extra = 0
    can_delete = False
    verbose_name_plural = "decisions (one per follower)"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Decision]:
        return super().get_queryset(request).select_related("account", "event")

    @admin.display(description="follower")
    def follower(self, obj: Decision) -> str:
        return link(change_url(obj), obj.account.name)

    @admin.display(description="what happened")
    def sentence(self, obj: Decision) -> str:
        return decision_text(obj)

    @admin.display(description="latency")
    def latency(self, obj: Decision) -> str:
        if obj.event is None:  # an operator action's decision: no leader fill to time from
            return latency_html(None)
        return latency_html(event_follower_latencies(obj.event).get(obj.account_id))


@admin.register(LeaderEvent)
class LeaderEventAdmin(LinkedLookups, AuditAdmin):
    list_display = ["id", "received", "account", "move", "source", "status", "latency",
                    "related"]
    list_filter = ["status", "source", "symbol"]
    search_fields = ["fill_id", "account__name"]
    list_select_related = ["account"]
    inlines = [DecisionInline]
    readonly_fields = ("account", "move", "fill_id", "source", "status", "received", "fill",
                       "done", "followers_total", "runs", "latency", "related")
    fields = readonly_fields
    linked_lookups = ("account__id__exact", "id__exact")

    @admin.display(description="fill read", ordering="received_at")
    def received(self, obj: LeaderEvent) -> str:
        return time_display(obj.received_at)

    @admin.display(description="fill time at the broker", ordering="fill_time")
    def fill(self, obj: LeaderEvent) -> str:
        return time_display(obj.fill_time)

    @admin.display(description="done", ordering="done_at")
    def done(self, obj: LeaderEvent) -> str:
        return time_display(obj.done_at)

    @admin.display(description="leader move")
    def move(self, obj: LeaderEvent) -> str:
        return f"{obj.side} {obj.qty} {obj.symbol}: {signed(obj.p0)} \u2192 {signed(obj.p1)}"

    @admin.display(description="slowest copy")
    def latency(self, obj: LeaderEvent) -> str:
        values = event_follower_latencies(obj).values()
        return latency_html(max(values) if values else None)

    @admin.display(description="see")
    def related(self, obj: LeaderEvent) -> str:
        return links([
            (changelist_url("copier.decision", event__id__exact=obj.pk), "decisions"),
            (changelist_url("copier.order", decision__event__id__exact=obj.pk), "orders"),
        ])


@admin.register(Decision)
class DecisionAdmin(LinkedLookups, AuditAdmin):
    """A few readable columns: when, which event, which follower, which symbol, and what
    happened in a sentence; the numbers behind the sentence on the detail page."""

    list_display = ["time", "event_link", "follower_link", "symbol", "sentence"]
    list_filter = ["reason", "symbol"]
    search_fields = ["account__name", "event__fill_id", "symbol"]
    list_select_related = ["event__account", "account", "action"]
    # Newest first by when they were decided: a person's kill-switch decisions (no event)
    # take their place in time among the leader's, not above them all.
    ordering = ["-created_at", "-id"]
    readonly_fields = ("sentence", "time", "event_link", "follower_link", "symbol", "reason",
                       "position_before", "expected_before", "expected_after",
                       "position_after", "planned", "placed", "detail", "order_list")
    fields = readonly_fields
    linked_lookups = ("account__id__exact", "event__id__exact", "symbol")

    @admin.display(description="time", ordering="created_at")
    def time(self, obj: Decision) -> str:
        return time_display(obj.created_at)

    @admin.display(description="what happened")
    def sentence(self, obj: Decision) -> str:
        return format_html('<span class="sentence" data-testid="decision-sentence">{}</span>',
                           decision_text(obj))

    @admin.display(description="planned")
    def planned(self, obj: Decision) -> str:
        return legs_text(obj.planned_legs or ())

    @admin.display(description="placed")
    def placed(self, obj: Decision) -> str:
        return legs_text(obj.placed_legs or (), outcomes=True)

    @admin.display(description="orders (latency: fill read to the broker's answer)")
    def order_list(self, obj: Decision) -> str:
        orders = list(obj.orders.all())
        if not orders:
            return "none"
        return format_html_join(
            mark_safe("<br>"), "{} {}", (
                (link(change_url(o), f"{o.side} {o.qty} {o.symbol}: {o.status}"),
                 latency_html(order_latency_ms(o, obj.event))) for o in orders))


@admin.register(Order)
class OrderAdmin(LinkedLookups, AuditAdmin):
    list_display = ["created", "account_link", "symbol", "what", "status", "latency",
                    "decision_link", "message"]
    list_filter = ["status", "kind", "symbol"]
    search_fields = ["client_order_id", "broker_order_id", "account__name"]
    list_select_related = ["account", "decision__event"]
    readonly_fields = ("client_order_id", "broker_order_id", "account_link", "symbol", "what",
                       "status", "filled_qty", "message", "decision_link", "created",
                       "completed", "latency", "failed_exit")
    fields = readonly_fields
    linked_lookups = ("account__id__exact", "decision__id__exact",
                      "decision__event__id__exact")

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Order) -> str:
        return time_display(obj.created_at)

    @admin.display(description="answered", ordering="completed_at")
    def completed(self, obj: Order) -> str:
        return time_display(obj.completed_at)

    @admin.display(description="order")
    def what(self, obj: Order) -> str:
        return f"{obj.side} {obj.qty} ({obj.kind})"

    @admin.display(description="latency")
    def latency(self, obj: Order) -> str:
        event = obj.decision.event if obj.decision is not None else None
        return latency_html(order_latency_ms(obj, event))

    @admin.display(description="decision")
    def decision_link(self, obj: Order) -> str:
        if obj.decision_id is None:
            return "retry of a queued exit" if obj.failed_exit_id else "-"
        decision = obj.decision
        assert decision is not None
        return links([(change_url(decision), "decision"),
                      (reverse("admin:copier_leaderevent_change",
                               args=[decision.event_id]), f"event #{decision.event_id}")])


@admin.register(FailedExit)
class FailedExitAdmin(LinkedLookups, AuditAdmin):
    list_display = ["account_link", "symbol", "side", "qty", "status", "attempts",
                    "first_failed", "next_attempt", "event_link", "last_error"]
    list_filter = ["status", "symbol"]
    search_fields = ["account__name", "symbol"]
    list_select_related = ["account"]
    linked_lookups = ("account__id__exact", "event__id__exact", "symbol")

    @admin.display(description="first failure", ordering="first_failed_at")
    def first_failed(self, obj: FailedExit) -> str:
        return time_display(obj.first_failed_at)

    @admin.display(description="next attempt", ordering="next_attempt_at")
    def next_attempt(self, obj: FailedExit) -> str:
        return time_display(obj.next_attempt_at)


@admin.register(RefusedFill)
class RefusedFillAdmin(AuditAdmin):
    list_display = ["received_at", "account", "kind", "fill_id", "reason", "payload"]
    list_filter = ["kind", "account"]
    search_fields = ["fill_id", "account__name", "reason"]
    list_select_related = ["account"]


# django-celery-beat's actions check no permission: a view-only user could enable, disable
# and run the periodic tasks (the re-dispatch, retries, heal, prune). Same admin, each
# action behind the change permission.
admin.site.unregister(PeriodicTask)


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(beat_admin.PeriodicTaskAdmin):
    @admin.action(description="Enable selected tasks", permissions=["change"])
    def enable_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        super().enable_tasks(request, queryset)

    @admin.action(description="Disable selected tasks", permissions=["change"])
    def disable_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        super().disable_tasks(request, queryset)

    @admin.action(description="Toggle activity of selected tasks", permissions=["change"])
    def toggle_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        super().toggle_tasks(request, queryset)

    @admin.action(description="Run selected tasks", permissions=["change"])
    def run_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        super().run_tasks(request, queryset)


# --- The operator's login: users' second factor, locked-out logins ------------------------
# The devices (copier.models.AuthenticatorDevice, RecoveryCodeDevice) have no admin: a
# superuser resets a user's second factor from the users' list instead (or `manage.py
# copier_reset_2fa`), recorded in the audit log.
admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class CopierUserAdmin(AuditedAdmin, UserAdmin):
    """Users, audited: who made whom a superuser or staff, (de)activated them, put them in
    which groups or gave them which permissions, changed their password (as "changed",
    never the hash); the password page's change too (it reads the user through
    `get_object` and logs through `log_change`, as the change form does)."""

    list_display = ("username", "email", "first_name", "last_name", "is_staff", "two_factor")
    actions = ["reset_second_factor"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        confirmed = AuthenticatorDevice.objects.filter(user=OuterRef("pk"), confirmed=True)
        return super().get_queryset(request).annotate(has_totp=Exists(confirmed))

    @admin.display(description="two-factor", boolean=True, ordering="has_totp")
    def two_factor(self, obj: Any) -> bool:
        return bool(getattr(obj, "has_totp", False))

    def has_reset_second_factor_permission(self, request: HttpRequest) -> bool:
        """A superuser's alone: whoever resets a second factor can then enrol a device of
        their own for that user (a permission would be one more way to take an account)."""
        return bool(request.user.is_active and request.user.is_superuser)

    @admin.action(description="Reset two-factor login (remove the app and recovery codes)",
                  permissions=["reset_second_factor"])
    def reset_second_factor(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for user in queryset:
            removed = second_factor.second_factor_reset(user=user, by=request.user)
            self.message_user(request, f"Two-factor login reset for {user.get_username()}: "
                              f"{removed} device(s) removed; the next login asks for no code"
                              + (" and then for a new enrolment" if
                                 second_factor.enrolment_required(user) else "") + ".",
                              messages.SUCCESS if removed else messages.INFO)


@admin.register(Group)
class CopierGroupAdmin(AuditedAdmin, GroupAdmin):
    """Groups, audited: a group's permissions decide who may trade (and who must enrol a
    second factor), so each added or removed one is an entry."""


@admin.register(AccessAttempt)
class LoginAttemptAdmin(admin.ModelAdmin):
    """Failed logins counted per user and address (django-axes): read-only; an unlock
    clears them through copier.services.lockout, recorded in the audit log."""

    list_display = ["username", "ip_address", "failures_since_start", "attempt_time",
                    "user_agent"]
    search_fields = ["username", "ip_address"]
    ordering = ["-attempt_time"]
    fields = ("username", "ip_address", "user_agent", "failures_since_start", "attempt_time",
              "path_info")
    readonly_fields = fields
    actions = ["unlock"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # an unlock, recorded, not a delete

    def has_unlock_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("axes.delete_accessattempt")

    @admin.action(description="Unlock (clear these failed logins)", permissions=["unlock"])
    def unlock(self, request: HttpRequest, queryset: QuerySet[AccessAttempt]) -> None:
        pairs = sorted(set(queryset.values_list("username", "ip_address")))
        cleared = sum(lockout.login_unlock(username=name or None, ip=ip or None,
                                           by=request.user) for name, ip in pairs)
        self.message_user(request, f"{cleared} failed-login record(s) cleared: "
                          + ", ".join(f"{name or '?'} from {ip or '?'}" for name, ip in pairs),
                          messages.SUCCESS)
