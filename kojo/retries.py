"""What happens after an attempt goes wrong: another attempt later, or the end.

Every way a working job can stop without finishing well (an exception, a crash, a timeout, a lost
server) comes here, so they all count as attempts and obey the same policy: a job that kills its
process every time ends ``complete_failed`` after ``max_attempts``, it never loops.

A job going back to ``waiting`` here is let in whatever its type's ``schedule_limit_allowance``: the
allowance bounds new work entering the queue, and this job was counted when it entered. Refusing its
next attempt would end a job its own policy means to finish. (An operator's retry or release is new
work and is refused beyond the allowance: kojo.control.)
"""

from __future__ import annotations

import logging
import random
from datetime import timedelta
from typing import Any

from django.db.models import F, Q
from django.utils import timezone
from django.utils.module_loading import import_string

from kojo.durations import parse_duration
from kojo.models import Backoff, Job, JobType
from kojo.states import JobState, Outcome
from kojo.transitions import transition
from kojo.validators import exception_class_names

logger = logging.getLogger(__name__)

# The longest delay any backoff produces, so exponential growth stays sane.
MAX_DELAY = timedelta(days=1)


def retry_delay(job_type: JobType, attempt: int, job: Job | None = None) -> timedelta:
    """Delay before the attempt after ``attempt`` (1-based) by the type's backoff, with optional jitter;
    a job's own retry interval and backoff, when it has them, come first."""
    base = parse_duration((job and job.retry_interval) or job_type.retry_interval)
    backoff = (job and job.retry_backoff) or job_type.retry_backoff
    if backoff == Backoff.LINEAR:
        delay = base * attempt
    elif backoff == Backoff.EXPONENTIAL:
        delay = base * (2 ** min(attempt - 1, 30))
    else:
        delay = base
    delay = min(delay, MAX_DELAY)
    if job_type.retry_jitter and delay:
        # "Equal jitter": half fixed, half random, so retries spread out but never come at once.
        delay = delay / 2 + delay / 2 * random.random()
    return delay


def is_retryable(job_type: JobType, error: BaseException) -> bool:
    """Whether an exception is worth another attempt: any is, unless the type lists ``retry_on``."""
    names = exception_class_names(job_type.retry_on)
    if not names:
        return True
    classes = []
    for name in names:
        try:
            classes.append(import_string(name))
        except ImportError:
            logger.error("job type %s: retry_on names %s, which does not import", job_type, name)
    return isinstance(error, tuple(cls for cls in classes if isinstance(cls, type)))


def end_attempt(
    job: Job,
    outcome: Outcome,
    reason: str,
    *,
    error: str = "",
    traceback: str = "",
    actor: str = "",
    retry: bool = True,
    when: Q | None = None,
    skip_locked: bool = False,
    revoke: bool = False,
) -> JobState | None:
    """Record a failed attempt of the run ``job`` holds (its fence) and retry or fail the job by its
    policy; return the new state.

    Returns None when that run was no longer working (someone else ended it or took it over). A rescue
    passes ``when`` (staleness, checked again as it acts), ``skip_locked`` and ``revoke``, which moves
    the fence on: the run it takes over can write nothing more.
    """
    job_type = job.job_type
    attempts = job.attempts
    max_attempts = job.max_attempts or job_type.max_attempts
    fields: dict[str, Any] = {"error": error or reason, "traceback": traceback, "pid": None}
    if revoke:
        fields["fence"] = F("fence") + 1
    where = {"fence": job.fence}
    if retry and attempts < max_attempts:
        delay = retry_delay(job_type, attempts, job)
        target = JobState.WAITING
        fields["start_after"] = timezone.now() + delay
        reason = f"{reason}; attempt {attempts} of {max_attempts}, next in {delay.total_seconds():.1f} s"
    else:
        target = JobState.COMPLETE_FAILED
        if retry:
            reason = f"{reason}; attempt {attempts} of {max_attempts}, none left"
    changed = transition(
        job.pk,
        target,
        expect=[JobState.WORKING],
        outcome=outcome,
        reason=reason,
        actor=actor,
        strict=False,
        where=where,
        when=when,
        skip_locked=skip_locked,
        **fields,
    )
    if not changed:
        return None
    logger.info("job %s %s: %s", job.pk, outcome, reason, extra={"job_id": job.pk, "action": "end_attempt"})
    return target


def requeue_interrupted(job: Job, reason: str, *, actor: str = "", keep_place: bool = False) -> bool:
    """A job stopped by its server's shutdown goes back to waiting; it was not the job's fault, so the
    attempt is given back. It is due at once, or, with ``keep_place``, keeps its start time and so its
    place in the queue."""
    due = {} if keep_place else {"start_after": timezone.now()}
    return transition(
        job.pk,
        JobState.WAITING,
        expect=[JobState.WORKING],
        outcome=Outcome.INTERRUPTED,
        reason=reason,
        actor=actor,
        strict=False,
        where={"fence": job.fence},
        attempts=max(job.attempts - 1, 0),
        pid=None,
        **due,
    )


def give_back_unstarted(job: Job, reason: str, *, actor: str = "") -> bool:
    """A job claimed ahead by a pooled worker that never started it goes back to waiting, attempt
    given back, unless someone asked to abort it meanwhile: then it ends canceled, as it would have
    once started."""
    aborted = transition(
        job.pk,
        JobState.CANCELED,
        expect=[JobState.WORKING],
        outcome=Outcome.ABORTED,
        reason=f"aborted before it started ({reason})",
        actor=actor,
        strict=False,
        where={"fence": job.fence, "abort_requested_by__gt": ""},
    )
    # It never ran: it keeps its place in the queue.
    return aborted or requeue_interrupted(job, reason, actor=actor, keep_place=True)
