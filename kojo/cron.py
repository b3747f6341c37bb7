"""Cron scheduling: one job per (type, tick), however many servers run this at once.

A server claims a tick by moving the type's ``last_cron_tick`` forward in one conditional UPDATE; only
the server whose UPDATE changed the row creates the job, and a unique constraint on (type, tick) backs
that up. Ticks missed while every server was down collapse into the newest one. A tick claimed once is
never created again, even after its job was pruned.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from croniter import croniter
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from kojo.models import Job, JobType
from kojo.scheduling import create_job
from kojo.states import JobState

logger = logging.getLogger(__name__)

# A type that has never had a cron job runs its newest tick only if that tick is this recent, so a
# daily type created at noon waits for its next tick instead of running at once for 3 a.m.
FIRST_TICK_GRACE = timedelta(minutes=1)


def latest_tick(expression: str, now: datetime) -> datetime:
    """The newest tick at or before ``now`` (UTC)."""
    return croniter(expression, now + timedelta(microseconds=1)).get_prev(datetime)


def next_ticks(expression: str, start: datetime, count: int = 5) -> list[datetime]:
    iterator = croniter(expression, start)
    return [iterator.get_next(datetime) for _ in range(count)]


def schedule_due_ticks(now: datetime | None = None, *, actor: str = "") -> list[Job]:
    """Create the due cron job of every enabled cron type; return the jobs this call created."""
    now = now or timezone.now()
    created = []
    types = JobType.objects.filter(is_enabled=True).exclude(cron_expression="")
    for job_type in types:
        try:
            tick = latest_tick(job_type.cron_expression, now)
        except (ValueError, KeyError):
            logger.error("job type %s has an invalid cron expression %r", job_type, job_type.cron_expression)
            continue
        if job_type.last_cron_tick is not None and tick <= job_type.last_cron_tick:
            continue
        job = schedule_tick(job_type, tick, now, actor=actor)
        if job is not None:
            created.append(job)
    return created


def schedule_tick(job_type: JobType, tick: datetime, now: datetime, *, actor: str) -> Job | None:
    first = job_type.last_cron_tick is None
    with transaction.atomic():
        won = JobType.objects.filter(
            Q(last_cron_tick__lt=tick) | Q(last_cron_tick__isnull=True), pk=job_type.pk, is_enabled=True
        ).update(last_cron_tick=tick)
        if not won:
            return None
        if first and now - tick > FIRST_TICK_GRACE:
            return None
        if job_type.schedule_limit_allowance:
            waiting = Job.objects.filter(job_type=job_type, state=JobState.WAITING).count()
            if waiting >= job_type.schedule_limit_allowance:
                logger.warning(
                    "cron tick %s of %s skipped: %s jobs already waiting (allowance %s)",
                    tick.isoformat(),
                    job_type,
                    waiting,
                    job_type.schedule_limit_allowance,
                )
                return None
        try:
            with transaction.atomic():
                return create_job(
                    {
                        "job_type": job_type,
                        "importance": job_type.default_importance,
                        "start_after": tick,
                        "cron_tick": tick,
                    },
                    actor=actor,
                    reason=f"cron tick {tick.isoformat()}",
                )
        except IntegrityError:
            return None  # another server created it: the constraint did its job
