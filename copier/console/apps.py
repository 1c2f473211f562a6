"""The admin, with the copier's site in place of Django's default one (copier.console.site)."""

from django.contrib.admin.apps import AdminConfig


class CopierAdminConfig(AdminConfig):
    default_site = "copier.console.site.CopierAdminSite"
