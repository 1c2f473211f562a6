"""URLs: the admin is the operator's interface; /healthz is for load balancers."""

from django.contrib import admin
from django.urls import path

from copier.views import healthz

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("", admin.site.urls),
]
