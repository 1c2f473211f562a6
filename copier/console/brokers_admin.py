"""Admin for the sim broker's books: fault injection is editable, the rest read-only.

The brokers app's tables, registered by the console (copier.console.apps), which holds
the admin's read-only base and audit log; the brokers app imports nothing of the copier.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib import admin
from django.http import HttpRequest

from brokers.models import SimAccount, SimOrder, SimPosition
from copier.admin import AuditAdmin
from copier.console.audit import AuditedAdmin

if TYPE_CHECKING:  # generic in django-stubs only, not at run time
    _ModelAdmin = admin.ModelAdmin[SimAccount]
else:
    _ModelAdmin = admin.ModelAdmin


@admin.register(SimAccount)
class SimAccountAdmin(AuditedAdmin, _ModelAdmin):
    list_display = ["account", "reachable", "fail_next", "reject_next", "timeout_next",
                    "hold_next", "closed"]
    list_select_related = ["account"]
    fields = ["account", "reachable", "fail_next", "reject_next", "timeout_next", "hold_next",
              "closed"]
    readonly_fields = ["account"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(SimPosition)
class SimPositionAdmin(AuditAdmin):
    list_display = ["book", "symbol", "qty"]
    list_select_related = ["book__account"]


@admin.register(SimOrder)
class SimOrderAdmin(AuditAdmin):
    list_display = ["id", "book", "client_order_id", "symbol", "side", "qty", "status",
                    "created_at", "delivered", "missed"]
    list_filter = ["status", "symbol"]
    search_fields = ["client_order_id", "fill_id"]
    list_select_related = ["book__account"]
