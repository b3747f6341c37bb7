from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    # Prometheus metrics at /kojo/metrics (staff only, or KOJO_METRICS_TOKEN as a bearer token).
    path("kojo/", include("kojo.urls")),
    path("", include("demo.urls")),
]
