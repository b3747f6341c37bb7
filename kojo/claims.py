"""Claiming due jobs: the one place a job goes from waiting to working.

The claim honours, across every server at once, each type's ``schedule_limit``,
``can_work_in_parallel`` and ``rate_limit`` (kojo.rates): candidate rows are locked with ``SKIP
LOCKED`` so servers never wait on each other's candidates, and the row of each limited type is locked
while its working jobs (or recent starts) are counted, so two servers cannot both take the last slot.
A partial unique index on working singleton jobs backs this up in the database. On SQLite (one
machine), the IMMEDIATE transaction mode serialises claims.

Most claims need none of that counting. On PostgreSQL a claim first tries one statement that records
the successes it carries, locks the first due candidates and, if none of their types needs admission
(a limit, a singleton, readiness criteria, a rate), marks them working: one round trip and one
commit. When one does, that statement takes nothing and the full claim below decides, as it does on
SQLite.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import operator
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from django.db import connections, transaction
from django.db.models import (
    BooleanField,
    Case,
    Exists,
    ExpressionWrapper,
    F,
    Model,
    OuterRef,
    Q,
    QuerySet,
    Value,
    When,
)
from django.db.models.functions import Now
from django.utils import timezone

from kojo import lifecycle, rates
from kojo.conf import settings
from kojo.models import Job, JobDependency, JobStateChange, JobType
from kojo.readiness import Buckets, bucket_keys
from kojo.registry import registry
from kojo.shelving import Shelf
from kojo.states import JobState
from kojo.transitions import (
    ReportedSuccess,
    announce,
    change,
    complete_reported,
    complete_reported_ctes,
    succeeded,
)

logger = logging.getLogger(__name__)

# Candidates read per requested job, so a few rows locked by other servers do not leave us empty-handed.
CANDIDATES_PER_SLOT = 4
# Passes over ever wider windows before a claim gives up looking past jobs it cannot take, the most
# rows it reads in all, and the most it passes over without shelving them per job asked for: jobs it
# shelves are read once, but jobs a readiness check keeps waiting are read again by every claim.
MAX_PASSES = 12
MAX_WINDOW = 4096
MAX_READ = 10_000
PASSED_OVER_PER_SLOT = 1024
# One claim in this many (per server or pooled worker) ignores importance and takes the oldest due
# jobs, so that a steady stream of important jobs cannot starve the rest.
OLDEST_FIRST_EVERY = 10
# Seconds a claimer keeps looking for the jobs of a claim that failed: by then it committed or never will.
LOST_CLAIM_WATCH = 60.0


def claim(
    slots: int,
    *,
    server_id: int | None = None,
    host: str = "",
    pid: int | None = None,
    queues: Sequence[str] | None = None,
    oldest_first: bool = False,
    finishing: Sequence[ReportedSuccess] = (),
    prefetch: int = 0,
    token: int | None = None,
    phase: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
    using: str | None = None,
) -> list[Job]:
    """Take up to ``slots`` due jobs for this server and mark them working; return them.

    Order is importance then age; ``oldest_first`` ignores importance, which the server does now and
    then so that a steady stream of important jobs cannot starve the rest. ``finishing`` are successes
    reported by this server's processes, recorded in the same transaction: one commit per round.
    ``prefetch`` lets a pooled worker take up to that many jobs at once to run one after another, but
    only when none of them needs admission (PostgreSQL's one-statement claim). ``token``, chosen by the
    claimer before it sends the claim, is written on every job taken, so that a claimer whose claim
    failed can find what it took after all (``lost_claims``). Each of the claim's transactions runs
    inside ``phase()``: the arbiter bounds their waits there (kojo.server.lease.bounded), one at a
    time, so that locks one takes are never held into the next.
    """
    using = using or settings.DATABASE
    workers = registry.worker_paths()
    if slots <= 0 or not workers:
        with phase():
            complete_reported(list(finishing), using=using)
        return []
    if connections[using].vendor == "postgresql" and time.monotonic() >= full_claims_until.get(using, 0.0):
        with phase():
            jobs = claim_in_one_statement(
                max(slots, prefetch),
                server_id=server_id,
                host=host,
                pid=pid,
                queues=tuple(queues or ()),
                oldest_first=oldest_first,
                workers=workers,
                finishing=finishing,
                token=token,
                using=using,
            )
        if jobs is not None:
            return jobs
        finishing = ()  # recorded by that statement
        full_claims_until[using] = time.monotonic() + FULL_CLAIMS_SECONDS
    queues = tuple(queues or ())
    due_by = timezone.now()
    with phase(), transaction.atomic(using=using):
        complete_reported(list(finishing), using=using)
        admission = Admission(slots, using=using)
        seen: set[int] = set()
        window_size = slots * CANDIDATES_PER_SLOT
        read = kept_waiting = 0
        # Usually one pass. When the window is filled by jobs of types already at their limit, or by
        # jobs not ready yet, look again past them with a wider window, so they cannot hide the
        # claimable jobs behind them. Jobs over a full bucket are shelved as they are met
        # (kojo.shelving): later passes, and later claims, no longer read them.
        for _ in range(MAX_PASSES):
            if not seen and not admission.full:
                rows = first_window(using, queues, oldest_first, workers, window_size, due_by)
            else:
                window = candidate_query(using, queues, oldest_first, workers)
                window = window.filter(start_after__lte=due_by)
                if seen:
                    window = window.exclude(pk__in=seen)
                if admission.full:
                    window = window.exclude(job_type_id__in=admission.full)
                rows = list(window[:window_size])
            read += len(rows)
            shelved_before = len(admission.shelved)
            passed_over = admission.consider(rows)
            # Jobs shelved now are read once; the others would be read again by every claim.
            kept_waiting += passed_over - (len(admission.shelved) - shelved_before)
            seen.update(job.pk for job in rows if job.pk not in admission.shelved)
            admission.shelf.apply()
            if admission.done or len(rows) < window_size or not passed_over:
                break
            if read >= MAX_READ or kept_waiting >= PASSED_OVER_PER_SLOT * slots:
                break
            window_size = min(window_size * 2, MAX_WINDOW)
        admission.shelf.bring_back()
        jobs = []
        if admission.chosen:
            jobs = mark_working(admission, server_id=server_id, host=host, pid=pid, token=token, using=using)
        postponed = admission.postponed
        transaction.on_commit(lambda: lifecycle.postponed(postponed, sender=claim), using=using, robust=True)
    return jobs


def new_token() -> int:
    """A claim's token: random, so no two claims anywhere share one."""
    return secrets.randbits(63)


class UnsureClaims:
    """The tokens of a claimer's claims that failed without an answer. Such a claim may have committed
    (its answer lost on the way back): the jobs it took carry its token, never started, and are the
    claimer's to run; no attempt is charged for the loss and no job that ran is ever given back. A
    token is looked for until the claim can no longer commit (LOST_CLAIM_WATCH)."""

    def __init__(self) -> None:
        self.until: dict[int, float] = {}

    def failed(self, token: int) -> None:
        self.until[token] = time.monotonic() + LOST_CLAIM_WATCH

    def recover(self, *, server_id: int | None, using: str | None = None) -> list[Job]:
        """The jobs those claims took, in claim order; none (and no query) when no claim failed."""
        using = using or settings.DATABASE
        if not self.until:
            return []
        asked_at = time.monotonic()
        jobs = list(
            Job.objects.using(using)
            .select_related("job_type")
            .filter(state=JobState.WORKING, server_id=server_id, claim_token__in=list(self.until))
            .order_by(*claim_order(False))
        )
        for job in jobs:
            logger.warning("job %s: taken by a claim whose answer was lost; running it", job.pk)
            self.until.pop(job.claim_token, None)
        # A token is given up only after a look-up that succeeded once its claim could no longer
        # commit, however long the database was away.
        self.until = {token: until for token, until in self.until.items() if until > asked_at}
        return jobs


@functools.cache
def candidate_query(
    using: str, queues: tuple[str, ...], oldest_first: bool, workers: tuple[str, ...]
) -> QuerySet[Job]:
    """Waiting jobs of enabled types whose dependencies all succeeded, in claim order, locked as read
    and skipping rows other servers hold. Built once per process: servers claim many times a second.

    Only jobs whose worker is one of ``workers``, those registered in this process: during a rolling
    deploy a job of a type only the new code defines waits for a server running that code, rather
    than failing on a server that cannot run it."""
    unmet = JobDependency.objects.filter(job=OuterRef("pk")).exclude(
        depends_on__state=JobState.COMPLETE_SUCCESS
    )
    candidates = (
        Job.objects.using(using)
        .select_related("job_type")
        .filter(state=JobState.WAITING, shelved=False, job_type__is_enabled=True)
        .filter(job_type__worker__in=workers)
        .filter(~Exists(unmet))
    )
    if queues:
        # A job's own queue, else its type's.
        candidates = candidates.filter(
            Q(queue__in=list(queues)) | Q(queue="", job_type__queue__in=list(queues))
        )
    return candidates.order_by(*claim_order(oldest_first)).select_for_update(skip_locked=True, of=("self",))


def claim_order(oldest_first: bool) -> tuple[str, ...]:
    return ("start_after", "id") if oldest_first else ("-importance", "start_after", "id")


def in_claim_order(jobs: list[Job], oldest_first: bool) -> list[Job]:
    """``jobs`` sorted as the candidate query orders them (UPDATE ... RETURNING keeps no order)."""
    for name in reversed(claim_order(oldest_first)):
        field = name.lstrip("-")
        jobs.sort(key=operator.attrgetter(field), reverse=name.startswith("-"))
    return jobs


# The placeholder for "now" in the compiled candidate query, replaced at each claim.
DUE_BY = datetime(2000, 1, 1, tzinfo=UTC)
# Types whose jobs the one-statement claim leaves to the full claim: their working jobs (or recent
# starts) must be counted under the type's row lock first (a limit, a singleton, bucket limits, a rate),
# or a readiness check must run.
NEEDS_ADMISSION = (
    Q(job_type__schedule_limit__gt=0)
    | Q(job_type__can_work_in_parallel=False)
    | Q(job_type__readiness__isnull=False)
    | ~Q(job_type__rate_limit="")
)
# After a one-statement claim found such a job among its candidates, this process's claims take the
# full path for a while instead of trying the statement first each time.
FULL_CLAIMS_SECONDS = 5.0
full_claims_until: dict[str, float] = {}

CLAIM_IN_ONE_STATEMENT = """
WITH {finishing} candidates AS ({candidates}),
{marking}
SELECT (SELECT bool_or(candidates.needs_admission) FROM candidates), {done}, {job_columns}, {type_columns}
FROM (VALUES (1)) AS one
LEFT JOIN (SELECT *, row_number() OVER (PARTITION BY job_type_id) AS nth FROM claimed) AS taken ON true
LEFT JOIN kojo_job_type AS job_type ON job_type.id = taken.job_type_id AND taken.nth = 1
"""


def claim_in_one_statement(
    slots: int,
    *,
    server_id: int | None,
    host: str,
    pid: int | None,
    queues: tuple[str, ...],
    oldest_first: bool,
    workers: tuple[str, ...],
    finishing: Sequence[ReportedSuccess],
    token: int | None,
    using: str,
) -> list[Job] | None:
    """PostgreSQL's common case as one statement, one round trip and one commit: record ``finishing``,
    lock the first ``slots`` due candidates (skipping rows other servers hold) and, when none of their
    types needs admission, mark them working. Returns None, having taken nothing, when one does: the
    full claim decides then.
    """
    now = timezone.now()
    fields = working_fields(now, server_id, host, pid, token)
    candidates, candidate_params = candidate_sql(using, queues, oldest_first, workers, slots)
    params: list[Any] = []
    finishing_ctes, done = "", "NULL, NULL"
    if finishing:
        finishing_ctes, params = complete_reported_ctes(list(finishing))
        finishing_ctes += ","
        done = "(SELECT array_agg(id ORDER BY id) FROM done), "
        done += "(SELECT array_agg(type_code ORDER BY id) FROM done)"
    params += due_by_now(candidate_params, now, using)
    # Only when no candidate needs admission; names qualified, to read unambiguously in the UPDATE.
    chosen = "ARRAY(SELECT candidates.id FROM candidates WHERE NOT "
    chosen += "(SELECT bool_or(candidates.needs_admission) FROM candidates))"
    marking, marking_params = mark_working_ctes(chosen, [], set(), fields, actor_of(host, pid))
    sql = CLAIM_IN_ONE_STATEMENT.format(
        finishing=finishing_ctes,
        candidates=candidates,
        marking=marking,
        done=done,
        job_columns=column_names(Job, "taken"),
        type_columns=column_names(JobType, "job_type"),
    )
    with connections[using].cursor() as cursor:
        cursor.execute(sql, params + marking_params)
        rows = cursor.fetchall()
    needs_admission, done_ids, done_types = rows[0][:3]
    changes = [
        succeeded(pk, type_code) for pk, type_code in zip(done_ids or (), done_types or (), strict=True)
    ]
    # A type's columns come with the first of its jobs only (NULL on the others).
    width = len(Job._meta.concrete_fields)
    rows = [row for row in rows if row[3] is not None]  # none taken: the LEFT JOIN's one empty row
    types = {row[3 + width]: from_row(JobType, row[3 + width :], using) for row in rows if row[3 + width]}
    jobs = []
    for row in rows:
        job = from_row(Job, row[3 : 3 + width], using)
        job.job_type = types[job.job_type_id]
        jobs.append(job)
        changes.append(claimed_change(job))
    announce(changes, using=using)
    return None if needs_admission else in_claim_order(jobs, oldest_first)


@functools.cache
def candidate_sql(
    using: str, queues: tuple[str, ...], oldest_first: bool, workers: tuple[str, ...], slots: int
) -> tuple[str, tuple]:
    """The candidate query as SQL for the one-statement claim: ids of the first ``slots`` due
    candidates, locked, each with whether its type needs admission. Compiled once per process."""
    query = (
        candidate_query(using, queues, oldest_first, workers)
        .filter(start_after__lte=DUE_BY)
        .annotate(needs_admission=ExpressionWrapper(NEEDS_ADMISSION, output_field=BooleanField()))
        .values_list("id", "needs_admission")[:slots]
    )
    sql, params, _ = compile_with_due_by(query, using)
    # The candidates' types share-locked, passing over any being edited: a type edit that commits
    # while this statement runs is read as edited (PostgreSQL reads a locked row's latest version),
    # so it is in force for every claim that commits after it. The ORM cannot say FOR SHARE.
    job_lock = 'FOR UPDATE OF "kojo_job" SKIP LOCKED'
    if not sql.endswith(job_lock):
        raise RuntimeError("the compiled candidate query does not end with its row lock")
    return f'{sql} FOR SHARE OF "kojo_job_type" SKIP LOCKED', params


def compile_with_due_by(query: QuerySet, using: str) -> tuple[str, list[Any], Any]:
    """SQL and parameters of a query filtered on ``DUE_BY``, and its compiler; the placeholder is
    checked to be there once, for ``due_by_now`` to replace."""
    # Compiling a locking query asks for a transaction; nothing is sent to the database.
    with transaction.atomic(using=using):
        compiler = query.query.get_compiler(using)
        sql, params = compiler.as_sql()
    if list(params).count(as_due_by(DUE_BY, using)) != 1:
        raise RuntimeError("the compiled candidate query lost its placeholder for the current time")
    return sql, list(params), compiler


def as_due_by(moment: datetime, using: str) -> Any:
    """``moment`` as the database takes a ``start_after`` parameter (SQLite's is a string)."""
    return Job._meta.get_field("start_after").get_db_prep_value(moment, connections[using])


def due_by_now(params: Sequence[Any], now: datetime, using: str) -> list[Any]:
    placeholder, value = as_due_by(DUE_BY, using), as_due_by(now, using)
    return [value if param == placeholder else param for param in params]


@functools.cache
def window_sql(
    using: str, queues: tuple[str, ...], oldest_first: bool, workers: tuple[str, ...], size: int
) -> tuple[str, list[Any]]:
    """The candidate query of a claim's first pass, compiled once per process: it runs on every claim
    that needs admission, and compiling it cost more than running it."""
    query = candidate_query(using, queues, oldest_first, workers).filter(start_after__lte=DUE_BY)[:size]
    sql, params, compiler = compile_with_due_by(query, using)
    fields = [*Job._meta.concrete_fields, *JobType._meta.concrete_fields]
    if [column.target for column, _, _ in compiler.select] != fields:
        raise RuntimeError("the compiled candidate query does not select a job's and its type's columns")
    return sql, params


def first_window(
    using: str,
    queues: tuple[str, ...],
    oldest_first: bool,
    workers: tuple[str, ...],
    size: int,
    due_by: datetime,
) -> list[Job]:
    """The first ``size`` candidates due by ``due_by``, each with its type, as the ORM would read them."""
    sql, params = window_sql(using, queues, oldest_first, workers, size)
    with connections[using].cursor() as cursor:
        cursor.execute(sql, due_by_now(params, due_by, using))
        rows = cursor.fetchall()
    width = len(Job._meta.concrete_fields)
    types: dict[int, JobType] = {}
    jobs = []
    for row in rows:
        job = from_row(Job, row[:width], using)
        if job.job_type_id not in types:
            types[job.job_type_id] = from_row(JobType, row[width:], using)
        job.job_type = types[job.job_type_id]
        jobs.append(job)
    return jobs


@functools.cache
def column_names(model: type[Model], table: str = "") -> str:
    """The model's concrete columns, in field order, as a SELECT or RETURNING list."""
    prefix = f"{table}." if table else ""
    return ", ".join(f'{prefix}"{field.column}"' for field in model._meta.concrete_fields)


def from_row(model: type[Model], values: Sequence[Any], using: str) -> Model:
    """A model instance from a row of its concrete columns, converted as the ORM would."""
    fields = model._meta.concrete_fields
    converted = []
    for field, value, converters in zip(fields, values, field_converters(model, using), strict=True):
        for converter in converters:
            value = converter(value, field, connections[using])
        converted.append(value)
    return model.from_db(using, [field.attname for field in fields], converted)


def from_column(field: Any, value: Any, *, using: str) -> Any:
    """One column's value converted as the ORM would."""
    for converter in field.get_db_converters(connections[using]):
        value = converter(value, field, connections[using])
    return value


@functools.cache
def field_converters(model: type[Model], using: str) -> list[list]:
    return [field.get_db_converters(connections[using]) for field in model._meta.concrete_fields]


def actor_of(host: str, pid: int | None) -> str:
    return f"{host}:{pid}" if host else ""


def working_fields(
    now: datetime, server_id: int | None, host: str, pid: int | None, token: int | None
) -> dict[str, Any]:
    """What a claim writes on each job it takes, besides the new fence, the attempt and the claim's
    heartbeat (the database's time)."""
    return {
        "state": JobState.WORKING,
        "state_changed_at": now,
        "started_at": now,
        "server_id": server_id,
        "claim_token": token,
        "host": host,
        "pid": pid,
        "progress": None,
        "abort_requested_by": "",
        "bucket": "",
        "shelved": False,
    }


def claimed_change(job: Job) -> dict[str, Any]:
    return change(job.pk, job.job_type.type_code, JobState.WAITING, JobState.WORKING, "", "claimed")


def mark_working(
    admission: Admission, *, server_id: int | None, host: str, pid: int | None, token: int | None, using: str
) -> list[Job]:
    jobs = admission.chosen
    # Stamped after the limits were counted under lock, so the changelog's intervals never overlap
    # beyond a limit even though the candidates were read a moment earlier.
    fields = working_fields(timezone.now(), server_id, host, pid, token)
    actor = actor_of(host, pid)
    write = mark_in_one_statement if connections[using].vendor == "postgresql" else mark_with_orm
    claimed = write([job.pk for job in jobs], admission.singletons, fields, actor, using=using)
    rates.save_windows(list(admission.rates.values()), using=using)
    # Only a claim without row locks (SQLite) can lose a job it chose: keep what was really taken.
    jobs = [job for job in jobs if job.pk in claimed]
    for job in jobs:
        for name, value in fields.items():
            setattr(job, name, value)
        job.attempts, job.singleton, job.fence, job.heartbeat_at, job.started_at = claimed[job.pk]
        job.state_changed_at = job.started_at
    announce([claimed_change(job) for job in jobs], using=using)
    return jobs


def mark_with_orm(
    ids: list[int], singletons: set[int], fields: dict[str, Any], actor: str, *, using: str
) -> dict[int, tuple[int, bool]]:
    """The conditional UPDATE and the changelog rows; returns each job taken: (attempt, singleton,
    fence)."""
    Job.objects.using(using).filter(pk__in=ids, state=JobState.WAITING).update(
        attempts=F("attempts") + 1,
        fence=F("fence") + 1,
        heartbeat_at=Now(),
        singleton=Case(When(job_type_id__in=singletons, then=Value(True)), default=Value(False))
        if singletons
        else False,
        **fields,
    )
    claimed = {
        pk: rest
        for pk, *rest in Job.objects.using(using)
        .filter(pk__in=ids, state=JobState.WORKING, started_at=fields["started_at"], pid=fields["pid"])
        .values_list("pk", "attempts", "singleton", "fence", "heartbeat_at", "started_at")
    }
    JobStateChange.objects.using(using).bulk_create(
        JobStateChange(
            job_id=pk,
            from_state=JobState.WAITING,
            to_state=JobState.WORKING,
            reason=f"claimed (attempt {attempts})",
            actor=actor,
            attempt=attempts,
            at=fields["started_at"],
        )
        for pk, (attempts, *_) in claimed.items()
    )
    return claimed


# The same UPDATE and changelog INSERT as common table expressions, for PostgreSQL: ``{chosen}`` is an
# array of the job ids to take. ``claimed`` returns every column of each job taken. The stamp is one
# time for the whole claim, read once (a materialized CTE) as the statement runs.
MARK_WORKING_CTES = """
claim_stamp AS MATERIALIZED (SELECT clock_timestamp() AS claimed_at),
claimed AS (
    UPDATE kojo_job
    SET state = %s, state_changed_at = claim_stamp.claimed_at, started_at = claim_stamp.claimed_at,
        heartbeat_at = statement_timestamp(),
        server_id = %s, claim_token = %s, host = %s, pid = %s, progress = NULL, abort_requested_by = '',
        bucket = '', shelved = false, attempts = attempts + 1, fence = fence + 1,
        singleton = job_type_id = ANY(%s::bigint[])
    FROM claim_stamp
    WHERE id = ANY({chosen}) AND state = %s
    RETURNING {columns}
),
logged AS (
    INSERT INTO kojo_job_state_change (job_id, from_state, to_state, outcome, reason, actor, attempt, at)
    SELECT id, %s, %s, '', 'claimed (attempt ' || attempts || ')', %s, attempts, started_at FROM claimed
)"""


def mark_working_ctes(
    chosen: str, chosen_params: Sequence[Any], singletons: set[int], fields: dict[str, Any], actor: str
) -> tuple[str, list[Any]]:
    """The SQL of MARK_WORKING_CTES taking the jobs ``chosen`` selects, and its parameters. The jobs
    are stamped by the database's clock once the statement has read them: after their creation
    committed, whatever the claimer's own clock says."""
    waiting, working = JobState.WAITING, JobState.WORKING
    sql = MARK_WORKING_CTES.format(chosen=chosen, columns=column_names(Job, "kojo_job"))
    params = [working, fields["server_id"], fields["claim_token"], fields["host"], fields["pid"]]
    params.append(sorted(singletons))
    return sql, [*params, *chosen_params, waiting, waiting, working, actor]


def mark_in_one_statement(
    ids: list[int], singletons: set[int], fields: dict[str, Any], actor: str, *, using: str
) -> dict[int, tuple[int, bool]]:
    """PostgreSQL holds the chosen rows locked: every one is taken."""
    ctes, params = mark_working_ctes("%s::bigint[]", [ids], singletons, fields, actor)
    with connections[using].cursor() as cursor:
        returned = "id, attempts, singleton, fence, heartbeat_at, started_at"
        cursor.execute(f"WITH {ctes} SELECT {returned} FROM claimed", params)
        return {pk: rest for pk, *rest in cursor.fetchall()}


class Admission:
    """Picks claimable jobs from locked candidates without exceeding any type's fleet-wide limit or
    bucket limit, and only jobs whose readiness criteria hold.

    The row of each limited type is locked (in id order, so servers cannot deadlock) before its working
    jobs are counted: two servers can never both take a type's (or a bucket's) last slot.
    """

    def __init__(self, slots: int, *, using: str):
        self.slots, self.using = slots, using
        self.chosen: list[Job] = []
        self.free: dict[int, int] = {}  # limited type id -> slots left
        self.buckets: dict[int, Buckets] = {}  # type id with readiness criteria -> working per bucket
        self.full: set[int] = set()
        self.singletons: set[int] = set()
        self.shelf = Shelf(using)
        self.shelved: set[int] = set()
        self.readiness: dict[int, Any] = {}  # type id -> its criteria, read under the type's lock
        self.confirmed: set[int] = set()  # types read again under a share lock: still no admission
        self.rates: dict[int, rates.Windows] = {}  # rate-limited type id -> its recent starts
        self.unavailable: set[int] = set()  # types locked by another claimer, disabled or broken
        self.postponed: list[tuple[Job, str]] = []  # due jobs passed over, and why (kojo.lifecycle)
        self.holds_type_locks = False

    @property
    def done(self) -> bool:
        return len(self.chosen) >= self.slots

    def consider(self, rows: list[Job]) -> int:
        """Choose from ``rows`` in order; return how many were passed over (full type or not ready)."""
        new = {job.job_type_id: job.job_type for job in rows if job.job_type_id not in self.counted}
        self.count_limited({pk for pk, job_type in new.items() if is_limited(job_type)})
        self.confirm_unlimited(set(new) - self.counted)
        passed_over = 0
        for job in rows:
            if self.done:
                break
            type_id = job.job_type_id
            if type_id in self.free and self.free[type_id] <= 0:
                self.full.add(type_id)
                passed_over += 1
                if type_id not in self.unavailable:
                    self.postponed.append((job, lifecycle.LIMITED))
                continue
            buckets = self.buckets.get(type_id)
            if self.readiness.get(type_id) and buckets is None:
                buckets = self.buckets[type_id] = Buckets(self.readiness[type_id], ())
            if buckets is not None and not buckets.admits(job.params):
                passed_over += 1
                full = buckets.full_required(job.params) is not None
                self.postponed.append((job, lifecycle.LIMITED if full else lifecycle.NOT_READY))
                if buckets.whole_type_full():
                    self.full.add(type_id)
                elif self.shelf.passed_over(job, buckets):
                    self.shelved.add(job.pk)
                continue
            window = self.rates.get(type_id)
            if window is not None and not window.admits(job.params):
                passed_over += 1
                self.postponed.append((job, lifecycle.RATE_LIMITED))
                if window.whole_type_full():
                    self.full.add(type_id)
                continue
            if type_id in self.free:
                self.free[type_id] -= 1
            if buckets is not None:
                buckets.add(job.params)
            if window is not None:
                window.take(job.params)
            self.shelf.took(job, buckets)
            self.chosen.append(job)
        return passed_over

    @property
    def counted(self) -> set[int]:
        return set(self.free) | set(self.buckets) | set(self.rates) | self.confirmed

    def count_limited(self, type_ids: set[int]) -> None:
        """Count the working jobs of limited types under their rows' locks. Only a claim's first pass
        waits for those locks, taken in id order; a later pass takes at once what it can and passes
        over types another claimer holds, so two claimers never wait on each other in a cycle."""
        if not type_ids:
            return
        later_pass = self.holds_type_locks
        self.holds_type_locks = True
        limits, criteria = {}, {}
        lock = "FOR UPDATE SKIP LOCKED" if later_pass else "FOR UPDATE"
        locked = lock_types(sorted(type_ids), lock, using=self.using)
        for pk in type_ids - {job_type.pk for job_type in locked}:
            self.free[pk] = 0  # held by another claimer right now: none of its jobs this time
            self.unavailable.add(pk)
        rated = []
        for job_type in locked:
            pk = job_type.pk
            if not job_type.is_enabled:
                self.free[pk] = 0  # disabled since the candidates were read
                self.unavailable.add(pk)
                continue
            if job_type.rate_limit:
                if not rates.is_valid(job_type):
                    self.free[pk] = 0  # a rate edited by hand that does not parse: none of its jobs
                    self.unavailable.add(pk)
                    continue
                rated.append(job_type)
            if not job_type.can_work_in_parallel:
                limits[pk] = 1
                self.singletons.add(pk)
            elif job_type.schedule_limit:
                limits[pk] = job_type.schedule_limit
            self.readiness[pk] = job_type.readiness
            if job_type.readiness:
                criteria[pk] = job_type.readiness
        self.rates.update(rates.read_windows(rated, using=self.using))
        counts, params = working_jobs(set(limits) - set(criteria), set(criteria), using=self.using)
        for pk, limit in limits.items():
            self.free[pk] = limit - counts[pk]
        for pk, readiness in criteria.items():
            self.buckets[pk] = Buckets(readiness, params[pk])

    def confirm_unlimited(self, type_ids: set[int]) -> None:
        """Read again, under a share lock, the types whose candidates said their jobs need no count.

        The candidates were read a moment ago: an edit that made a type limited, singleton or disabled
        may have committed since. Read as they are now and share-locked until this claim commits (an
        edit waits for it; it never waits for an edit, whose rows it passes over), a type that now
        needs admission is passed over this time: an edit is in force for every claim that commits
        after it."""
        if not type_ids:
            return
        self.holds_type_locks = True
        for job_type in lock_types(sorted(type_ids), "FOR SHARE SKIP LOCKED", using=self.using):
            if job_type.is_enabled and not is_limited(job_type):
                self.confirmed.add(job_type.pk)
                self.readiness[job_type.pk] = job_type.readiness
        for pk in type_ids - self.confirmed:
            self.free[pk] = 0  # limited or disabled since, or being edited: none of its jobs this time
            self.unavailable.add(pk)


# The claim's statements under the types' locks, written out: they run on every claim of a limited
# type, and compiling them through the ORM each time cost more than running them.


def lock_types(type_ids: list[int], lock: str, *, using: str) -> list[JobType]:
    """The types ``type_ids`` as they are now, their rows locked in id order with ``lock`` (a locking
    clause: SQLite has none, its claims are serialised) until the claim commits."""
    connection = connections[using]
    table = connection.ops.quote_name(JobType._meta.db_table)
    sql = f"SELECT {column_names(JobType)} FROM {table} WHERE id IN ({placeholders(type_ids)}) ORDER BY id"
    if connection.features.has_select_for_update:
        sql += f" {lock}"
    with connection.cursor() as cursor:
        cursor.execute(sql, type_ids)
        return [from_row(JobType, row, using) for row in cursor.fetchall()]


def working_jobs(
    counted: set[int], with_params: set[int], *, using: str
) -> tuple[Counter[int], dict[int, list[dict]]]:
    """How many jobs of each type of ``counted`` and ``with_params`` are working, and the params of
    each working job of the types ``with_params`` (their buckets count them): one statement."""
    parts, args = [], []
    job = connections[using].ops.quote_name(Job._meta.db_table)
    if counted:
        parts.append(
            f"SELECT job_type_id, count(*), NULL FROM {job} WHERE state = %s "
            f"AND job_type_id IN ({placeholders(counted)}) GROUP BY job_type_id"
        )
        args += [JobState.WORKING, *sorted(counted)]
    if with_params:
        parts.append(
            f"SELECT job_type_id, 1, params FROM {job} WHERE state = %s "
            f"AND job_type_id IN ({placeholders(with_params)})"
        )
        args += [JobState.WORKING, *sorted(with_params)]
    counts: Counter[int] = Counter()
    params: dict[int, list[dict]] = defaultdict(list)
    if not parts:
        return counts, params
    convert = functools.partial(from_column, Job._meta.get_field("params"), using=using)
    with connections[using].cursor() as cursor:
        cursor.execute(" UNION ALL ".join(parts), args)
        for type_id, count, job_params in cursor.fetchall():
            counts[type_id] += count
            if type_id in with_params:
                params[type_id].append(convert(job_params))
    return counts, params


def placeholders(values: Sequence[Any] | set[Any]) -> str:
    return ", ".join(["%s"] * len(values))


def is_limited(job_type: JobType) -> bool:
    """Types whose working jobs (or recent starts) must be counted under their row lock before one more
    is claimed."""
    return (
        bool(job_type.schedule_limit)
        or not job_type.can_work_in_parallel
        or bool(job_type.readiness and bucket_keys(job_type.readiness))
        or bool(job_type.rate_limit)
    )
