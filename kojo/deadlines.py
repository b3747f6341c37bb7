"""Deadlines: a job's ``finish_by``, and late work hurried rather than only failed.

Each pass, the leading housekeeper looks at the jobs with a deadline still waiting or working, soonest
deadline first. A waiting job's importance rises with the share of its time used: from 0 when it was
scheduled to IMPORTANCE_MAX at its deadline (a job keeps its own importance while that is higher), so
it overtakes work without a deadline as it nears. A job projected to miss its deadline goes to
IMPORTANCE_MAX at once and is flagged, once, fleet-wide (one conditional UPDATE of
``deadline_at_risk``): the ``job_deadline_at_risk`` signal is sent, an event goes to
``listen(lifecycle=True)``, and the ``kojo_jobs_deadline_at_risk`` gauge counts it.

The projection uses the database's clock and the type's recent run time (the mean of its last
RECENT_RUNS successful runs): a working job ends at its start plus that; a waiting job waits for the
due jobs of its type ahead of it in claim order, as many at a time as the type may run (its limit, else
the live servers' slots), then runs. A type with no run yet is projected by the queue alone.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta

from django.db.models import Case, Q, Sum, Value, When
from django.db.models.functions import Greatest

from kojo import lifecycle, signals
from kojo.clock import database_now
from kojo.conf import settings
from kojo.models import IMPORTANCE_MAX, Job, JobType, Server
from kojo.states import JobState

logger = logging.getLogger(__name__)

RECENT_RUNS = 20
HURRIED_PER_PASS = 500
# The most jobs ahead counted for one projection.
AHEAD_COUNTED = 10_000


def hurry() -> list[int]:
    """One pass: raise importances, flag jobs projected late; return the ids flagged now."""
    using = settings.DATABASE
    now = database_now(using)
    jobs = list(
        Job.objects.using(using)
        .select_related("job_type")
        .filter(finish_by__isnull=False, state__in=[JobState.WAITING, JobState.WORKING])
        .order_by("finish_by")[:HURRIED_PER_PASS]
    )
    if not jobs:
        return []
    runs: dict[int, timedelta] = {}
    slots = fleet_slots(now, using)
    raised: dict[int, int] = {}
    late: list[tuple[Job, datetime]] = []
    for job in jobs:
        if job.deadline_at_risk:  # flagged once already: it stays at the top, nothing to project
            if job.state == JobState.WAITING and job.importance < IMPORTANCE_MAX:
                raised[job.pk] = IMPORTANCE_MAX
            continue
        if job.job_type_id not in runs:
            runs[job.job_type_id] = recent_run_time(job.job_type, using)
        projected = projected_end(job, now, runs[job.job_type_id], slots, using)
        if projected > job.finish_by:
            late.append((job, projected))
        if job.state == JobState.WAITING:
            wanted = IMPORTANCE_MAX if projected > job.finish_by else urgency_importance(job, now)
            if wanted > job.importance:
                raised[job.pk] = wanted
    if raised:
        Job.objects.using(using).filter(pk__in=list(raised), state=JobState.WAITING).update(
            importance=Greatest(
                "importance", Case(*(When(pk=pk, then=Value(value)) for pk, value in raised.items()))
            )
        )
    return flag(late, using=using)


def urgency_importance(job: Job, now: datetime) -> int:
    """0 when the job was scheduled, IMPORTANCE_MAX at its deadline, in proportion to the time used."""
    allowed = (job.finish_by - job.created_at).total_seconds()
    if allowed <= 0:
        return IMPORTANCE_MAX
    used = (now - job.created_at).total_seconds() / allowed
    return max(0, min(IMPORTANCE_MAX, math.floor(IMPORTANCE_MAX * used)))


def projected_end(job: Job, now: datetime, run: timedelta, slots: int, using: str) -> datetime:
    if job.state == JobState.WORKING:
        return max(now, (job.started_at or now) + run)
    start = max(now, job.start_after)
    if run:
        parallel = 1 if not job.job_type.can_work_in_parallel else job.job_type.schedule_limit or slots
        # Counted only as far as it matters: the jobs ahead that would make it late, one more at most.
        spare = (job.finish_by - start - run) / run if job.finish_by > start + run else 0
        enough = min(AHEAD_COUNTED, math.floor(spare * max(1, parallel)) + 1)
        ahead = jobs_ahead(job, now, enough, using)
        start += run * math.ceil(ahead / max(1, parallel))
    return start + run


def jobs_ahead(job: Job, now: datetime, most: int, using: str) -> int:
    """Due jobs of its type a claim takes before this one, counted up to ``most`` (an index range
    scan that stops there, however long the backlog)."""
    ahead = (
        Job.objects.using(using)
        .filter(job_type_id=job.job_type_id, state=JobState.WAITING, start_after__lte=now)
        .filter(
            Q(importance__gt=job.importance)
            | Q(importance=job.importance, start_after__lt=job.start_after)
            | Q(importance=job.importance, start_after=job.start_after, pk__lt=job.pk)
        )
        .order_by()
        .values("pk")[:most]
    )
    return ahead.count()


def recent_run_time(job_type: JobType, using: str) -> timedelta:
    """The mean of the type's last RECENT_RUNS successful runs; zero when it has none."""
    runs = list(
        Job.objects.using(using)
        .filter(job_type=job_type, state=JobState.COMPLETE_SUCCESS, started_at__isnull=False)
        .exclude(finished_at=None)
        .order_by("-id")
        .values_list("started_at", "finished_at")[:RECENT_RUNS]
    )
    if not runs:
        return timedelta(0)
    return sum((end - start for start, end in runs), timedelta(0)) / len(runs)


def fleet_slots(now: datetime, using: str) -> int:
    """Jobs the live servers run at once, at least one."""
    live = Server.objects.using(using).filter(
        heartbeat_at__gt=now - timedelta(seconds=settings.HEARTBEAT_TIMEOUT), stopping=False
    )
    return max(1, live.exclude(mode=Server.FOREGROUND).aggregate(n=Sum("concurrency"))["n"] or 0)


def flag(late: list[tuple[Job, datetime]], *, using: str) -> list[int]:
    """Flag each job not flagged yet, each by one conditional UPDATE: whoever flags it tells of it,
    once, however many housekeepers try (newly late jobs are few)."""
    flagged = []
    for job, projected in late:
        pending = [JobState.WAITING, JobState.WORKING]
        mine = Job.objects.using(using).filter(pk=job.pk, deadline_at_risk=False, state__in=pending)
        if not mine.update(deadline_at_risk=True):
            continue
        flagged.append(job.pk)
        logger.warning(
            "job %s (%s): projected to end at %s, after its deadline %s",
            job.pk,
            job.job_type.type_code,
            projected.isoformat(),
            job.finish_by.isoformat(),
        )
        lifecycle.send(
            signals.job_deadline_at_risk,
            "job_deadline_at_risk",
            hurry,
            job_id=job.pk,
            type_code=job.job_type.type_code,
            finish_by=job.finish_by.isoformat(),
            projected_end=projected.isoformat(),
        )
    return flagged
