"""The fork-per-job child (``ondemand`` mode): one job, its own process group, then exit."""

from __future__ import annotations

import os

from kojo.models import Job
from kojo.server import exitcodes
from kojo.server.execution import run_job, with_db_retry
from kojo.server.forking import fork_child
from kojo.states import JobState


def spawn_job_process(job: Job, *, server_pid: int, host: str) -> int:
    """Fork a child that runs ``job`` (already claimed by the arbiter); return its pid."""
    return fork_child(
        server_pid,
        f"job[{job.pk} {job.job_type.type_code}]",
        lambda: run_claimed_job(job, host),
        own_process_group=True,
        failure_code=exitcodes.RECORD_ERROR,
    )


def run_claimed_job(job: Job, host: str) -> None:
    """Record the job process's own pid (the claim recorded the arbiter's), then run the job."""
    pid = os.getpid()
    with_db_retry(
        lambda: Job.objects.filter(pk=job.pk, state=JobState.WORKING, attempts=job.attempts).update(pid=pid)
    )
    run_job(job, actor=f"{host}:{pid}")
