"""Admin: job types are edited here; jobs, their changelog and servers are shown read-only, because
every change of a job goes through the state machine."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from kojo import fleet
from kojo.conf import settings
from kojo.models import Job, JobDependency, JobStateChange, JobType, Recurrence, Server
from kojo.recurrence import DEFINITION, save_definition
from kojo.registry import registry


class JobTypeForm(forms.ModelForm):
    """The worker is picked from the registered workers; the model's validators (shared with the
    registrar and the system checks) check every other field."""

    worker = forms.ChoiceField(choices=())

    class Meta:
        model = JobType
        fields = [
            "type_code", "name", "worker", "is_enabled", "queue", "cron_expression", "default_importance",
            "can_work_in_parallel", "schedule_limit", "schedule_limit_allowance", "auto_complete_success",
            "timeout", "max_attempts", "retry_backoff", "retry_interval", "retry_jitter", "retry_on",
            "readiness", "auto_delete_interval_duration",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["worker"].choices = [(path, path) for path in sorted(registry.workers)]
        self.fields["worker"].help_text = JobType._meta.get_field("worker").help_text


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(JobType)
class JobTypeAdmin(admin.ModelAdmin):
    form = JobTypeForm
    list_display = (
        "type_code",
        "name",
        "is_enabled",
        "cron_expression",
        "can_work_in_parallel",
        "schedule_limit",
        "default_importance",
        "queue",
    )
    list_filter = ("is_enabled", "can_work_in_parallel", "queue")
    search_fields = ("type_code", "name", "worker")
    fieldsets = (
        (None, {"fields": ("type_code", "name", "worker", "is_enabled", "queue")}),
        (
            "Scheduling",
            {
                "fields": (
                    "cron_expression",
                    "default_importance",
                    "can_work_in_parallel",
                    "schedule_limit",
                    "schedule_limit_allowance",
                    "readiness",
                )
            },
        ),
        (
            "Running",
            {
                "fields": (
                    "auto_complete_success",
                    "timeout",
                    "max_attempts",
                    "retry_backoff",
                    "retry_interval",
                    "retry_jitter",
                    "retry_on",
                )
            },
        ),
        ("Retention", {"fields": ("auto_delete_interval_duration",)}),
    )


class JobStateChangeInline(admin.TabularInline):
    model = JobStateChange
    fields = ("at", "from_state", "to_state", "outcome", "reason", "actor", "attempt")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class JobDependencyInline(admin.TabularInline):
    """The jobs this one waits for, with their states: why a waiting job has not started."""

    model = JobDependency
    fk_name = "job"
    fields = ("depends_on", "depends_on_state")
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name = "runs after"
    verbose_name_plural = "runs after (dependencies)"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("depends_on")

    @admin.display(description="state")
    def depends_on_state(self, dependency):
        return dependency.depends_on.get_state_display()

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    list_display = ("id", "job_type", "state", "importance", "start_after", "attempts", "host", "progress")
    list_filter = ("state", "job_type")
    list_select_related = ("job_type",)
    search_fields = ("=id",)
    show_full_result_count = False
    inlines = [JobDependencyInline, JobStateChangeInline]


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


class RecurrenceForm(forms.ModelForm):
    class Meta:
        model = Recurrence
        fields = [
            "known_as", "job_type", "params", "interval", "reference", "base_time", "importance",
            "is_enabled",
        ]


@admin.register(Recurrence)
class RecurrenceAdmin(admin.ModelAdmin):
    """Recurring jobs; saving a changed definition goes through the same code as ``kojo.recur()``, so
    a waiting occurrence of the old definition is canceled and the next run follows the new one."""

    form = RecurrenceForm
    list_display = (
        "known_as", "job_type", "interval", "reference", "base_time", "next_run_at", "current_job",
    )
    list_filter = ("is_enabled", "job_type")
    list_select_related = ("job_type", "current_job")
    search_fields = ("known_as",)
    readonly_fields = ("next_run_at", "current_job")

    def save_model(self, request, obj, form, change):
        if not change or set(form.changed_data) & set(DEFINITION):
            save_definition(obj)
        else:
            obj.save()
