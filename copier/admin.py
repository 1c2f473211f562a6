"""The operator's interface: groups and followers, quarantines, and the read-only audit
(leader events, the decision taken for each follower and why, orders, failed exits, fills
the copier refused)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import PeriodicTask

from copier.models import (
    AlertConfig,
    CopyGroup,
    Decision,
    FailedExit,
    Follower,
    LeaderEvent,
    Order,
    Quarantine,
    RefusedFill,
)


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


class FollowerInline(admin.TabularInline):
    model = Follower
    formset = FollowerFormSet
    fields = ["account", "multiplier", "enabled"]
    autocomplete_fields = ["account"]
    extra = 1


@admin.register(CopyGroup)
class CopyGroupAdmin(admin.ModelAdmin):
    list_display = ["name", "leader", "reverse", "exit_mode", "enabled", "follower_count"]
    list_filter = ["enabled", "reverse", "exit_mode"]
    search_fields = ["name", "leader__name"]
    list_select_related = ["leader"]
    autocomplete_fields = ["leader"]
    inlines = [FollowerInline]

    @admin.display(description="followers")
    def follower_count(self, obj: CopyGroup) -> int:
        return obj.followers.count()


class AlertConfigForm(forms.ModelForm):
    class Meta:
        model = AlertConfig
        fields = ["group", "emails", "webhook_url", "disconnect_after_seconds", "on_quarantine",
                  "on_pause", "on_abandoned_exit", "on_rejection", "on_disconnect",
                  "on_kill_switch"]
        # one line: the URL, never a text area that invites pasting more
        widgets = {"webhook_url": forms.TextInput(attrs={"size": 80, "autocomplete": "off"}),
                   "emails": forms.Textarea(attrs={"rows": 3})}


@admin.register(AlertConfig)
class AlertConfigAdmin(admin.ModelAdmin):
    """Where a group's alerts go (copier.alerts); a group without one uses the operator's
    addresses from the environment."""

    form = AlertConfigForm
    list_display = ["group", "emails", "disconnect_after_seconds"]
    fieldsets = [
        (None, {"fields": ["group", "emails", "webhook_url", "disconnect_after_seconds"]}),
        ("Alert on", {"fields": ["on_quarantine", "on_pause", "on_abandoned_exit",
                                 "on_rejection", "on_disconnect", "on_kill_switch"]}),
    ]


@admin.register(Follower)
class FollowerAdmin(admin.ModelAdmin):
    list_display = ["account", "group", "multiplier", "enabled"]
    list_filter = ["enabled", "group"]
    search_fields = ["account__name", "group__name"]
    list_select_related = ["account", "group"]
    autocomplete_fields = ["account"]


@admin.register(Quarantine)
class QuarantineAdmin(admin.ModelAdmin):
    list_display = ["account", "symbol", "reason", "detail", "created_at", "lifted_at",
                    "lifted_by"]
    list_filter = ["reason", ("lifted_at", admin.EmptyFieldListFilter)]
    search_fields = ["account__name", "symbol"]
    list_select_related = ["account"]
    readonly_fields = ["account", "symbol", "reason", "detail", "event", "created_at",
                       "lifted_at", "lifted_by"]
    actions = ["lift"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

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
    model = Decision
    readonly_fields = ("account", "reason", "position_before", "expected_before",
                       "expected_after", "position_after", "placed_legs", "detail")
    fields = readonly_fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(LeaderEvent)
class LeaderEventAdmin(AuditAdmin):
    list_display = ["id", "account", "symbol", "side", "qty", "p0", "p1", "source", "status",
                    "received_at", "done_at"]
    list_filter = ["status", "source", "symbol"]
    search_fields = ["fill_id", "account__name"]
    list_select_related = ["account"]
    inlines = [DecisionInline]


@admin.register(Decision)
class DecisionAdmin(AuditAdmin):
    list_display = ["event", "account", "symbol", "reason", "position_before",
                    "expected_before", "expected_after", "position_after", "planned_legs",
                    "placed_legs", "detail"]
    list_filter = ["reason", "symbol"]
    search_fields = ["account__name", "event__fill_id"]
    list_select_related = ["event__account", "account"]


@admin.register(Order)
class OrderAdmin(AuditAdmin):
    list_display = ["client_order_id", "account", "symbol", "side", "qty", "kind", "status",
                    "broker_order_id", "message", "created_at", "completed_at"]
    list_filter = ["status", "kind", "symbol"]
    search_fields = ["client_order_id", "broker_order_id", "account__name"]
    list_select_related = ["account"]


@admin.register(FailedExit)
class FailedExitAdmin(AuditAdmin):
    list_display = ["account", "symbol", "side", "qty", "status", "attempts",
                    "first_failed_at", "next_attempt_at", "last_error"]
    list_filter = ["status", "symbol"]
    search_fields = ["account__name", "symbol"]
    list_select_related = ["account"]


@admin.register(RefusedFill)
class RefusedFillAdmin(AuditAdmin):
    list_display = ["received_at", "account", "fill_id", "reason", "payload"]
    list_filter = ["account"]
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
