"""Recurring jobs by interval, named so that defining one again replaces it.

``kojo.recur("report", known_as="nightly-report", interval="PT12H", base_time=...)`` stores a
definition; the leading housekeeper creates its occurrences. Only one occurrence is pending at a time,
so runs never overlap, and the next one is due an interval after the previous one started or ended, or
at the first point of the grid ``base_time + k × interval`` after it ended (missed points are skipped,
never run in a burst). An occurrence that fails is retried by its type's policy first; the schedule
moves on once it is finished, however it finished. To stop recurring, call ``kojo.stop_recurring()`` or
disable the definition in the admin.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from kojo.conf import settings
from kojo.durations import InvalidDuration, parse_duration
from kojo.exceptions import InvalidSchedule, WaitingLimitReached
from kojo.models import Job, Recurrence, Reference
from kojo.scheduling import (
    AllowanceBusy,
    check_allowance,
    clean_importance,
    clean_params,
    create_job,
    enabled_job_type,
)
from kojo.states import TERMINAL, JobState
from kojo.transitions import transition

logger = logging.getLogger(__name__)

# The fields that decide what runs and when; changing any of them reschedules a waiting occurrence.
DEFINITION = ("job_type", "params", "interval", "reference", "base_time", "importance")


def recur(
    type_code: str,
    params: dict[str, Any] | None = None,
    *,
    known_as: str,
    interval: timedelta | str,
    reference: str = Reference.END,
    base_time: datetime | None = None,
    start_at: datetime | None = None,
    importance: int | None = None,
) -> Recurrence:
    """Define (or redefine) the recurring job ``known_as``; calling it again with the same definition
    changes nothing, so it is safe to call on every deploy.

    The first run is at ``start_at`` if given, else at the first grid point at or after now when
    ``base_time`` is given, else now.
    """
    if not isinstance(known_as, str) or not 0 < len(known_as) <= 200 or "\x00" in known_as:
        raise InvalidSchedule("known_as must be text of 1 to 200 characters, without NUL characters")
    for name, moment in (("base_time", base_time), ("start_at", start_at)):
        if moment is not None and (not isinstance(moment, datetime) or timezone.is_naive(moment)):
            raise InvalidSchedule(f"{name} must be an aware datetime (with a time zone)")
    if reference not in Reference.values:
        raise InvalidSchedule(f"reference must be one of {', '.join(Reference.values)}, not {reference!r}")
    definition = {
        "job_type": enabled_job_type(type_code),
        "params": clean_params(params),
        "interval": interval_text(interval),
        "reference": reference,
        "base_time": base_time,
        "importance": None if importance is None else clean_importance(importance),
    }
    with transaction.atomic(using=settings.DATABASE):
        recurrence = Recurrence.objects.select_for_update().filter(known_as=known_as).first()
        if recurrence is None:
            recurrence = Recurrence(known_as=known_as)
        elif start_at is None and recurrence.is_enabled and same_definition(recurrence, definition):
            return recurrence
        for name, value in definition.items():
            setattr(recurrence, name, value)
        recurrence.is_enabled = True
        return save_definition(recurrence, start_at=start_at)


def interval_text(interval: timedelta | str) -> str:
    if isinstance(interval, timedelta):
        # Whole microseconds, never a float's "%g" text: 12 days must not become "PT1.0368e+06S".
        seconds, micros = divmod(interval // timedelta(microseconds=1), 1_000_000)
        if seconds < 0:
            raise InvalidSchedule(f"interval must be longer than zero, not {interval}")
        text = f"PT{seconds}.{micros:06d}".rstrip("0").rstrip(".") + "S"
    elif isinstance(interval, str):
        text = interval
    else:
        raise InvalidSchedule(f"interval must be an ISO 8601 duration or a timedelta, not {interval!r}")
    try:
        duration = parse_duration(text)
    except InvalidDuration as error:
        raise InvalidSchedule(str(error)) from None
    if duration <= timedelta(0):
        raise InvalidSchedule(f"interval must be longer than zero, not {text!r}")
    return text


def same_definition(recurrence: Recurrence, definition: dict[str, Any]) -> bool:
    return all(
        (recurrence.job_type_id == value.pk) if name == "job_type" else getattr(recurrence, name) == value
        for name, value in definition.items()
    )


def save_definition(recurrence: Recurrence, *, start_at: datetime | None = None) -> Recurrence:
    """Store a new or changed definition. An occurrence of the old one that has not started yet is
    canceled, and the next run follows the new rules; one already working finishes first."""
    with transaction.atomic(using=settings.DATABASE):
        current = recurrence.current_job
        if current is not None and current.state in (JobState.WAITING, JobState.HOLD):
            canceled = transition(
                current.pk,
                JobState.CANCELED,
                expect=[JobState.WAITING, JobState.HOLD],
                reason=f"recurrence {recurrence.known_as!r} was redefined",
                strict=False,
            )
            if canceled:
                recurrence.current_job = None
        if recurrence.current_job is None:
            recurrence.next_run_at = start_at or first_run(recurrence, timezone.now())
        recurrence.full_clean(exclude=["job_type", "current_job"])
        recurrence.save()
    return recurrence


def stop_recurring(known_as: str) -> bool:
    """Delete the definition ``known_as``; its occurrence still waiting is canceled. False if unknown."""
    if not isinstance(known_as, str) or "\x00" in known_as:
        return False  # recur() stores no such name, and PostgreSQL refuses NUL in a query
    with transaction.atomic(using=settings.DATABASE):
        recurrence = Recurrence.objects.select_for_update().filter(known_as=known_as).first()
        if recurrence is None:
            return False
        if recurrence.current_job_id is not None:
            transition(
                recurrence.current_job_id,
                JobState.CANCELED,
                expect=[JobState.WAITING, JobState.HOLD],
                reason=f"recurrence {known_as!r} was stopped",
                strict=False,
            )
        recurrence.delete()
    return True


def first_run(recurrence: Recurrence, now: datetime) -> datetime:
    if recurrence.base_time is None:
        return now
    return grid_point(recurrence.base_time, recurrence.interval_delta, now, strictly_after=False)


def next_run(recurrence: Recurrence, started: datetime | None, ended: datetime) -> datetime:
    """When the occurrence after one that started at ``started`` and ended at ``ended`` is due."""
    interval = recurrence.interval_delta
    if recurrence.base_time is not None:
        return grid_point(recurrence.base_time, interval, ended, strictly_after=True)
    if recurrence.reference == Reference.START and started is not None:
        # May already have passed (a run longer than the interval): then the next one starts at once.
        return started + interval
    return ended + interval


def grid_point(base: datetime, interval: timedelta, moment: datetime, *, strictly_after: bool) -> datetime:
    """The first ``base + k × interval`` (k any integer) after ``moment``, or at it when not strict."""
    steps = (moment - base) // interval
    point = base + steps * interval
    if point < moment or (strictly_after and point == moment):
        point += interval
    return point


def schedule_due_recurrences(now: datetime | None = None, *, actor: str = "") -> list[Job]:
    """Move finished occurrences' definitions on to their next run, and create the occurrences that are
    due; return the jobs created. Safe on several servers at once: each step is a conditional UPDATE."""
    now = now or timezone.now()
    advance_finished(now)
    created = []
    due = (
        Recurrence.objects.filter(
            is_enabled=True, current_job__isnull=True, next_run_at__lte=now, job_type__is_enabled=True
        )
        .select_related("job_type")
        .order_by("next_run_at")
    )
    for recurrence in due:
        job = create_occurrence(recurrence, now, actor=actor)
        if job is not None:
            created.append(job)
    return created


def advance_finished(now: datetime) -> None:
    finished = Recurrence.objects.filter(current_job__state__in=sorted(TERMINAL))
    for recurrence in finished.select_related("current_job"):
        job = recurrence.current_job
        due = next_run(recurrence, job.started_at, job.finished_at or job.state_changed_at)
        Recurrence.objects.filter(pk=recurrence.pk, current_job=job).update(current_job=None, next_run_at=due)
    # An occurrence deleted before its end was seen (pruned, or removed by hand): carry on from now.
    lost = Recurrence.objects.filter(current_job__isnull=True, next_run_at__isnull=True)
    for recurrence in lost:
        lost.filter(pk=recurrence.pk).update(next_run_at=next_run(recurrence, None, now))


def create_occurrence(recurrence: Recurrence, now: datetime, *, actor: str) -> Job | None:
    job_type = recurrence.job_type
    with transaction.atomic(using=settings.DATABASE):
        # The allowance before the definition's row, and without waiting for a view's transaction:
        # a type being scheduled right now gets its occurrence on a later pass.
        try:
            check_allowance(job_type, wait=False, using=settings.DATABASE)
            refused = None
        except AllowanceBusy as busy:
            logger.info("recurrence %s: %s; trying again next pass", recurrence.known_as, busy)
            return None
        except WaitingLimitReached as error:
            refused = error
        claimed = Recurrence.objects.filter(
            pk=recurrence.pk, current_job__isnull=True, next_run_at=recurrence.next_run_at
        ).update(next_run_at=None)
        if not claimed:
            return None  # another server made this occurrence
        if refused is not None:
            # Skipped like a cron tick: the definition moves on to its next run.
            upcoming = next_run(recurrence, None, now)
            Recurrence.objects.filter(pk=recurrence.pk).update(next_run_at=upcoming)
            logger.warning(
                "recurrence %s: occurrence skipped, next at %s: %s",
                recurrence.known_as,
                upcoming.isoformat(),
                refused,
                extra={"action": "recur"},
            )
            return None
        importance = job_type.default_importance if recurrence.importance is None else recurrence.importance
        fields = {
            "job_type": job_type,
            "params": recurrence.params,
            "importance": importance,
            "start_after": now,
            "recurrence": recurrence,
        }
        job = create_job(fields, actor=actor, reason=f"recurrence {recurrence.known_as!r} due")
        Recurrence.objects.filter(pk=recurrence.pk).update(current_job=job)
    logger.info(
        "recurrence %s: created job %s",
        recurrence.known_as,
        job.pk,
        extra={"job_id": job.pk, "action": "recur"},
    )
    return job
