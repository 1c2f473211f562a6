"""URLs: the dashboard is the first page (/), the admin's tables around it (the admin keeps
the root, so every address it has given out still works; /admin/ lists its tables);
/healthz is for load balancers, /metrics for Prometheus; /login/code/ and /two-factor/
are the second factor's."""

from django.contrib import admin
from django.urls import path, re_path

from copier.console import twofactor
from copier.console import views as console
from copier.metrics import metrics_view
from copier.shell.health import healthz

site = admin.site

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    # Prometheus: a bearer token (COPIER_METRICS_TOKEN) or loopback only (copier.metrics)
    path("metrics", metrics_view, name="metrics"),
    path("favicon.ico", console.favicon, name="favicon"),
    # the dashboard replaces the admin's index; admin_view: staff login, no caching, CSRF
    path("", site.admin_view(console.dashboard), name="dashboard"),
    path("console/groups/", site.admin_view(console.dashboard_grid), name="dashboard_grid"),
    path("console/latency/", site.admin_view(console.dashboard_latency),
         name="dashboard_latency"),
    path("console/followers/<int:pk>/enabled/", site.admin_view(console.follower_enabled),
         name="follower_enabled"),
    # the login's second step and the two-factor pages: reached while a code or an
    # enrolment is still owed, so not behind admin_view (copier.console.twofactor)
    path("login/code/", twofactor.verify, name="otp_verify"),
    path("two-factor/", twofactor.enrol, name="otp_enrol"),
    path("admin/", site.admin_view(console.apps_index), name="admin_tables"),
    re_path(r"^admin/(?P<rest>.+)$", console.admin_path_redirect),
    path("", site.urls),
]
