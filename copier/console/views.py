"""The console's pages: the dashboard (first page after login), its two self-refreshing
parts, the follower switch, and the admin's table index at /admin/.

Views only read through the selectors and render; the one write (a follower's switch) is a
POST with CSRF, behind the kill-switch permission (it stops and resumes entries) and
recorded through the kill switch. The dashboard shows a part only to a user who may view
what it shows, and says in a sentence what it leaves out.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponsePermanentRedirect,
    HttpResponseRedirect,
)
from django.shortcuts import get_object_or_404, render
from django.templatetags.static import static
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from copier.console.display import display_zone_name
from copier.console.latency import SLOW_MS, histogram_svg, latency_windows
from copier.console.selectors import dashboard_groups
from copier.models import CopyGroup, Follower, Mode
from copier.services import killswitch
from core import clock

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


# What each part of the dashboard shows, the permission it needs, and what a user without
# it reads instead (the model's plural, as the admin names the table).
VIEW_PERMISSIONS = {
    "groups": ("copier.view_copygroup", "copy groups"),
    "followers": ("copier.view_follower", "followers"),
    "accounts": ("accounts.view_tradingaccount", "trading accounts"),
    "positions": ("accounts.view_position", "positions"),
    "quarantines": ("copier.view_quarantine", "quarantines"),
    "exits": ("copier.view_failedexit", "failed exits"),
    "orders": ("copier.view_order", "orders"),
    "decisions": ("copier.view_decision", "decisions"),
}
# What a user without the permission misses there.
HIDDEN_WHAT = {
    "groups": "the copy groups and their followers are not shown",
    "followers": "the followers of each group are not shown",
    "accounts": "the leaders' and followers' accounts (names, connection, pause reasons) "
                "are not shown, nor the follower cards",
    "positions": "what leaders and followers hold is not shown",
    "quarantines": "quarantines are not shown",
    "exits": "exits waiting in the Failed Exit Queue are not shown",
    "orders": "copy latencies are not shown",
    "decisions": "the links to the followers' decisions are not shown",
}


def dashboard_may(request: HttpRequest) -> dict[str, bool]:
    """Which parts of the dashboard this user may see; `details` (the reasons of a row,
    which name positions, quarantines, queued exits and orders) needs all four."""
    may = {part: request.user.has_perm(perm) for part, (perm, _) in VIEW_PERMISSIONS.items()}
    may["cards"] = may["followers"] and may["accounts"]
    may["details"] = all(may[p] for p in ("positions", "quarantines", "exits", "orders"))
    return may


def _hidden(may: dict[str, bool]) -> list[str]:
    """The plain sentences saying what is left out and why."""
    shown = [part for part in VIEW_PERMISSIONS if not may[part]]
    if not may["groups"]:  # nothing of a group is shown: one sentence says so
        shown = [p for p in shown if p in ("groups", "orders")]
    elif not may["cards"]:  # no card: what a card would have shown goes unsaid
        shown = [p for p in shown if p not in ("quarantines", "exits", "decisions")]
    return [f"You do not have permission to view {VIEW_PERMISSIONS[p][1]}: {HIDDEN_WHAT[p]}."
            for p in shown]


def _grid_context(request: HttpRequest) -> dict[str, Any]:
    may = dashboard_may(request)
    return {
        "panels": dashboard_groups() if may["groups"] else [],
        "may": may,
        "hidden": _hidden(may),
        "can_switch": request.user.has_perm("copier.kill_switch"),
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
    """Is every follower in sync, and if not, what is wrong and what to click.

    A user who may see neither the groups nor the orders gets the page's sentences with a
    403: there is nothing on it for them (the admin's tables at /admin/ may still be)."""
    grid = _grid_context(request)
    may = grid["may"]
    context = {**admin.site.each_context(request), "title": "Dashboard",
               "refresh_ms": REFRESH_MS, **grid,
               **(_latency_context() if may["orders"] else {})}
    status = 200 if may["groups"] or may["orders"] else 403
    return render(request, "copier/console/dashboard.html", context, status=status)


@require_GET
def dashboard_grid(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm(VIEW_PERMISSIONS["groups"][0]):
        raise PermissionDenied
    return render(request, "copier/console/_groups.html", _grid_context(request))


@require_GET
def dashboard_latency(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm(VIEW_PERMISSIONS["orders"][0]):
        raise PermissionDenied
    return render(request, "copier/console/_latency.html", _latency_context())


@require_POST
def follower_enabled(request: HttpRequest, pk: int) -> HttpResponse:
    """Switch a follower's copying on or off: the state asked for, not a flip, so that a
    form sent twice (a double click, a resent POST) leaves what the trader meant.

    Off for a follower that holds positions would strand them (its exits would stop being
    copied): it goes to exits only instead, as the admin's question defaults to, and the
    follower's page offers "off anyway". On or off stops or resumes entries: the
    kill-switch permission, and recorded through the kill switch (who, an alert).
    """
    if not request.user.has_perm("copier.kill_switch"):
        raise PermissionDenied
    wanted = request.POST.get("enabled")
    if wanted not in {"on", "off"}:
        return HttpResponseBadRequest("enabled must be 'on' or 'off'; nothing changed")
    follower = get_object_or_404(Follower.objects.select_related("account", "group"), pk=pk)
    name = follower.account.name
    held = killswitch.held_positions([follower.account_id]).get(follower.account_id)
    if wanted == "on":
        to = killswitch.Switch(True, Mode.ACTIVE)
        level, text = messages.SUCCESS, (f"{name}: copying on; it starts with the leader's "
                                         "next fill")
    elif held:
        to = killswitch.Switch(True, Mode.EXITS_ONLY)
        level, text = messages.WARNING, (
            f"{name} holds {killswitch.describe_held(held)}: set to exits only, so its exits "
            "still follow the leader until flat (switching it off would leave them unmanaged;"
            " the follower's page can do that anyway, or flatten it)")
    else:
        to = killswitch.Switch(False, follower.mode)
        level, text = messages.WARNING, (f"{name}: copying off; the leader's next fills are "
                                         "not copied to it")
    try:
        action = killswitch.follower_switch(follower=follower, to=to,
                                            by=request.user.get_username())
    except killswitch.GuardLocked as exc:
        messages.error(request, f"{name}: not switched on: {exc}.")
        return HttpResponseRedirect(reverse("admin:index"))
    if action is not None:
        log.warning("follower %s switched %s by %s (action #%s)", name, wanted,
                    request.user.get_username(), action.pk, extra={"follower": name})
    messages.add_message(request, level, text)
    return HttpResponseRedirect(reverse("admin:index"))


def apps_index(request: HttpRequest) -> HttpResponse:
    """/admin/: the admin's list of every table (the dashboard took the site's root)."""
    return admin.site.index(request, extra_context={"title": "All tables"})


def admin_path_redirect(request: HttpRequest, rest: str) -> HttpResponse:
    """/admin/copier/decision/ -> /copier/decision/: the admin lives at the root, and an
    address typed or bookmarked with /admin/ in front still lands on its page.

    Only to a path of this site: `/admin//evil.example/` (or `%2F`, a backslash, a tab in
    between) would otherwise become `//evil.example/`, another host to a browser. No page of
    the copier starts so; such an address is not found (copier.shell.middleware guards every
    other redirect the same way).
    """
    target = "/" + rest
    if not url_has_allowed_host_and_scheme(target, allowed_hosts=set()) or target[1] in "/\\":
        raise Http404("no such page")
    if request.META.get("QUERY_STRING"):
        target += "?" + request.META["QUERY_STRING"]
    return HttpResponsePermanentRedirect(target)


def favicon(request: HttpRequest) -> HttpResponse:
    """Browsers ask /favicon.ico whatever the page says: answer instead of a 404 a page."""
    return HttpResponsePermanentRedirect(static("copier/favicon.svg"))


