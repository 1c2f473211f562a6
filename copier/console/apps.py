"""The admin, with the copier's site in place of Django's default one (copier.console.site).

The tables of the lower apps are registered here too, by the console's modules
(copier.console.accounts_admin, copier.console.brokers_admin): their admin needs the
console's helpers and the audit log, and accounts/ and brokers/ import nothing of the
copier (tests/test_layering.py). Django's autodiscovery only finds an app's own `admin`.
"""

from django.contrib.admin.apps import AdminConfig


class CopierAdminConfig(AdminConfig):
    default_site = "copier.console.site.CopierAdminSite"

    def ready(self) -> None:
        super().ready()  # autodiscovery: copier.admin, whose read-only base the sim's books use
        from copier.console import accounts_admin, brokers_admin  # noqa: F401
