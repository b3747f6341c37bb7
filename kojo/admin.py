"""Admin: job types are edited here; jobs, their changelog and servers are shown read-only, because
every change of a job goes through the state machine."""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import display_for_value
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.timesince import timeuntil

from kojo import control, fleet, validators
from kojo.conf import settings
from kojo.cron import describe_cron, next_ticks
from kojo.exceptions import IllegalTransition, KojoError
from kojo.listing import CappedPaginator, search_jobs
from kojo.models import Job, JobDependency, JobStateChange, JobType, Recurrence, Server
from kojo.recurrence import DEFINITION, interval_text, save_definition
from kojo.registry import registry
from kojo.scheduling import clean_importance, clean_params, schedule


class WorkerField(forms.ChoiceField):
    """A select of the registered workers that refuses anything else with the shared validator's message."""

    def validate(self, value):
        forms.Field.validate(self, value)
        if value:
            validators.validate_worker(value)


class BoundedJSONField(forms.JSONField):
    """JSON nested too deeply for the parser is a form error, not a RecursionError (a server error)."""

    too_deep = "This JSON is nested too deeply."

    def to_python(self, value):
        try:
            return super().to_python(value)
        except RecursionError:
            raise ValidationError(self.too_deep, code="invalid") from None

    def bound_data(self, data, initial):
        try:
            return super().bound_data(data, initial)
        except RecursionError:
            return forms.fields.InvalidJSONInput(data)

    def prepare_value(self, value):
        """Django writes the JSON back unescaped; a lone surrogate (sent as \\ud800) could not be encoded
        into the page, so such text is shown escaped."""
        text = super().prepare_value(value)
        try:
            text.encode()
        except UnicodeEncodeError:
            text = json.dumps(value, cls=self.encoder)
        return text


class JobTypeForm(forms.ModelForm):
    """The worker is picked from the registered workers; the model's validators (shared with the
    registrar and the system checks) check every other field, so the admin shows their messages."""

    worker = WorkerField(choices=())

    class Meta:
        model = JobType
        fields = [
            "type_code", "name", "worker", "is_enabled", "queue", "cron_expression", "default_importance",
            "can_work_in_parallel", "schedule_limit", "schedule_limit_allowance", "auto_complete_success",
            "timeout", "max_attempts", "retry_backoff", "retry_interval", "retry_jitter", "retry_on",
            "readiness", "auto_delete_interval_duration",
        ]
        field_classes = {"readiness": BoundedJSONField}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["worker"].choices = [(path, path) for path in sorted(registry.workers)]
        self.fields["worker"].help_text = JobType._meta.get_field("worker").help_text
        if "default_importance" in self.fields:
            self.fields["default_importance"].validators.append(validators.validate_importance)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


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
    )
    list_filter = ("is_enabled", "can_work_in_parallel", "queue")
    search_fields = ("type_code", "name", "worker")
    readonly_fields = ("cron_in_words", "next_runs")
    actions = ["enable", "disable", "schedule_now"]
    fieldsets = (
        (None, {"fields": ("type_code", "name", "worker", "is_enabled", "queue")}),
        (
            "Scheduling",
            {
                "fields": (
                    "cron_expression",
                    "cron_in_words",
                    "next_runs",
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

    @admin.display(description="cron (UTC)", ordering="cron_expression")
    def cron(self, job_type: JobType) -> str:
        if not job_type.cron_expression:
            return "-"
        runs = upcoming(job_type.cron_expression, 1)
        return format_html(
            '<code>{}</code><br><span class="quiet">{}; next {}</span>',
            job_type.cron_expression,
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
        runs = upcoming(job_type.cron_expression, 5) if job_type and job_type.cron_expression else []
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


def upcoming(expression: str, count: int) -> list[str]:
    """The next ``count`` ticks of a cron expression as "2025-01-02 03:00 UTC (in 5 hours)"; none if the
    stored expression does not parse (the form refuses such values; a row written elsewhere may not)."""
    now = timezone.now()
    try:
        ticks = next_ticks(expression, now, count)
    except (ValueError, KeyError, TypeError):
        return []
    return [f"{tick:%Y-%m-%d %H:%M} UTC (in {timeuntil(tick, now)})" for tick in ticks]


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def report(model_admin, request, verb: str, done: list[str], refused: list[str]) -> None:
    """One message for what was done and one listing each refusal with its reason."""
    if done:
        model_admin.message_user(request, f"{verb} {', '.join(done)}.", messages.SUCCESS)
    if refused:
        model_admin.message_user(request, f"Refused {'; '.join(refused)}.", messages.WARNING)
    if not done and not refused:
        model_admin.message_user(request, "Nothing was selected.", messages.INFO)


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


# Most jobs one admin action handles; "select all" over a big filtered list is refused, not run.
ACTION_LIMIT = 1000


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    """Jobs are read-only; actions move them through ``kojo.control``, as the public API does.

    The list stays fast on a million rows: no full COUNT (a capped paginator, no total, no facets),
    filters on indexed columns, related rows joined in the page query, sorting by id only (any other
    column would sort the whole table), and search by id or params containment only.
    """

    list_display = (
        "id", "job_type", "state", "importance", "start_after", "attempts", "server", "host", "progress",
    )
    list_filter = ("state", "job_type", "server")
    list_select_related = ("job_type", "server")
    search_fields = ("=id",)
    search_help_text = (
        'A job id (123), or params: key=value (the value read as JSON, so n=3 is a number and n="3" text), '
        'or a JSON object such as {"user": 7, "kind": "full"}.'
    )
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = CappedPaginator
    sortable_by = ("id",)
    actions = ["run_now", "cancel", "abort", "retry", "hold", "release"]
    inlines = [JobDependencyInline, JobStateChangeInline]

    def get_search_results(self, request, queryset, search_term):
        return search_jobs(queryset, search_term), False

    def has_control_permission(self, request) -> bool:
        """Moving jobs takes the change permission on jobs, although no job row is edited by hand."""
        return request.user.has_perm(f"{self.opts.app_label}.{get_permission_codename('change', self.opts)}")

    def control(self, request, queryset, operation, verb: str) -> None:
        """Run ``operation`` on each selected job as the acting user; report what was done and what the
        state machine refused (and why)."""
        ids = sorted(queryset.values_list("pk", flat=True)[: ACTION_LIMIT + 1])
        if len(ids) > ACTION_LIMIT:
            self.message_user(
                request,
                f"More than {ACTION_LIMIT} jobs selected: nothing was done. Narrow the list with filters.",
                messages.ERROR,
            )
            return
        by = request.user.get_username()
        done, handed, refused = [], [], []
        for job_id in ids:
            try:
                result = operation(job_id, by=by)
            except IllegalTransition as error:
                refused.append(str(error))
            else:
                (handed if result is False else done).append(f"job {job_id}")
        if done or refused or not handed:
            report(self, request, verb, done, refused)
        if handed:
            self.message_user(
                request, f"Abort sent to the servers running {', '.join(handed)}.", messages.SUCCESS
            )

    @admin.action(description="Run now (waiting or held jobs)", permissions=["control"])
    def run_now(self, request, queryset):
        self.control(request, queryset, control.run_now, "Set to run now:")

    @admin.action(description="Cancel (waiting or held jobs)", permissions=["control"])
    def cancel(self, request, queryset):
        self.control(request, queryset, control.cancel, "Canceled")

    @admin.action(description="Abort (working jobs, on any server)", permissions=["control"])
    def abort(self, request, queryset):
        self.control(request, queryset, control.abort, "Canceled")

    @admin.action(description="Retry (failed or canceled jobs)", permissions=["control"])
    def retry(self, request, queryset):
        self.control(request, queryset, control.retry, "Retrying")

    @admin.action(description="Hold (waiting jobs)", permissions=["control"])
    def hold(self, request, queryset):
        self.control(request, queryset, control.hold, "Held")

    @admin.action(description="Release (held jobs)", permissions=["control"])
    def release(self, request, queryset):
        self.control(request, queryset, control.release, "Released")


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
    """Params, interval and importance pass the checks ``kojo.recur()`` makes, so a definition saved here
    cannot make occurrences the database refuses (or a zero interval that would divide by zero)."""

    class Meta:
        model = Recurrence
        fields = [
            "known_as", "job_type", "params", "interval", "reference", "base_time", "importance",
            "is_enabled",
        ]
        field_classes = {"params": BoundedJSONField}

    def clean_params(self):
        return as_form_error(clean_params, self.cleaned_data["params"])

    def clean_interval(self):
        return as_form_error(interval_text, self.cleaned_data["interval"])

    def clean_importance(self):
        importance = self.cleaned_data["importance"]
        return None if importance is None else as_form_error(clean_importance, importance)


def as_form_error(clean, value):
    """Run one of the API's cleaners, turning its KojoError into the form's error for the field."""
    try:
        return clean(value)
    except KojoError as error:
        raise ValidationError(str(error), code="invalid") from None


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
