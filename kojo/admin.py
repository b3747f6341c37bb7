"""Admin: job types are edited here; jobs, their changelog and servers are shown read-only, because
every change of a job goes through the state machine."""

from __future__ import annotations

from django import forms
from django.contrib import admin

from kojo.models import Job, JobStateChange, JobType, Server
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
            "timeout", "max_attempts", "retry_backoff", "retry_interval", "retry_jitter",
            "auto_delete_interval_duration",
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


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    list_display = ("id", "job_type", "state", "importance", "start_after", "attempts", "host", "progress")
    list_filter = ("state", "job_type")
    list_select_related = ("job_type",)
    search_fields = ("=id",)
    show_full_result_count = False
    inlines = [JobStateChangeInline]


@admin.register(Server)
class ServerAdmin(ReadOnlyAdmin):
    list_display = ("id", "host", "pid", "mode", "concurrency", "started_at", "heartbeat_at", "stopping")
