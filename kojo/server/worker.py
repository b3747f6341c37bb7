"""Pre-forked workers (``static`` and ``dynamic`` modes): claim and run jobs one after another.

Fork cost is paid once per worker instead of once per job. A worker tells the arbiter what it runs
through a shared pipe (one short line per event, atomic below PIPE_BUF), so the arbiter can enforce
timeouts and aborts by killing the worker's process group, exactly as it does for a job process.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
from collections.abc import Sequence

from django.db import DatabaseError, connections

from kojo.claims import claim
from kojo.conf import settings
from kojo.server import exitcodes
from kojo.server.execution import run_job, with_db_retry
from kojo.server.forking import fork_child
from kojo.transitions import ReportedSuccess, complete_reported

logger = logging.getLogger(__name__)

# Signals a worker takes synchronously while idle: SIGUSR1 = "jobs are due", SIGTERM = "stop",
# SIGUSR2 = "finish the current job, then exit" (drain, reload, retirement).
IDLE_SIGNALS = {signal.SIGUSR1, signal.SIGTERM, signal.SIGUSR2}
STOP_SIGNALS = {signal.SIGTERM, signal.SIGUSR2}


def spawn_worker(
    index: int, *, server_pid: int, server_id: int, host: str, report_fd: int, queues: Sequence[str]
) -> int:
    return fork_child(
        server_pid,
        f"worker[{index}]",
        lambda: Worker(server_pid, server_id, host, report_fd, queues).run(),
        own_process_group=True,
        failure_code=exitcodes.BOOT_ERROR,
    )


class Worker:
    def __init__(self, server_pid: int, server_id: int, host: str, report_fd: int, queues: Sequence[str]):
        self.server_pid, self.server_id, self.host = server_pid, server_id, host
        self.report_fd, self.queues = report_fd, list(queues)
        self.pid = os.getpid()
        self.jobs_done = 0
        self.stopping = False
        # Successes to record with the next claim, in its transaction (one commit per job, not two).
        self.finished: list[ReportedSuccess] = []

    def report(self, text: str) -> None:
        os.write(self.report_fd, f"{self.pid} {text}\n".encode())

    def run(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, IDLE_SIGNALS)
        delay = settings.POLL_INTERVAL
        while not self.stopping and os.getppid() == self.server_pid:
            try:
                jobs = claim(
                    1,
                    server_id=self.server_id,
                    host=self.host,
                    pid=self.pid,
                    queues=self.queues,
                    finishing=self.finished,
                )
                self.finished = []
            except DatabaseError:
                logger.warning("worker %s: database unavailable, retrying in %.1f s", self.pid, delay)
                connections.close_all()
                self.idle(delay)
                delay = min(delay * 2, 10.0)
                continue
            delay = settings.POLL_INTERVAL
            if not jobs:
                self.idle(settings.POLL_INTERVAL)
                continue
            self.work(jobs[0])
            if self.worn_out():
                break
        if self.finished:
            with_db_retry(lambda: complete_reported(self.finished))

    def idle(self, seconds: float) -> None:
        received = signal.sigtimedwait(IDLE_SIGNALS, seconds)
        if received is not None and received.si_signo in STOP_SIGNALS:
            self.stopping = True

    def work(self, job) -> None:
        timeout = job.job_type.timeout_delta
        self.report(f"busy {job.pk} {job.attempts} {timeout.total_seconds() if timeout else 0}")
        # While the job runs, SIGTERM reaches run_job's handler (abort requested), not the idle wait.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        try:
            actor = f"{self.host}:{self.pid}"
            context = run_job(job, actor=actor, report_success=self.defer_success(job))
        finally:
            signal.pthread_sigmask(signal.SIG_BLOCK, IDLE_SIGNALS)
            self.jobs_done += 1
            self.report("idle")
        # A SIGTERM during the job (server stopping) let the job wrap up; now the worker stops too.
        if context.abort_requested or STOP_SIGNALS & signal.sigpending():
            self.stopping = True

    def defer_success(self, job):
        def keep(result) -> bool:
            self.finished.append(ReportedSuccess(job.pk, job.attempts, result, f"{self.host}:{self.pid}"))
            return True

        return keep

    def worn_out(self) -> bool:
        """Recycle after N jobs or M MiB, so leaks in job code cannot grow without bound."""
        if settings.MAX_JOBS_PER_WORKER and self.jobs_done >= settings.MAX_JOBS_PER_WORKER:
            return True
        if settings.MAX_WORKER_MEMORY_MB:
            peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            return peak_mb > settings.MAX_WORKER_MEMORY_MB
        return False
