"""Optional URLs: ``path("kojo/", include("kojo.urls"))`` serves the Prometheus metrics at kojo/metrics."""

from django.urls import path

from kojo import metrics

app_name = "kojo"

urlpatterns = [path("metrics", metrics.view, name="metrics")]
