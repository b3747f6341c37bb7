"""kojo's tables: job types (configuration), jobs, the state changelog and live servers.

The database enforces the invariants that matter under concurrency: one cron job per (type, tick),
one pending job per add-once key, at most one working job of a singleton type, importance and progress
in range. Python validation exists for friendly messages; these constraints make the races harmless.
"""

from __future__ import annotations

from datetime import timedelta

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone

from kojo import validators
from kojo.durations import parse_duration
from kojo.states import PENDING, JobState, Outcome

IMPORTANCE_MIN, IMPORTANCE_MAX = -100, 100


class Backoff(models.TextChoices):
    FIXED = "fixed", "fixed: interval every time"
    LINEAR = "linear", "linear: interval × attempt"
    EXPONENTIAL = "exponential", "exponential: interval × 2^(attempt-1)"


class CronOverflow(models.TextChoices):
    """What a cron tick does when its type is already at its limit."""

    QUEUE = "queue", "queue: the tick's job waits for a free slot"
    SKIP = "skip", "skip: no job for a tick while the type's limit is taken by waiting or working jobs"


class JobType(models.Model):
    """What a kind of job runs and the rules for running it; the row operators tune in the admin."""

    type_code = models.CharField(max_length=100, unique=True, validators=[validators.validate_type_code])
    name = models.CharField(max_length=255)
    worker = models.CharField(
        max_length=255,
        validators=[validators.validate_worker],
        help_text="Dotted path of a registered kojo worker (a function, or Class.method).",
    )
    can_work_in_parallel = models.BooleanField(
        default=True, help_text="Off: at most one job of this type is working anywhere in the fleet."
    )
    default_importance = models.SmallIntegerField(
        default=0, help_text=f"{IMPORTANCE_MIN} to {IMPORTANCE_MAX}; more important jobs are claimed first."
    )
    cron_expression = models.CharField(
        max_length=255,
        blank=True,
        default="",
        validators=[validators.validate_cron],
        help_text="Five-field cron expression, in the time zone below; empty for a type that is only "
        "scheduled from code.",
    )
    cron_timezone = models.CharField(
        max_length=64,
        blank=True,
        default="UTC",
        db_default="UTC",
        validators=[validators.validate_timezone],
        help_text="The time zone the cron expression's times are in (IANA name). When clocks go forward, "
        "a time that does not exist runs at the first minute after the change; when they go back, a "
        "time that happens twice runs once.",
    )
    cron_overflow = models.CharField(
        max_length=8,
        choices=CronOverflow.choices,
        default=CronOverflow.QUEUE,
        validators=[validators.validate_cron_overflow],
        help_text="A tick while as many jobs of this type wait or work as its limit (1 for a singleton) "
        "allows: queue its job behind them, or skip the tick. Without a limit, every tick gets its job.",
    )
    schedule_limit = models.PositiveIntegerField(
        default=0,
        validators=[validators.validate_limit],
        help_text="Most jobs of this type working at once across the fleet; 0 = no limit.",
    )
    schedule_limit_allowance = models.PositiveIntegerField(
        default=0,
        validators=[validators.validate_limit],
        help_text="Most jobs of this type waiting at once; scheduling beyond it is refused. 0 = no limit.",
    )
    keep_instances = models.PositiveIntegerField(
        default=0,
        db_default=0,
        validators=[validators.validate_limit],
        help_text="Housekeeping tops the type up to this many jobs waiting, held or working (a continuous "
        "singleton: 1, with parallel work off). 0 = none kept.",
    )
    is_enabled = models.BooleanField(default=True, help_text="Off: no new jobs are scheduled or claimed.")
    auto_complete_success = models.BooleanField(
        default=True,
        help_text="A job whose worker returns without asking for an ending completes successfully.",
    )
    auto_delete_interval_duration = models.CharField(
        max_length=64,
        default="P7D",
        validators=[validators.validate_duration],
        help_text="ISO 8601 duration a finished job is kept, e.g. P7D or PT0S.",
    )
    timeout = models.CharField(
        max_length=64,
        blank=True,
        default="",
        validators=[validators.validate_duration],
        help_text="ISO 8601 duration after which a working job is stopped and recorded as timed out; "
        "empty = none.",
    )
    max_attempts = models.PositiveSmallIntegerField(
        default=1,
        validators=[validators.validate_max_attempts],
        help_text="Runs a job gets before it ends complete_failed (crashes and timeouts count).",
    )
    retry_backoff = models.CharField(max_length=16, choices=Backoff.choices, default=Backoff.EXPONENTIAL)
    retry_interval = models.CharField(
        max_length=64,
        default="PT10S",
        validators=[validators.validate_duration],
        help_text="ISO 8601 base delay before a retry.",
    )
    retry_jitter = models.BooleanField(default=True, help_text="Spread retries randomly up to the delay.")
    retry_on = models.TextField(
        blank=True,
        default="",
        validators=[validators.validate_exception_classes],
        help_text="Exception classes (dotted paths, comma or line separated) worth another attempt; an "
        "exception of any other class fails the job at once. Empty = retry on any exception.",
    )
    readiness = models.JSONField(
        null=True,
        blank=True,
        validators=[validators.validate_readiness],
        help_text='Extra conditions before a job is claimed, e.g. {"limit": 2, "key": "customer"} (at most '
        'two working per customer), {"check": "app.module.function"}, {"all": [...]} or {"any": [...]}.',
    )
    queue = models.CharField(
        max_length=100, default="default", help_text="Servers may serve chosen queues only."
    )
    # Database defaults, so that servers of an earlier version still insert rows during a rolling deploy.
    rate_limit = models.CharField(
        max_length=32,
        blank=True,
        default="",
        db_default="",
        validators=[validators.validate_rate],
        help_text="At most this many starts in any window, across the fleet: 60/m, 5/s, 1000/h, 10000/d or "
        "100/PT30S. Empty = no rate limit.",
    )
    rate_key = models.CharField(
        max_length=200,
        blank=True,
        default="",
        db_default="",
        validators=[validators.validate_rate_key],
        help_text="Params keys (comma separated) whose values each get a window of their own, e.g. "
        "customer. Empty = one window for the whole type.",
    )
    # The newest cron tick a job was created for; claiming a tick is one conditional UPDATE of this
    # column, so a tick runs once even after its job was pruned.
    last_cron_tick = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "kojo_job_type"
        ordering = ["type_code"]
        constraints = [
            models.CheckConstraint(
                condition=Q(default_importance__gte=IMPORTANCE_MIN, default_importance__lte=IMPORTANCE_MAX),
                name="kojo_job_type_importance_range",
            ),
            models.CheckConstraint(
                condition=Q(max_attempts__gte=1), name="kojo_job_type_max_attempts_positive"
            ),
        ]

    def __str__(self) -> str:
        return self.type_code

    @property
    def effective_limit(self) -> int:
        """Most jobs of this type allowed to work at once (0 = unbounded)."""
        return 1 if not self.can_work_in_parallel else self.schedule_limit

    @property
    def retention(self) -> timedelta:
        return parse_duration(self.auto_delete_interval_duration)

    @property
    def timeout_delta(self) -> timedelta | None:
        return parse_duration(self.timeout) if self.timeout else None


class Job(models.Model):
    # Foreign keys without an index of their own where one below serves (every index is written by
    # every enqueue): job_type leads kojo_job_type_state; server and recurrence get partial indexes,
    # since most jobs have neither when they are created.
    job_type = models.ForeignKey(JobType, on_delete=models.PROTECT, related_name="jobs", db_index=False)
    state = models.CharField(max_length=20, choices=JobState.choices, default=JobState.WAITING)
    params = models.JSONField(default=dict, blank=True)
    importance = models.SmallIntegerField(default=0)
    start_after = models.DateTimeField(default=timezone.now, help_text="The job is not claimed before this.")
    attempts = models.PositiveIntegerField(default=0, help_text="Times a process started this job.")
    # The run token. Every claim moves it on and so does a rescue, and nothing ever moves it back, so
    # each run holds a number no other run of this job had: every write of a run is conditional on it.
    fence = models.PositiveBigIntegerField(default=0, editable=False)
    # Chosen by the claimer before it sends its claim: a claim whose answer was lost finds its jobs by it.
    claim_token = models.BigIntegerField(null=True, blank=True, editable=False)
    max_attempts = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Overrides the type's.")
    # Per-job overrides of the type's; empty: the type's. Database defaults, so that servers of an
    # earlier version still insert rows during a rolling deploy.
    timeout = models.CharField(
        max_length=64, blank=True, default="", db_default="", help_text="Overrides the type's."
    )
    retry_interval = models.CharField(
        max_length=64, blank=True, default="", db_default="", help_text="Overrides the type's."
    )
    retry_backoff = models.CharField(
        max_length=16, blank=True, default="", db_default="", help_text="Overrides the type's."
    )
    queue = models.CharField(
        max_length=100, blank=True, default="", db_default="", help_text="Overrides the type's."
    )
    finish_by = models.DateTimeField(
        null=True,
        blank=True,
        help_text="The job's deadline: as it nears, housekeeping raises the job's importance, and flags it "
        "once it is projected to miss it (kojo.deadlines).",
    )
    # Set once, by housekeeping, when the job was first projected to miss its deadline.
    deadline_at_risk = models.BooleanField(default=False, db_default=False, editable=False)
    # Set when claimed: mirrors the type's can_work_in_parallel=False, so the database can forbid overlap.
    singleton = models.BooleanField(default=False)
    once_key = models.CharField(max_length=128, null=True, blank=True, help_text="Add-once identity.")
    cron_tick = models.DateTimeField(
        null=True, blank=True, help_text="The cron tick this job was created for."
    )
    recurrence = models.ForeignKey(
        "Recurrence",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="occurrences",
        db_index=False,
    )
    server = models.ForeignKey(
        "Server", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs", db_index=False
    )
    host = models.CharField(max_length=255, blank=True, default="")
    pid = models.IntegerField(null=True, blank=True)
    progress = models.PositiveSmallIntegerField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    traceback = models.TextField(blank=True, default="")
    abort_requested_by = models.CharField(max_length=255, blank=True, default="")
    # The database's clock, as the job's start and end are: enqueued <= started <= finished, whatever
    # the clock of the node that scheduled it says.
    created_at = models.DateTimeField(db_default=Now())
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    state_changed_at = models.DateTimeField(default=timezone.now)
    heartbeat_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="The database's time of the claim or the job's latest progress report; the server's "
        "own heartbeat keeps a working job alive.",
    )
    delete_after = models.DateTimeField(null=True, blank=True)
    # A waiting job whose bucket (readiness limit by params key) was full when a claim saw it: the
    # bucket's tag, and whether the job is shelved out of the claim's sight behind the one job of its
    # bucket left in view (kojo.shelving).
    bucket = models.CharField(max_length=32, blank=True, default="", editable=False)
    shelved = models.BooleanField(default=False, editable=False)

    class Meta:
        db_table = "kojo_job"
        ordering = ["-id"]
        indexes = [
            # The claim query: waiting jobs in claim order, shelved ones out of sight.
            models.Index(
                fields=["-importance", "start_after", "id"],
                name="kojo_job_in_sight",
                condition=Q(state=JobState.WAITING, shelved=False),
            ),
            # The claim that now and then ignores importance (oldest first), so nothing starves.
            models.Index(
                fields=["start_after", "id"],
                name="kojo_job_oldest_in_sight",
                condition=Q(state=JobState.WAITING, shelved=False),
            ),
            # Shelved jobs by bucket, in claim order: the next ones to bring back into sight.
            models.Index(
                fields=["job_type", "bucket", "-importance", "start_after", "id"],
                name="kojo_job_shelved",
                condition=Q(shelved=True),
            ),
            # The job left in sight for each bucket with shelved jobs (housekeeping checks it is there).
            models.Index(
                fields=["job_type", "bucket"],
                name="kojo_job_bucket_in_sight",
                condition=Q(state=JobState.WAITING, shelved=False) & ~Q(bucket=""),
            ),
            # Per-type counts (schedule limits, dashboards) and the admin's state filter.
            models.Index(fields=["job_type", "state"], name="kojo_job_type_state"),
            models.Index(fields=["state", "state_changed_at"], name="kojo_job_state_changed"),
            # Orphan rescue and the fleet view: working jobs by server.
            models.Index(
                fields=["server"], name="kojo_job_working_server", condition=Q(state=JobState.WORKING)
            ),
            # A deleted server's or recurrence's jobs (SET NULL), and a recurrence's occurrences.
            models.Index(fields=["server"], name="kojo_job_server", condition=Q(server__isnull=False)),
            models.Index(
                fields=["recurrence"], name="kojo_job_recurrence", condition=Q(recurrence__isnull=False)
            ),
            models.Index(
                fields=["delete_after"], name="kojo_job_delete_after", condition=Q(delete_after__isnull=False)
            ),
            # Jobs with a deadline still to meet, soonest first (housekeeping hurries them).
            models.Index(
                fields=["finish_by"],
                name="kojo_job_deadline",
                condition=Q(finish_by__isnull=False, state__in=[JobState.WAITING, JobState.WORKING]),
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["job_type", "cron_tick"],
                name="kojo_job_one_per_cron_tick",
                condition=Q(cron_tick__isnull=False),
            ),
            models.UniqueConstraint(
                fields=["job_type", "once_key"],
                name="kojo_job_add_once",
                condition=Q(once_key__isnull=False, state__in=sorted(PENDING)),
            ),
            models.UniqueConstraint(
                fields=["job_type"],
                name="kojo_job_singleton_working",
                condition=Q(singleton=True, state=JobState.WORKING),
            ),
            models.CheckConstraint(
                condition=Q(importance__gte=IMPORTANCE_MIN, importance__lte=IMPORTANCE_MAX),
                name="kojo_job_importance_range",
            ),
            models.CheckConstraint(
                condition=Q(progress__isnull=True) | Q(progress__lte=100), name="kojo_job_progress_range"
            ),
        ]

    def __str__(self) -> str:
        return f"job {self.pk} ({self.job_type_id})"

    @property
    def timeout_delta(self) -> timedelta | None:
        """The job's own timeout, else its type's; None for none."""
        timeout = self.timeout or self.job_type.timeout
        return parse_duration(timeout) if timeout else None

    @property
    def effective_queue(self) -> str:
        """The queue servers claim this job from: its own, else its type's."""
        return self.queue or self.job_type.queue

    def outcome_counts(self, using: str | None = None) -> dict[str, int]:
        """How its attempts ended so far, from the changelog: {"crashed": 2, "retry": 1, ...}, in
        Outcome's order, outcomes that never happened left out (Kōjō's times crashed, retried, held)."""
        rows = (
            JobStateChange.objects.using(using or self._state.db)
            .filter(job_id=self.pk)
            .exclude(outcome="")
            .order_by()
            .values_list("outcome")
            .annotate(n=models.Count("id"))
        )
        counted = dict(rows)
        return {outcome: counted[outcome] for outcome in Outcome.values if outcome in counted}

    @property
    def is_finished(self) -> bool:
        from kojo.states import TERMINAL

        return self.state in TERMINAL


class JobStateChange(models.Model):
    """One row per transition: who moved the job, when, from what to what, and why."""

    # Indexed by kojo_change_job, which it leads.
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="changes", db_index=False)
    from_state = models.CharField(max_length=20, choices=JobState.choices, blank=True, default="")
    to_state = models.CharField(max_length=20, choices=JobState.choices)
    outcome = models.CharField(max_length=20, choices=Outcome.choices, blank=True, default="")
    reason = models.TextField(blank=True, default="")
    actor = models.CharField(max_length=255, blank=True, default="", help_text="Who made the change.")
    attempt = models.PositiveIntegerField(default=0)
    at = models.DateTimeField(default=timezone.now)
    # The traceback of the exception that ended this attempt (its tail, at most TRACEBACK_KEPT
    # characters), so every failed attempt keeps its own; the job row has the latest only. A database
    # default, so servers of earlier versions still write rows during a rolling deploy.
    traceback = models.TextField(blank=True, default="", db_default="")

    class Meta:
        db_table = "kojo_job_state_change"
        ordering = ["id"]
        indexes = [models.Index(fields=["job", "id"], name="kojo_change_job")]

    def __str__(self) -> str:
        return f"{self.from_state or 'new'} → {self.to_state}"


class RateWindow(models.Model):
    """The recent starts of one bucket of a rate-limited type (kojo.rates), by the database's clock:
    read and rewritten by the claim under the type's row lock."""

    job_type = models.ForeignKey(JobType, on_delete=models.CASCADE, related_name="+")
    bucket = models.CharField(max_length=32, blank=True, default="")  # "" for the whole type
    starts = models.JSONField(default=list)  # epoch seconds, oldest first, within the window
    last_start = models.DateTimeField()

    class Meta:
        db_table = "kojo_rate_window"
        constraints = [models.UniqueConstraint(fields=["job_type", "bucket"], name="kojo_rate_window_once")]
        indexes = [models.Index(fields=["last_start"], name="kojo_rate_window_last_start")]

    def __str__(self) -> str:
        return f"rate window of {self.job_type_id} {self.bucket or '(whole type)'}"


class Server(models.Model):
    """A running kojo_server process tree. Its heartbeat is the lease on every job it runs: while the row
    is fresh by the database's clock, none of them is rescued."""

    # The mode of the row ``manage.py kojo_run`` keeps for its one job: no server that claims.
    FOREGROUND = "foreground"

    host = models.CharField(max_length=255)
    pid = models.IntegerField()
    mode = models.CharField(max_length=16, default="ondemand")
    concurrency = models.PositiveIntegerField(default=0)
    queues = models.JSONField(default=list, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    # Written with the database's clock and judged with it: the lease on every run this server holds.
    heartbeat_at = models.DateTimeField(default=timezone.now)
    stopping = models.BooleanField(default=False)
    # What each child runs, refreshed with the heartbeat: [{"pid": ..., "job_id": ..., "type_code": ...}].
    children = models.JSONField(default=list, blank=True)
    # The worker paths registered in the server's code: it claims only jobs of types naming one of
    # them. Null for a server of a version before this field, which does not say.
    workers = models.JSONField(null=True, blank=True)

    class Meta:
        db_table = "kojo_server"
        ordering = ["host", "pid"]
        indexes = [models.Index(fields=["heartbeat_at"], name="kojo_server_heartbeat")]

    def __str__(self) -> str:
        return f"server[{self.pid}]@{self.host}"


class LockHold(models.Model):
    """One granted slot of a kojo lock, for ``KOJO_LOCK_BACKEND = "postgres"`` (kojo.locks.postgres):
    its lease is judged by the database's clock, its token drawn from the fencing sequence."""

    name = models.TextField()
    token = models.BigIntegerField(unique=True)
    limit = models.PositiveIntegerField()
    owner = models.JSONField()
    since = models.DateTimeField()
    expires = models.DateTimeField()

    class Meta:
        db_table = "kojo_lock_hold"
        indexes = [models.Index(fields=["name", "expires"], name="kojo_lock_hold_name")]

    def __str__(self) -> str:
        return f"{self.name} token {self.token}"


class JobDependency(models.Model):
    """``job`` may not start before ``depends_on`` completed successfully; if that one fails or is
    canceled, ``job`` is canceled too. Rows are made with the job, so a cycle cannot be formed."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="dependencies")
    depends_on = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="dependents")

    class Meta:
        db_table = "kojo_job_dependency"
        constraints = [
            models.UniqueConstraint(fields=["job", "depends_on"], name="kojo_dependency_once"),
            models.CheckConstraint(condition=~Q(job=models.F("depends_on")), name="kojo_dependency_not_self"),
        ]

    def __str__(self) -> str:
        return f"job {self.job_id} after job {self.depends_on_id}"


class Reference(models.TextChoices):
    END = "end", "end: the previous run's end + interval"
    START = "start", "start: the previous run's start + interval"


class Recurrence(models.Model):
    """A named job repeated by interval: at most one occurrence is pending at a time, and the next is
    due an interval after the previous one started or ended, or at the next point of a grid anchored at
    ``base_time``. Defining the same ``known_as`` again replaces the definition."""

    known_as = models.CharField(max_length=200, unique=True)
    job_type = models.ForeignKey(JobType, on_delete=models.PROTECT, related_name="recurrences")
    params = models.JSONField(default=dict, blank=True)
    interval = models.CharField(
        max_length=64,
        validators=[validators.validate_duration],
        help_text="ISO 8601 duration between runs, e.g. PT15M.",
    )
    reference = models.CharField(max_length=8, choices=Reference.choices, default=Reference.END)
    base_time = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Anchor of a grid: each run starts at the first base_time + k × interval after the "
        "previous run ended (missed points are skipped). Overrides the reference.",
    )
    importance = models.SmallIntegerField(null=True, blank=True, help_text="Empty = the type's default.")
    is_enabled = models.BooleanField(default=True)
    # When the next occurrence is due; empty while an occurrence is pending.
    next_run_at = models.DateTimeField(null=True, blank=True)
    current_job = models.ForeignKey(
        Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "kojo_recurrence"
        ordering = ["known_as"]
        indexes = [
            models.Index(fields=["next_run_at"], name="kojo_recurrence_due", condition=Q(is_enabled=True))
        ]

    def __str__(self) -> str:
        return self.known_as

    @property
    def interval_delta(self) -> timedelta:
        return parse_duration(self.interval)
