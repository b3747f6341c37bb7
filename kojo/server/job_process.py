"""The fork-per-job child (``ondemand`` mode): one job, its own process group, then exit."""

from __future__ import annotations

import logging
import os
import sys

from kojo.models import Job
from kojo.server import exitcodes
from kojo.server.execution import run_job
from kojo.server.forking import prepare_child

logger = logging.getLogger(__name__)


def spawn_job_process(job: Job, *, server_pid: int, host: str) -> int:
    """Fork a child that runs ``job`` (already claimed by the arbiter); return its pid."""
    pid = os.fork()
    if pid:
        return pid
    code = exitcodes.OK
    try:
        prepare_child(
            server_pid, f"server[{server_pid}]/job[{job.pk} {job.job_type.type_code}]", own_process_group=True
        )
        run_job(job, actor=f"{host}:{os.getpid()}")
    except BaseException:
        logger.exception("job process for job %s failed", job.pk)
        code = exitcodes.RECORD_ERROR
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
