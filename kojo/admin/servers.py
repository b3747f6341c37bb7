"""Servers: the live fleet, what each child runs, and the dashboard."""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from kojo import fleet
from kojo.admin.common import ReadOnlyAdmin
from kojo.conf import settings
from kojo.models import Server


@admin.register(Server)
class ServerAdmin(ReadOnlyAdmin):
    """The live fleet: each server's heartbeat and what its children run; the dashboard hangs off it."""

    list_display = (
        "host", "pid", "mode", "concurrency", "heartbeat_age", "alive", "stopping", "started_at", "running",
    )
    list_filter = ("mode", "stopping")
    search_fields = ("host", "=pid")
    change_list_template = "admin/kojo/server/change_list.html"
    # Seconds between automatic reloads of the server list and the dashboard.
    refresh_interval = 5

    @admin.display(description="heartbeat age")
    def heartbeat_age(self, server: Server) -> str:
        return f"{(timezone.now() - server.heartbeat_at).total_seconds():.1f} s"

    @admin.display(boolean=True, description="alive")
    def alive(self, server: Server) -> bool:
        return (timezone.now() - server.heartbeat_at).total_seconds() < settings.HEARTBEAT_TIMEOUT

    @admin.display(description="children and their jobs")
    def running(self, server: Server) -> str:
        children = sorted(
            server.children or [], key=lambda child: (child.get("kind", ""), child.get("pid") or 0)
        )
        if not children:
            return "-"
        return format_html(
            "<ul style=\"margin:0;padding-left:1em\">{}</ul>",
            format_html_join("", "<li>{}</li>", ((self.describe_child(child),) for child in children)),
        )

    @staticmethod
    def describe_child(child: dict) -> str:
        kind, pid, job_id = child.get("kind", "job"), child.get("pid"), child.get("job_id")
        if job_id is None:
            return format_html("{} {}: idle", kind, pid)
        link = reverse("admin:kojo_job_change", args=[job_id])
        type_code = child.get("type_code")
        return format_html('{} {}: <a href="{}">job {}</a> ({})', kind, pid, link, job_id, type_code)

    def get_urls(self):
        dashboard = path(
            "dashboard/", self.admin_site.admin_view(self.dashboard_view), name="kojo_server_dashboard"
        )
        return [dashboard, *super().get_urls()]

    def changelist_view(self, request, extra_context=None):
        extra = {"refresh_interval": self.refresh_interval, **(extra_context or {})}
        return super().changelist_view(request, extra_context=extra)

    def dashboard_view(self, request):
        """Jobs per type and state, the last hour's throughput and failures, servers and held locks."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        view = fleet.snapshot()
        changelist = reverse("admin:kojo_job_changelist")
        states = [(state, f"{changelist}?state__exact={state}") for state in fleet.STATES]
        finished_states = list(next(iter(view.finished.values()), {}))
        context = {
            **self.admin_site.each_context(request),
            "title": "kojo fleet dashboard",
            "opts": self.model._meta,
            "fleet": view,
            "refresh_interval": self.refresh_interval,
            "states": states,
            "job_rows": [
                (code, [counts[state] for state in fleet.STATES]) for code, counts in view.jobs.items()
            ],
            "totals": [view.total(state) for state in fleet.STATES],
            "finished_states": finished_states,
            "window_rows": [
                (
                    code,
                    [counts.get(state, 0) for state in finished_states],
                    ", ".join(f"{n} {outcome}" for outcome, n in view.failures.get(code, {}).items()),
                )
                for code, counts in view.finished.items()
                if any(counts.values()) or view.failures.get(code)
            ],
        }
        return TemplateResponse(request, "admin/kojo/server/dashboard.html", context)
