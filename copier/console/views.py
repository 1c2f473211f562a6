"""The console's pages: the dashboard (first page after login), its two self-refreshing
parts, the follower switch, and the admin's table index at /admin/.

Views only read through the selectors and render; the one write (a follower's switch) is a
POST with CSRF, behind the permission the admin asks for the same change.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponsePermanentRedirect,
    HttpResponseRedirect,
)
from django.shortcuts import get_object_or_404, render
from django.templatetags.static import static
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from copier import clock
from copier.console.display import display_zone_name
from copier.console.latency import SLOW_MS, histogram_svg, latency_windows
from copier.console.selectors import dashboard_groups
from copier.models import AuditEntry, CopyGroup, Follower, Mode
from copier.services import audit, killswitch

log = logging.getLogger(__name__)

# How often the page asks for a fresh grid (ms); the latency panel is cached server-side.
REFRESH_MS = 2500
# The kill switch's admin actions on CopyGroup (copier.services.killswitch), by action name:
# a button shows for each one the CopyGroup admin offers this user, and for no other.
KILL_SWITCH_ACTIONS = ("stop_entries", "resume_entries", "flatten_and_stop")


def _kill_switch_actions(request: HttpRequest) -> list[tuple[str, str]]:
    model_admin = admin.site._registry.get(CopyGroup)
    if model_admin is None:
        return []
    offered = model_admin.get_actions(request)
    return [(name, str(action[2])) for name in KILL_SWITCH_ACTIONS
            if (action := offered.get(name)) is not None]


def _grid_context(request: HttpRequest) -> dict[str, Any]:
    return {
        "panels": dashboard_groups(),
        "can_switch": request.user.has_perm("copier.change_follower"),
        "kill_switch_actions": _kill_switch_actions(request),
        "copygroup_changelist": reverse("admin:copier_copygroup_changelist"),
        "zone_name": display_zone_name(),
        "slow_ms": SLOW_MS,
    }


def _latency_context() -> dict[str, Any]:
    windows = latency_windows(clock.now())
    return {"latency_windows": [(w, histogram_svg(w)) for w in windows], "slow_ms": SLOW_MS}


@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    """Is every follower in sync, and if not, what is wrong and what to click."""
    context = {**admin.site.each_context(request), "title": "Dashboard",
               "refresh_ms": REFRESH_MS, **_grid_context(request), **_latency_context()}
    return render(request, "copier/console/dashboard.html", context)


@require_GET
def dashboard_grid(request: HttpRequest) -> HttpResponse:
    return render(request, "copier/console/_groups.html", _grid_context(request))


@require_GET
def dashboard_latency(request: HttpRequest) -> HttpResponse:
    return render(request, "copier/console/_latency.html", _latency_context())


@require_POST
def follower_enabled(request: HttpRequest, pk: int) -> HttpResponse:
    """Switch a follower's copying on or off: the state asked for, not a flip, so that a
    form sent twice (a double click, a resent POST) leaves what the trader meant.

    Off for a follower that holds positions would strand them (its exits would stop being
    copied): it goes to exits only instead, as the admin's question defaults to, and the
    follower's page offers "off anyway".
    """
    if not request.user.has_perm("copier.change_follower"):
        raise PermissionDenied
    wanted = request.POST.get("enabled")
    if wanted not in {"on", "off"}:
        return HttpResponseBadRequest("enabled must be 'on' or 'off'; nothing changed")
    follower = get_object_or_404(Follower.objects.select_related("account", "group"), pk=pk)
    before = audit.snapshot(follower)
    name = follower.account.name
    held = killswitch.held_positions([follower.account_id]).get(follower.account_id)
    if wanted == "on":
        changed = not follower.enabled or follower.mode != Mode.ACTIVE
        follower.enabled, follower.mode = True, Mode.ACTIVE
        level, text = messages.SUCCESS, (f"{name}: copying on; it starts with the leader's "
                                         "next fill")
    elif held:
        changed = follower.mode != Mode.EXITS_ONLY or not follower.enabled
        follower.enabled, follower.mode = True, Mode.EXITS_ONLY
        level, text = messages.WARNING, (
            f"{name} holds {killswitch.describe_held(held)}: set to exits only, so its exits "
            "still follow the leader until flat (switching it off would leave them unmanaged;"
            " the follower's page can do that anyway, or flatten it)")
    else:
        changed = follower.enabled
        follower.enabled = False
        level, text = messages.WARNING, (f"{name}: copying off; the leader's next fills are "
                                         "not copied to it")
    if changed:
        with transaction.atomic():
            follower.save(update_fields=["enabled", "mode"])
            audit.audit_record(by=request.user, action=AuditEntry.Action.FOLLOWER_SWITCH,
                               obj=follower, detail=f"dashboard switch: {wanted}",
                               changes=audit.changes_between(Follower, before,
                                                             audit.snapshot(follower)))
        log.warning("follower %s switched %s by %s", name, wanted, request.user.get_username(),
                    extra={"follower": name})
    messages.add_message(request, level, text)
    return HttpResponseRedirect(reverse("admin:index"))


def apps_index(request: HttpRequest) -> HttpResponse:
    """/admin/: the admin's list of every table (the dashboard took the site's root)."""
    return admin.site.index(request, extra_context={"title": "All tables"})


def admin_path_redirect(request: HttpRequest, rest: str) -> HttpResponse:
    """/admin/copier/decision/ -> /copier/decision/: the admin lives at the root, and an
    address typed or bookmarked with /admin/ in front still lands on its page."""
    target = "/" + rest
    if request.META.get("QUERY_STRING"):
        target += "?" + request.META["QUERY_STRING"]
    return HttpResponsePermanentRedirect(target)


def favicon(request: HttpRequest) -> HttpResponse:
    """Browsers ask /favicon.ico whatever the page says: answer instead of a 404 a page."""
    return HttpResponsePermanentRedirect(static("copier/favicon.svg"))


