"""Claiming due jobs: the one place a job goes from waiting to working.

The claim honours, across every server at once, each type's ``schedule_limit`` and
``can_work_in_parallel``: candidate rows are locked with ``SKIP LOCKED`` so servers never wait on each
other's candidates, and the row of each limited type is locked while its working jobs are counted, so
two servers cannot both take the last slot. A partial unique index on working singleton jobs backs
this up in the database. On SQLite (one machine), the IMMEDIATE transaction mode serialises claims.
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from django.db import connections, transaction
from django.db.models import Case, Count, Exists, F, OuterRef, QuerySet, Value, When
from django.utils import timezone

from kojo.models import Job, JobDependency, JobStateChange, JobType
from kojo.readiness import Buckets, bucket_keys
from kojo.states import JobState
from kojo.transitions import ReportedSuccess, announce, change, complete_reported

logger = logging.getLogger(__name__)

# Candidates read per requested job, so a few rows locked by other servers do not leave us empty-handed.
CANDIDATES_PER_SLOT = 4
# Passes over ever wider windows before a claim gives up looking past jobs it cannot take.
MAX_PASSES = 8


def claim(
    slots: int,
    *,
    server_id: int | None = None,
    host: str = "",
    pid: int | None = None,
    queues: Sequence[str] | None = None,
    oldest_first: bool = False,
    finishing: Sequence[ReportedSuccess] = (),
    using: str = "default",
) -> list[Job]:
    """Take up to ``slots`` due jobs for this server and mark them working; return them.

    Order is importance then age; ``oldest_first`` ignores importance, which the server does now and
    then so that a steady stream of important jobs cannot starve the rest. ``finishing`` are successes
    reported by this server's processes, recorded in the same transaction: one commit per round.
    """
    if slots <= 0:
        complete_reported(list(finishing), using=using)
        return []
    candidates = candidate_query(using, tuple(queues or ()), oldest_first).filter(
        start_after__lte=timezone.now()
    )
    with transaction.atomic(using=using):
        complete_reported(list(finishing), using=using)
        admission = Admission(slots, using=using)
        seen: set[int] = set()
        window_size = slots * CANDIDATES_PER_SLOT
        # Usually one pass. When the window is filled by jobs of types already at their limit, or by
        # jobs not ready yet, look again past them with a wider window, so they cannot hide the
        # claimable jobs behind them.
        for _ in range(MAX_PASSES):
            window = candidates
            if seen:
                window = window.exclude(pk__in=seen)
            if admission.full:
                window = window.exclude(job_type_id__in=admission.full)
            rows = list(window[:window_size])
            seen.update(job.pk for job in rows)
            passed_over = admission.consider(rows)
            if admission.done or len(rows) < window_size or not passed_over:
                break
            window_size *= 2
        if not admission.chosen:
            return []
        return mark_working(admission, server_id=server_id, host=host, pid=pid, using=using)


@functools.cache
def candidate_query(using: str, queues: tuple[str, ...], oldest_first: bool) -> QuerySet[Job]:
    """Waiting jobs of enabled types whose dependencies all succeeded, in claim order, locked as read
    and skipping rows other servers hold. Built once per process: servers claim many times a second."""
    unmet = JobDependency.objects.filter(job=OuterRef("pk")).exclude(
        depends_on__state=JobState.COMPLETE_SUCCESS
    )
    candidates = (
        Job.objects.using(using)
        .select_related("job_type")
        .filter(state=JobState.WAITING, job_type__is_enabled=True)
        .filter(~Exists(unmet))
    )
    if queues:
        candidates = candidates.filter(job_type__queue__in=list(queues))
    order = ("start_after", "id") if oldest_first else ("-importance", "start_after", "id")
    return candidates.order_by(*order).select_for_update(skip_locked=True, of=("self",))


def mark_working(
    admission: Admission, *, server_id: int | None, host: str, pid: int | None, using: str
) -> list[Job]:
    jobs = admission.chosen
    # Stamped after the limits were counted under lock, so the changelog's intervals never overlap
    # beyond a limit even though the candidates were read a moment earlier.
    now = timezone.now()
    fields = {
        "state": JobState.WORKING,
        "state_changed_at": now,
        "started_at": now,
        "heartbeat_at": now,
        "server_id": server_id,
        "host": host,
        "pid": pid,
        "progress": None,
        "abort_requested_by": "",
    }
    actor = f"{host}:{pid}" if host else ""
    write = mark_in_one_statement if connections[using].vendor == "postgresql" else mark_with_orm
    claimed = write([job.pk for job in jobs], admission.singletons, fields, actor, using=using)
    # Only a claim without row locks (SQLite) can lose a job it chose: keep what was really taken.
    jobs = [job for job in jobs if job.pk in claimed]
    for job in jobs:
        for name, value in fields.items():
            setattr(job, name, value)
        job.attempts, job.singleton = claimed[job.pk]
    announce(
        [
            change(job.pk, job.job_type.type_code, JobState.WAITING, JobState.WORKING, "", "claimed")
            for job in jobs
        ],
        using=using,
    )
    return jobs


def mark_with_orm(
    ids: list[int], singletons: set[int], fields: dict[str, Any], actor: str, *, using: str
) -> dict[int, tuple[int, bool]]:
    """The conditional UPDATE and the changelog rows; returns each job taken: (attempt, singleton)."""
    Job.objects.using(using).filter(pk__in=ids, state=JobState.WAITING).update(
        attempts=F("attempts") + 1,
        singleton=Case(When(job_type_id__in=singletons, then=Value(True)), default=Value(False))
        if singletons
        else False,
        **fields,
    )
    claimed = {
        pk: (attempts, singleton)
        for pk, attempts, singleton in Job.objects.using(using)
        .filter(pk__in=ids, state=JobState.WORKING, started_at=fields["started_at"], pid=fields["pid"])
        .values_list("pk", "attempts", "singleton")
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
        for pk, (attempts, _) in claimed.items()
    )
    return claimed


# The same UPDATE and changelog INSERT as one statement, for PostgreSQL, whose rows the claim holds
# locked: every chosen job is taken.
MARK_WORKING_SQL = """
WITH claimed AS (
    UPDATE kojo_job
    SET state = %(working)s, state_changed_at = %(now)s, started_at = %(now)s, heartbeat_at = %(now)s,
        server_id = %(server_id)s, host = %(host)s, pid = %(pid)s, progress = NULL,
        abort_requested_by = '', attempts = attempts + 1,
        singleton = job_type_id = ANY(%(singletons)s::bigint[])
    WHERE id = ANY(%(ids)s::bigint[]) AND state = %(waiting)s
    RETURNING id, attempts, singleton
),
logged AS (
    INSERT INTO kojo_job_state_change (job_id, from_state, to_state, outcome, reason, actor, attempt, at)
    SELECT id, %(waiting)s, %(working)s, '', 'claimed (attempt ' || attempts || ')', %(actor)s, attempts,
           %(now)s
    FROM claimed
)
SELECT id, attempts, singleton FROM claimed
"""


def mark_in_one_statement(
    ids: list[int], singletons: set[int], fields: dict[str, Any], actor: str, *, using: str
) -> dict[int, tuple[int, bool]]:
    params = {
        "working": JobState.WORKING.value,
        "waiting": JobState.WAITING.value,
        "now": fields["started_at"],
        "server_id": fields["server_id"],
        "host": fields["host"],
        "pid": fields["pid"],
        "singletons": sorted(singletons),
        "ids": ids,
        "actor": actor,
    }
    with connections[using].cursor() as cursor:
        cursor.execute(MARK_WORKING_SQL, params)
        return {pk: (attempts, singleton) for pk, attempts, singleton in cursor.fetchall()}


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

    @property
    def done(self) -> bool:
        return len(self.chosen) >= self.slots

    def consider(self, rows: list[Job]) -> int:
        """Choose from ``rows`` in order; return how many were passed over (full type or not ready)."""
        self.count_limited({job.job_type_id for job in rows if is_limited(job.job_type)} - self.counted)
        passed_over = 0
        for job in rows:
            if self.done:
                break
            type_id = job.job_type_id
            if type_id in self.free and self.free[type_id] <= 0:
                self.full.add(type_id)
                passed_over += 1
                continue
            buckets = self.buckets.get(type_id)
            if job.job_type.readiness and buckets is None:
                buckets = self.buckets[type_id] = Buckets(job.job_type.readiness, ())
            if buckets is not None and not buckets.admits(job.params):
                passed_over += 1
                continue
            if type_id in self.free:
                self.free[type_id] -= 1
            if buckets is not None:
                buckets.add(job.params)
            self.chosen.append(job)
        return passed_over

    @property
    def counted(self) -> set[int]:
        return set(self.free) | set(self.buckets)

    def count_limited(self, type_ids: set[int]) -> None:
        if not type_ids:
            return
        limits, criteria = {}, {}
        locked = (
            JobType.objects.using(self.using)
            .filter(pk__in=sorted(type_ids))
            .order_by("pk")
            .select_for_update()
            .values_list("pk", "schedule_limit", "can_work_in_parallel", "readiness")
        )
        for pk, limit, parallel, readiness in locked:
            if not parallel:
                limits[pk] = 1
                self.singletons.add(pk)
            elif limit:
                limits[pk] = limit
            if readiness:
                criteria[pk] = readiness
        working = Job.objects.using(self.using).filter(state=JobState.WORKING)
        counts = dict(
            working.filter(job_type_id__in=list(limits))
            .values_list("job_type_id")
            .annotate(n=Count("id"))
            .values_list("job_type_id", "n")
        )
        for pk, limit in limits.items():
            self.free[pk] = limit - counts.get(pk, 0)
        if criteria:
            params: dict[int, list[dict]] = defaultdict(list)
            for type_id, job_params in working.filter(job_type_id__in=list(criteria)).values_list(
                "job_type_id", "params"
            ):
                params[type_id].append(job_params)
            for pk, readiness in criteria.items():
                self.buckets[pk] = Buckets(readiness, params[pk])


def is_limited(job_type: JobType) -> bool:
    """Types whose working jobs must be counted under their row lock before one more is claimed."""
    return (
        bool(job_type.schedule_limit)
        or not job_type.can_work_in_parallel
        or bool(job_type.readiness and bucket_keys(job_type.readiness))
    )
