"""Admin for trading accounts: connection and pause state, positions, sim controls.

The accounts app's tables, registered by the console (copier.console.apps): they use its
helpers and the audit log, which the accounts app, a floor below, may not import.

Credentials are write-only here: the form never renders the stored secret,
a blank field keeps it, and a view-only page says whether one is set.

The sim controls (a fill at the sim broker, an outage, a restore) act at the
broker only, never on the copier: the copier learns of them from the account's
stream in `copier_listen`, as it would of a venue's fill or outage. They act at the
broker: they need `brokers.change_simaccount`, the permission that already
guards the sim's fault switches, whatever the user may do to the account; a
permission of their own would split one right (acting at the sim) in two.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import path, reverse
from django.utils.html import format_html

from accounts.credentials import credential_fieldsets, trading_account_form
from accounts.models import Position, TradingAccount
from accounts.symbols import normalise_symbol
from brokers.base import BrokerError, venue_text
from brokers.registry import adapter_for
from copier.console.audit import AuditedAdmin
from copier.console.decisions import changelist_url, links
from copier.console.display import time_display
from copier.domain import rules
from copier.models import SIDE_CHOICES, AuditEntry
from copier.services.audit import audit_record

SUMMARY = 400  # the longest connection test message shown


class PositionInline(admin.TabularInline):
    model = Position
    readonly_fields = ("symbol", "qty", "last_event_id", "updated_at")
    fields = readonly_fields
    extra = 0
    can_delete = False
    verbose_name_plural = "positions (the copier's confirmed view)"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class SimFillForm(forms.Form):
    symbol = forms.CharField(max_length=32, initial="MNQ")
    side = forms.ChoiceField(choices=SIDE_CHOICES)
    # A trade by hand is an order: the copier's own bound of one order's size.
    qty = forms.IntegerField(min_value=1, max_value=rules.MAX_ORDER_QTY, initial=1)

    def clean_symbol(self) -> str:
        try:
            return normalise_symbol(self.cleaned_data["symbol"])
        except ValidationError as exc:
            raise forms.ValidationError(exc.messages[0]) from None


@admin.register(TradingAccount)
class TradingAccountAdmin(AuditedAdmin, admin.ModelAdmin):
    form = trading_account_form()
    # "healthy" reads the right way round (a tick is good); the pause's reason beside it.
    list_display = ["name", "broker", "connection", "healthy", "pause_reason", "paused",
                    "last_error", "related"]
    list_filter = ["broker", "connection_state", "copy_paused"]
    search_fields = ["name", "external_id"]
    readonly_fields = ["connection_state", "connection_changed_at", "last_connected_at",
                       "last_disconnected_at", "last_error", "copy_paused", "pause_reason",
                       "pause_details", "paused_since", "compare_pending_since", "created_at"]
    inlines = [PositionInline]
    actions = ["connection_test", "sim_outage", "sim_restore"]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        """The login per broker kind, write-only; a view-only page says only whether one is
        set, and the state fields follow."""
        main = ["name", "broker", "external_id"]
        state = [f for f in self.readonly_fields]
        if not self.has_change_permission(request, obj):
            return [(None, {"fields": [*main, "credentials_status", *state]})]
        return [(None, {"fields": main}), *credential_fieldsets(obj),
                ("State", {"fields": state})] if obj else [
            (None, {"fields": main}), *credential_fieldsets(obj)]

    @admin.display(description="connection", ordering="connection_state")
    def connection(self, obj: TradingAccount) -> str:
        since = time_display(obj.connection_changed_at) if obj.connection_changed_at else ""
        return format_html('<span class="conn {}" title="since {}">{}</span>',
                           obj.connection_state, since, obj.get_connection_state_display())

    @admin.display(description="healthy", boolean=True)
    def healthy(self, obj: TradingAccount) -> bool:
        """Connected and not paused: copying can reach it."""
        return obj.is_connected and not obj.copy_paused

    @admin.display(description="paused since", ordering="paused_since")
    def paused(self, obj: TradingAccount) -> str:
        return time_display(obj.paused_since) if obj.copy_paused else "-"

    @admin.display(description="see")
    def related(self, obj: TradingAccount) -> str:
        return links([
            (changelist_url("copier.decision", account__id__exact=obj.pk), "decisions"),
            (changelist_url("copier.order", account__id__exact=obj.pk), "orders"),
            (changelist_url("copier.quarantine", account__id__exact=obj.pk), "quarantines"),
            (changelist_url("copier.leaderevent", account__id__exact=obj.pk), "leader events"),
        ])

    @admin.display(description="credentials")
    def credentials_status(self, obj: TradingAccount) -> str:
        return "set" if obj.credentials else "not set"

    @admin.action(description="test the broker connection (log in, list positions)",
                  permissions=["change"])
    def connection_test(self, request: HttpRequest,
                        queryset: QuerySet[TradingAccount]) -> None:
        """Log in with the stored login and say what the venue shows, or exactly what failed.

        Sends no order; a person checks a new account here before copying to it. What it
        says is the adapter's summary (a status, a short known text), cut short again
        here: never an answer's body, which could be another service's page.
        """
        for account in queryset:
            try:
                summary = adapter_for(account).connection_test()
            except BrokerError as exc:
                self.message_user(request, f"{account}: {venue_text(exc.message, SUMMARY)}",
                                  messages.ERROR)
                outcome = "failed"
            else:
                self.message_user(request, f"{account}: {venue_text(summary, SUMMARY)}",
                                  messages.SUCCESS)
                outcome = "succeeded"
            # the venue's answer is not kept: it may name what the login can see
            audit_record(by=request.user, action=AuditEntry.Action.CONNECTION_TEST,
                         obj=account, detail=f"connection test {outcome}")

    def has_sim_control_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """A sim fill on a leader is copied to its followers: it trades, as a leader would."""
        return request.user.has_perm("brokers.change_simaccount")

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra_context = {**(extra_context or {}),
                         "can_sim_control": self.has_sim_control_permission(request)}
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self) -> list[Any]:
        return [
            path("<int:pk>/sim-fill/", self.admin_site.admin_view(self.sim_fill_view),
                 name="accounts_tradingaccount_sim_fill"),
            *super().get_urls(),
        ]

    def _sim_accounts(self, request: HttpRequest, queryset: QuerySet[TradingAccount]
                      ) -> list[TradingAccount]:
        sims = list(queryset.filter(broker="sim"))
        if len(sims) < queryset.count():
            self.message_user(request, "Only sim accounts can be switched off and on here.",
                              messages.WARNING)
        return sims

    @admin.action(description="sim: simulate a broker outage", permissions=["sim_control"])
    def sim_outage(self, request: HttpRequest, queryset: QuerySet[TradingAccount]) -> None:
        self._set_reachable(request, queryset, reachable=False)

    @admin.action(description="sim: restore the broker connection",
                  permissions=["sim_control"])
    def sim_restore(self, request: HttpRequest, queryset: QuerySet[TradingAccount]) -> None:
        self._set_reachable(request, queryset, reachable=True)

    def _set_reachable(self, request: HttpRequest, queryset: QuerySet[TradingAccount], *,
                       reachable: bool) -> None:
        """A fault at the sim broker, nothing more: the account's listener sees its stream
        drop (or come back) as it would at a real venue, and says so on the account."""
        from brokers.sim import SimBroker

        for account in self._sim_accounts(request, queryset):
            SimBroker(account).set_reachable(reachable)
            audit_record(by=request.user, action=AuditEntry.Action.SIM_CONTROL, obj=account,
                         detail="sim broker reachable again" if reachable
                         else "sim broker outage simulated")
            if not reachable:
                self.message_user(request, f"{account}: sim broker unreachable; the listener "
                                           "marks the account disconnected", messages.WARNING)
            elif account.copy_paused:
                # reachable, but copying does not resume until the pause heals
                self.message_user(
                    request, f"{account}: sim broker reachable again, but the account is "
                             f"still PAUSED ({account.pause_reason or 'positions changed'}): "
                             "nothing is copied to it until its positions match the "
                             "leader's", messages.ERROR)
            else:
                self.message_user(request, f"{account}: sim broker reachable again; the "
                                           "listener reconnects the account and compares "
                                           "its positions", messages.SUCCESS)

    def sim_fill_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """A trade at the sim broker on this account: the leader's, or a manual one.

        It reaches the copier the way a venue's fill does, through the account's stream
        in `copier_listen`; nothing here copies it.
        """
        from brokers.sim import SimBroker

        if not self.has_sim_control_permission(request):  # admin_view checks only is_staff
            raise PermissionDenied
        account = get_object_or_404(TradingAccount, pk=pk, broker="sim")
        form = SimFillForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            SimBroker(account).execute_fill(data["symbol"], data["side"], data["qty"])
            audit_record(by=request.user, action=AuditEntry.Action.SIM_CONTROL, obj=account,
                         detail=f"sim fill {data['side']} {data['qty']} {data['symbol']}")
            self.message_user(request, f"{account}: {data['side']} {data['qty']} "
                                       f"{data['symbol']} filled at the sim broker; the "
                                       f"listener takes it off the account's stream")
            return HttpResponseRedirect(
                reverse("admin:accounts_tradingaccount_change", args=[pk]))
        context = {**self.admin_site.each_context(request), "form": form, "account": account,
                   "title": f"Sim fill on {account}", "opts": self.model._meta}
        return render(request, "admin/accounts/sim_fill.html", context)
