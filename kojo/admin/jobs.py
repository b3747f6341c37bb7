"""Jobs: read-only rows with their changelog and dependencies; every action goes through kojo.control,
so through the state machine."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe

from kojo import control
from kojo.admin.common import ReadOnlyAdmin, report
from kojo.exceptions import DependencyFailed, IllegalTransition, WaitingLimitReached
from kojo.explain import explain
from kojo.listing import CappedPaginator, search_jobs
from kojo.models import Job, JobDependency, JobStateChange
from kojo.states import JobState


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
    readonly_fields = ("why_not_running", "attempts_by_outcome")

    def get_fields(self, request, obj=None):
        """The explanation first: it is what an operator opens a waiting job's page for."""
        shown = [name for name in super().get_fields(request, obj) if name not in self.readonly_fields]
        return ["why_not_running", "attempts_by_outcome", *shown] if obj is not None else shown

    @admin.display(description="attempts by outcome")
    def attempts_by_outcome(self, job: Job) -> str:
        """Counted from the changelog: times crashed, timed out, retried, held..."""
        counts = job.outcome_counts()
        return ", ".join(f"{outcome} {n}" for outcome, n in counts.items()) or "none ended yet"

    @admin.display(description="why not running")
    def why_not_running(self, job: Job) -> str:
        """kojo.explain: the claim's rules asked of this job, first blocker first."""
        explanation = explain(job.pk)
        if explanation.state != JobState.WAITING and not explanation.notes:
            return explanation.blockers[0]
        lines = explanation.blockers or ["nothing keeps it from being claimed"]
        return format_html_join(mark_safe("<br>"), "{}", ([line] for line in lines + explanation.notes))

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
            except (IllegalTransition, DependencyFailed, WaitingLimitReached) as error:
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
