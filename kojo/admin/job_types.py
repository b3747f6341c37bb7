"""Job types: the configuration operators edit, with cron in words, its next runs and a
one-click switch."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import display_for_value
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.timesince import timeuntil

from kojo import validators
from kojo.admin.common import BoundedJSONField, WorkerField, plural, report
from kojo.checks import stored_type_errors
from kojo.cron import describe_cron, next_ticks
from kojo.exceptions import KojoError
from kojo.models import Job, JobType
from kojo.registry import registry
from kojo.scheduling import schedule


class JobTypeForm(forms.ModelForm):
    """The worker is picked from the registered workers; the model's validators (shared with the
    registrar and the system checks) check every other field, so the admin shows their messages."""

    worker = WorkerField(choices=())

    class Meta:
        model = JobType
        fields = [
            "type_code", "name", "worker", "is_enabled", "queue", "cron_expression", "cron_timezone",
            "cron_overflow",
            "default_importance",
            "can_work_in_parallel", "schedule_limit", "schedule_limit_allowance", "keep_instances",
            "auto_complete_success",
            "timeout", "max_attempts", "retry_backoff", "retry_interval", "retry_jitter", "retry_on",
            "readiness", "rate_limit", "rate_key", "auto_delete_interval_duration",
        ]
        field_classes = {"readiness": BoundedJSONField}

    def clean_keep_instances(self):
        return self.cleaned_data.get("keep_instances") or 0

    def clean_cron_timezone(self):
        return self.cleaned_data.get("cron_timezone") or "UTC"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["worker"].choices = [(path, path) for path in sorted(registry.workers)]
        self.fields["worker"].help_text = JobType._meta.get_field("worker").help_text
        if "default_importance" in self.fields:
            self.fields["default_importance"].validators.append(validators.validate_importance)
        if "keep_instances" in self.fields:
            self.fields["keep_instances"].required = False  # left empty: none kept


@admin.register(JobType)
class JobTypeAdmin(admin.ModelAdmin):
    """Job types are edited here; the list shows each cron in words with its next run and switches a type
    on or off in one click."""

    form = JobTypeForm
    list_display = (
        "type_code",
        "name",
        "enabled",
        "cron",
        "can_work_in_parallel",
        "schedule_limit",
        "default_importance",
        "queue",
        "problems",
    )
    list_filter = ("is_enabled", "can_work_in_parallel", "queue")
    search_fields = ("type_code", "name", "worker")
    readonly_fields = ("problems", "cron_in_words", "next_runs")
    actions = ["enable", "disable", "schedule_now"]
    fieldsets = (
        (None, {"fields": ("type_code", "name", "worker", "is_enabled", "queue", "problems")}),
        (
            "Scheduling",
            {
                "fields": (
                    "cron_expression",
                    "cron_timezone",
                    "cron_in_words",
                    "next_runs",
                    "cron_overflow",
                    "default_importance",
                    "can_work_in_parallel",
                    "schedule_limit",
                    "schedule_limit_allowance",
                    "keep_instances",
                    "readiness",
                    "rate_limit",
                    "rate_key",
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

    def get_list_display(self, request):
        """Users who may not change types see the flag without the switch."""
        shown = super().get_list_display(request)
        if self.has_change_permission(request):
            return shown
        return tuple("is_enabled" if name == "enabled" else name for name in shown)

    @admin.display(description="enabled", ordering="is_enabled")
    def enabled(self, job_type: JobType) -> str:
        """The flag and its switch: a submit button of the list's own form (which carries the CSRF token),
        posted to the switch view instead of the actions view."""
        return format_html(
            '{} <button type="submit" class="button kojo-switch" formaction="{}" formmethod="post" '
            'name="is_enabled" value="{}">{}</button>',
            display_for_value(job_type.is_enabled, "", boolean=True),
            reverse("admin:kojo_jobtype_set_enabled", args=[job_type.pk]),
            "0" if job_type.is_enabled else "1",
            "Disable" if job_type.is_enabled else "Enable",
        )

    @admin.display(description="problems")
    def problems(self, job_type: JobType | None) -> str:
        """What is wrong with the stored type as it stands (a worker path that no longer imports, a
        value edited outside the admin), as the server logs it at start."""
        if job_type is None or job_type.pk is None:
            return "-"
        found = [message for error in stored_type_errors(job_type) for message in error.messages]
        if not found:
            return "-"
        return format_html('<strong class="kojo-broken">broken:</strong> {}', "; ".join(found))

    @admin.display(description="cron", ordering="cron_expression")
    def cron(self, job_type: JobType) -> str:
        if not job_type.cron_expression:
            return "-"
        runs = upcoming(job_type.cron_expression, 1, job_type.cron_timezone)
        return format_html(
            '<code>{}</code> {}<br><span class="quiet">{}; next {}</span>',
            job_type.cron_expression,
            job_type.cron_timezone,
            describe_cron(job_type.cron_expression),
            runs[0] if runs else "never",
        )

    @admin.display(description="cron in words")
    def cron_in_words(self, job_type: JobType | None) -> str:
        if job_type is None or not job_type.cron_expression:
            return "-"
        return describe_cron(job_type.cron_expression)

    @admin.display(description="next runs")
    def next_runs(self, job_type: JobType | None) -> str:
        if not job_type or not job_type.cron_expression:
            return "-"
        runs = upcoming(job_type.cron_expression, 5, job_type.cron_timezone)
        if not runs:
            return "-"
        items = format_html_join("", "<li>{}</li>", ((run,) for run in runs))
        return format_html('<ol style="margin:0">{}</ol>', items)

    def get_urls(self):
        switch = path(
            "<path:object_id>/enabled/",
            self.admin_site.admin_view(self.set_enabled_view),
            name="kojo_jobtype_set_enabled",
        )
        return [switch, *super().get_urls()]

    def set_enabled_view(self, request, object_id):
        """POST only, CSRF-checked by ``admin_view``, and only for users who may change this type."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        job_type = self.get_object(request, object_id)
        if job_type is None:
            raise Http404(f"no job type with id {object_id!r}")
        if not self.has_change_permission(request, job_type):
            raise PermissionDenied
        wanted = request.POST.get("is_enabled") == "1"
        self.set_enabled(request, JobType.objects.filter(pk=job_type.pk), wanted)
        back = request.META.get("HTTP_REFERER", "")
        if not url_has_allowed_host_and_scheme(back, {request.get_host()}, require_https=request.is_secure()):
            back = reverse("admin:kojo_jobtype_changelist")
        return HttpResponseRedirect(back)

    def set_enabled(self, request, queryset, enabled: bool) -> None:
        """One UPDATE for the types that change, each logged in the admin's history as an edit would be."""
        changing = list(queryset.exclude(is_enabled=enabled))
        JobType.objects.filter(pk__in=[job_type.pk for job_type in changing], is_enabled=not enabled).update(
            is_enabled=enabled, updated_at=timezone.now()
        )
        for job_type in changing:
            self.log_change(request, job_type, [{"changed": {"fields": [ENABLED_LABEL]}}])
        verb = "Enabled" if enabled else "Disabled"
        if changing:
            codes = ", ".join(job_type.type_code for job_type in changing)
            done = f"{verb} {plural(len(changing), 'job type')}: {codes}."
            self.message_user(request, done, messages.SUCCESS)
        else:
            self.message_user(request, f"Nothing to do: already {verb.lower()}.", messages.INFO)

    @admin.action(description="Enable selected job types", permissions=["change"])
    def enable(self, request, queryset):
        self.set_enabled(request, queryset, True)

    @admin.action(description="Disable selected job types", permissions=["change"])
    def disable(self, request, queryset):
        self.set_enabled(request, queryset, False)

    @admin.action(description="Schedule a job of each selected type now", permissions=["schedule"])
    def schedule_now(self, request, queryset):
        """The same ``kojo.schedule()`` views call, so disabled types and full allowances are refused."""
        done, refused = [], []
        for job_type in queryset:
            try:
                job = schedule(job_type.type_code)
            except KojoError as error:
                refused.append(f"{job_type.type_code}: {error}")
            else:
                done.append(f"job {job.pk} ({job_type.type_code})")
        report(self, request, "Scheduled", done, refused)

    def has_schedule_permission(self, request) -> bool:
        return request.user.has_perm(f"{Job._meta.app_label}.{get_permission_codename('add', Job._meta)}")


ENABLED_LABEL = str(JobType._meta.get_field("is_enabled").verbose_name)


def upcoming(expression: str, count: int, timezone_name: str = "UTC") -> list[str]:
    """The next ``count`` ticks of a cron expression as "2025-01-02 03:00 CET (in 5 hours)", in its
    time zone; none if the stored expression or zone does not parse (the form refuses such values; a
    row written elsewhere may not)."""
    now = timezone.now()
    try:
        ticks = next_ticks(expression, now, count, timezone_name)
        local = ZoneInfo(timezone_name or "UTC")
    except (ValueError, KeyError, TypeError, ZoneInfoNotFoundError):
        return []
    return [f"{tick.astimezone(local):%Y-%m-%d %H:%M %Z} (in {timeuntil(tick, now)})" for tick in ticks]
