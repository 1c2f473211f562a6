"""Admin for trading accounts: connection and pause state, positions, sim controls.

Credentials are write-only here: the form never renders the stored secret,
a blank field keeps it, and a view-only page says whether one is set.

The sim controls (a fill at the sim broker, an outage, a restore) act at the
broker only, never on the copier: the copier learns of them from the account's
stream in `copier_listen`, as it would of a venue's fill or outage. They act at the
broker: they need `brokers.change_simaccount`, the permission that already
guards the sim's fault switches, whatever the user may do to the account. No
permission of its own, because this branch adds no migration.
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

from accounts.credentials import credential_fieldsets, trading_account_form
from accounts.models import Position, TradingAccount
from accounts.symbols import normalise_symbol
from brokers.base import BrokerError
from brokers.registry import adapter_for
from copier.models import SIDE_CHOICES


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
    qty = forms.IntegerField(min_value=1, max_value=10_000, initial=1)

    def clean_symbol(self) -> str:
        try:
            return normalise_symbol(self.cleaned_data["symbol"])
        except ValidationError as exc:
            raise forms.ValidationError(exc.messages[0]) from None


@admin.register(TradingAccount)
class TradingAccountAdmin(admin.ModelAdmin):
    form = trading_account_form()
    list_display = ["name", "broker", "connection_state", "copy_paused", "pause_reason",
                    "paused_since", "last_error"]
    list_filter = ["broker", "connection_state", "copy_paused"]
    search_fields = ["name", "external_id"]
    readonly_fields = ["connection_state", "connection_changed_at", "last_connected_at",
                       "last_disconnected_at", "last_error", "copy_paused", "pause_reason",
                       "pause_details", "paused_since", "created_at"]
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

    @admin.display(description="credentials")
    def credentials_status(self, obj: TradingAccount) -> str:
        return "set" if obj.credentials else "not set"

    @admin.action(description="test the broker connection (log in, list positions)",
                  permissions=["change"])
    def connection_test(self, request: HttpRequest,
                        queryset: QuerySet[TradingAccount]) -> None:
        """Log in with the stored login and say what the venue shows, or exactly what failed.

        Sends no order; a person checks a new account here before copying to it.
        """
        for account in queryset:
            try:
                summary = adapter_for(account).connection_test()
            except BrokerError as exc:
                self.message_user(request, f"{account}: {exc.message}", messages.ERROR)
            else:
                self.message_user(request, f"{account}: {summary}", messages.SUCCESS)

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
            self.message_user(
                request, f"{account}: sim broker " + (
                    "reachable again; the listener reconnects the account and compares "
                    "its positions" if reachable else
                    "unreachable; the listener marks the account disconnected"))

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
            self.message_user(request, f"{account}: {data['side']} {data['qty']} "
                                       f"{data['symbol']} filled at the sim broker; the "
                                       f"listener takes it off the account's stream")
            return HttpResponseRedirect(
                reverse("admin:accounts_tradingaccount_change", args=[pk]))
        context = {**self.admin_site.each_context(request), "form": form, "account": account,
                   "title": f"Sim fill on {account}", "opts": self.model._meta}
        return render(request, "admin/accounts/sim_fill.html", context)
