"""The admin site with a name and an order a trader reads: "Trade copier", the copier's own
sections first, and Django's users and groups with the periodic-task tables of
django-celery-beat gathered under "System" (reachable, out of the way of "Copy groups")."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from copier.services.second_factor import second_factor_owed

# Apps whose models are plumbing: shown together, last, under "System".
SYSTEM_APPS = ("auth", "django_celery_beat", "axes")
SECTION_ORDER = ("copier", "accounts", "brokers")


class CopierAdminSite(admin.AdminSite):
    site_header = "Trade copier"
    site_title = "Trade copier"
    index_title = "All tables"
    # "View site" would lead to the dashboard, which the header links by its own name.
    site_url = None

    def has_permission(self, request: HttpRequest) -> bool:
        """Staff, and through the second factor: a session that still owes a code (or a
        compulsory enrolment) is refused every admin page, whatever led it there
        (copier.shell.middleware.SecondFactorMiddleware redirects it to the page it owes)."""
        if not super().has_permission(request):
            return False
        owed = getattr(request, "copier_second_factor_owed", "unknown")
        if owed == "unknown":
            owed = second_factor_owed(request.user)
        return owed is None

    def get_app_list(self, request: HttpRequest, app_label: str | None = None
                     ) -> list[dict[str, Any]]:
        apps = super().get_app_list(request, app_label)
        if app_label is not None:
            return apps
        own = [a for a in apps if a["app_label"] not in SYSTEM_APPS]
        own.sort(key=lambda a: (SECTION_ORDER.index(a["app_label"])
                                if a["app_label"] in SECTION_ORDER else len(SECTION_ORDER),
                                a["name"]))
        system_models = [
            {**m, "name": f"{m['name']} ({a['name']})" if a["app_label"] != "auth" else m["name"]}
            for a in apps if a["app_label"] in SYSTEM_APPS for m in a["models"]
        ]
        if system_models:
            own.append({"name": "System", "app_label": "system", "app_url": "",
                        "has_module_perms": True, "models": system_models})
        return own
