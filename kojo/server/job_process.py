"""The fork-per-job child (``ondemand`` mode): one job, its own process group, then exit.

A job that returns well without having touched the database reports its success to the server over
the server's report pipe rather than connecting just to write it; the server records such endings in
batches. Any other ending is written by the job process itself, inside the job's own transaction if it
has one.
"""

from __future__ import annotations

import json
import os
import select
from typing import Any

from django.db import connections

from kojo.models import Job
from kojo.server import exitcodes
from kojo.server.execution import run_job
from kojo.server.forking import fork_child
from kojo.server.lease import Lease, watch


def spawn_job_process(job: Job, *, server_pid: int, host: str, report_fd: int, lease: Lease) -> int:
    """Fork a child that runs ``job`` (already claimed by the arbiter); return its pid."""
    title = f"job[{job.pk} {job.job_type.type_code}]"

    def run() -> None:
        watch(lease)
        run_claimed_job(job, host, report_fd)

    return fork_child(
        server_pid,
        title,
        run,
        own_process_group=True,
        failure_code=exitcodes.RECORD_ERROR,
    )


def touched_database() -> bool:
    """Whether this process opened a database connection (a forked child starts with none)."""
    return any(connections[alias].connection is not None for alias in connections)


def run_claimed_job(job: Job, host: str, report_fd: int) -> None:
    pid = os.getpid()

    def report_success(result: Any) -> bool:
        if touched_database():
            return False  # the connection is open anyway: record it here, not through the server
        line = f"{pid} done {job.pk} {job.fence} {json.dumps(result)}\n".encode()
        # Writes up to PIPE_BUF bytes are atomic: lines of concurrent children never interleave.
        if len(line) > select.PIPE_BUF:
            return False
        try:
            return os.write(report_fd, line) == len(line)
        except OSError:  # the pipe is full (non-blocking) or gone: record it ourselves
            return False

    run_job(job, actor=f"{host}:{pid}", report_success=report_success)
