"""Waiting for jobs to finish, from a view, a command or another job."""

from __future__ import annotations

import time
from collections.abc import Iterable

from kojo.conf import settings
from kojo.exceptions import JobFailed, JobNotFound, WaitTimeout
from kojo.models import Job
from kojo.scheduling import MAX_ID
from kojo.states import TERMINAL, JobState

# Seconds between looks at the database: quick at first for short jobs, then gentler.
FIRST_PAUSE, MAX_PAUSE = 0.02, 0.5


def wait(
    jobs: Job | int | Iterable[Job | int],
    *,
    timeout: float | None = None,
    raise_on_failure: bool = False,
    using: str | None = None,
) -> Job | list[Job]:
    """Block until every job is finished; return them fresh from the database (one job for one).

    Finished jobs return at once. ``timeout`` (seconds) raises WaitTimeout; ``raise_on_failure``
    raises JobFailed if any ended complete_failed or canceled.
    """
    using = using or settings.DATABASE
    single = isinstance(jobs, Job | int)
    items = [jobs] if single else list(jobs)
    ids = [getattr(item, "pk", item) for item in items]
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = FIRST_PAUSE
    while True:
        # An id beyond 64 bits names no job, and SQLite raises OverflowError rather than finding none.
        storable = [pk for pk in ids if not isinstance(pk, int) or abs(pk) <= MAX_ID]
        found = Job.objects.using(using).select_related("job_type").in_bulk(storable)
        missing = [pk for pk in ids if pk not in found]
        if missing:
            raise JobNotFound(f"no job has the id {missing[0]} (never created, or already pruned)")
        if all(job.state in TERMINAL for job in found.values()):
            break
        if deadline is not None and time.monotonic() >= deadline:
            pending = sorted(pk for pk, job in found.items() if job.state not in TERMINAL)
            raise WaitTimeout(f"jobs {pending} were not finished after {timeout} s")
        time.sleep(pause if deadline is None else max(0.0, min(pause, deadline - time.monotonic())))
        pause = min(pause * 2, MAX_PAUSE)
    result = [found[pk] for pk in ids]
    failed = [job for job in result if job.state != JobState.COMPLETE_SUCCESS]
    if raise_on_failure and failed:
        raise JobFailed(failed)
    return result[0] if single else result
