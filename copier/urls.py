"""URLs: the admin is the operator's interface; /healthz is for load balancers, /metrics
for Prometheus."""

from django.contrib import admin
from django.urls import path

from copier.metrics import metrics_view
from copier.views import healthz

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    # Prometheus: a bearer token (COPIER_METRICS_TOKEN) or loopback only (copier.metrics)
    path("metrics", metrics_view, name="metrics"),
    path("", admin.site.urls),
]
