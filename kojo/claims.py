"""Claiming due jobs: the one place a job goes from waiting to working.

The claim honours, across every server at once, each type's ``schedule_limit`` and
``can_work_in_parallel``: candidate rows are locked with ``SKIP LOCKED`` so servers never wait on each
other's candidates, and the row of each limited type is locked while its working jobs are counted, so
two servers cannot both take the last slot. A partial unique index on working singleton jobs backs
this up in the database. On SQLite (one machine), the IMMEDIATE transaction mode serialises claims.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial

from django.db import transaction
from django.db.models import Case, Count, F, Q, Value, When
from django.utils import timezone

from kojo.models import Job, JobStateChange, JobType
from kojo.signals import job_state_changed
from kojo.states import JobState

logger = logging.getLogger(__name__)

# Candidates read per requested job, so a few rows locked by other servers do not leave us empty-handed.
CANDIDATES_PER_SLOT = 4


def claim(
    slots: int,
    *,
    server_id: int | None = None,
    host: str = "",
    pid: int | None = None,
    queues: Sequence[str] | None = None,
    oldest_first: bool = False,
    using: str = "default",
) -> list[Job]:
    """Take up to ``slots`` due jobs for this server and mark them working; return them.

    Order is importance then age; ``oldest_first`` ignores importance, which the server does now and
    then so that a steady stream of important jobs cannot starve the rest.
    """
    if slots <= 0:
        return []
    now = timezone.now()
    full = full_job_types(using=using)
    candidates = Job.objects.using(using).filter(
        state=JobState.WAITING, start_after__lte=now, job_type__is_enabled=True
    )
    if full:
        candidates = candidates.exclude(job_type_id__in=full)
    if queues:
        candidates = candidates.filter(job_type__queue__in=list(queues))
    order = ("start_after", "id") if oldest_first else ("-importance", "start_after", "id")
    with transaction.atomic(using=using):
        rows = list(
            candidates.order_by(*order)
            .select_for_update(skip_locked=True, of=("self",))
            .values_list("id", "job_type_id")[: slots * CANDIDATES_PER_SLOT]
        )
        chosen = admit(rows, slots, using=using)
        if not chosen:
            return []
        # Stamped after the limits were counted under lock, so the changelog's intervals never overlap
        # beyond a limit even though the candidates were read a moment earlier.
        now = timezone.now()
        singletons = set(
            JobType.objects.using(using)
            .filter(pk__in={type_id for _, type_id in chosen}, can_work_in_parallel=False)
            .values_list("pk", flat=True)
        )
        ids = [job_id for job_id, _ in chosen]
        Job.objects.using(using).filter(pk__in=ids, state=JobState.WAITING).update(
            state=JobState.WORKING,
            state_changed_at=now,
            started_at=now,
            heartbeat_at=now,
            attempts=F("attempts") + 1,
            server_id=server_id,
            host=host,
            pid=pid,
            progress=None,
            abort_requested_by="",
            singleton=Case(When(job_type_id__in=singletons, then=Value(True)), default=Value(False)),
        )
        jobs = list(
            Job.objects.using(using)
            .select_related("job_type")
            .filter(pk__in=ids, state=JobState.WORKING, started_at=now, server_id=server_id, pid=pid)
            .order_by(*order)
        )
        actor = f"{host}:{pid}" if host else ""
        JobStateChange.objects.using(using).bulk_create(
            JobStateChange(
                job_id=job.pk,
                from_state=JobState.WAITING,
                to_state=JobState.WORKING,
                reason=f"claimed (attempt {job.attempts})",
                actor=actor,
                attempt=job.attempts,
                at=now,
            )
            for job in jobs
        )
        for job in jobs:
            transaction.on_commit(
                partial(
                    job_state_changed.send,
                    sender=Job,
                    job_id=job.pk,
                    type_code=job.job_type.type_code,
                    from_state=JobState.WAITING,
                    to_state=JobState.WORKING,
                    outcome="",
                    reason="claimed",
                ),
                using=using,
            )
    return jobs


def full_job_types(*, using: str = "default") -> list[int]:
    """Limited types whose working jobs already fill their limit (a hint; admit() decides under lock)."""
    limited = (
        JobType.objects.using(using)
        .filter(Q(schedule_limit__gt=0) | Q(can_work_in_parallel=False))
        .annotate(working=Count("jobs", filter=Q(jobs__state=JobState.WORKING)))
        .values_list("pk", "schedule_limit", "can_work_in_parallel", "working")
    )
    return [pk for pk, limit, parallel, working in limited if working >= (limit if parallel else 1)]


def admit(rows: list[tuple[int, int]], slots: int, *, using: str) -> list[tuple[int, int]]:
    """Pick up to ``slots`` of the locked candidate rows, never beyond a type's limit."""
    type_ids = sorted({type_id for _, type_id in rows})
    # Lock limited types in id order (no deadlocks between servers), then count their working jobs.
    limited = {
        pk: (limit if parallel else 1)
        for pk, limit, parallel in JobType.objects.using(using)
        .filter(pk__in=type_ids)
        .filter(Q(schedule_limit__gt=0) | Q(can_work_in_parallel=False))
        .order_by("pk")
        .select_for_update()
        .values_list("pk", "schedule_limit", "can_work_in_parallel")
    }
    free = {}
    if limited:
        working = dict(
            Job.objects.using(using)
            .filter(job_type_id__in=list(limited), state=JobState.WORKING)
            .values_list("job_type_id")
            .annotate(n=Count("id"))
            .values_list("job_type_id", "n")
        )
        free = {pk: limit - working.get(pk, 0) for pk, limit in limited.items()}
    chosen = []
    for job_id, type_id in rows:
        if len(chosen) == slots:
            break
        if type_id in free:
            if free[type_id] <= 0:
                continue
            free[type_id] -= 1
        chosen.append((job_id, type_id))
    return chosen
