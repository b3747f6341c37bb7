"""Pre-forked workers (``static`` and ``dynamic`` modes): claim and run jobs one after another.

Fork cost is paid once per worker instead of once per job. A worker tells the arbiter what it runs
through a shared pipe (short lines, each write atomic below PIPE_BUF), so the arbiter can enforce
timeouts and aborts by killing the worker's process group, exactly as it does for a job process, and
record the worker's successes in batches.

When its recent jobs were short, a worker claims several at once and runs them in turn (prefetch):
one claim statement serves many jobs. When a job turns out slow, the worker hands the rest back to the
queue once that job has run ``PREFETCH_WINDOW`` seconds, while it still runs, so that an idle worker of
the fleet takes them at once: a job claimed ahead waits about one window, not for the slow job's end.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import select
import signal
import threading
import time
from collections.abc import Sequence

from django.db import DatabaseError, connections, transaction

from kojo.claims import OLDEST_FIRST_EVERY, UnsureClaims, claim, new_token
from kojo.conf import settings
from kojo.models import Job
from kojo.retries import give_back_unstarted
from kojo.server import exitcodes
from kojo.server.execution import run_job, with_db_retry
from kojo.server.forking import fork_child
from kojo.server.lease import Lease, watch

logger = logging.getLogger(__name__)

# Signals a worker takes synchronously while idle: SIGUSR1 = "jobs are due", SIGTERM = "stop",
# SIGUSR2 = "finish the current job, then exit" (drain, reload, retirement).
IDLE_SIGNALS = {signal.SIGUSR1, signal.SIGTERM, signal.SIGUSR2}
STOP_SIGNALS = {signal.SIGTERM, signal.SIGUSR2}
TERM_ONLY = frozenset({signal.SIGTERM})
# Weight of the latest job in the worker's moving average of run times.
RECENT_WEIGHT = 0.2
# Jobs the hand-back thread returns per transaction: one commit for several, and the first ones
# back in the queue before the last are done.
HAND_BACK_TOGETHER = 16


def spawn_worker(
    index: int,
    *,
    server_pid: int,
    server_id: int,
    host: str,
    report_fd: int,
    queues: Sequence[str],
    lease: Lease,
) -> int:
    def run() -> None:
        watch(lease)
        Worker(server_pid, server_id, host, report_fd, queues).run()

    return fork_child(
        server_pid,
        f"worker[{index}]",
        run,
        own_process_group=True,
        failure_code=exitcodes.BOOT_ERROR,
    )


class Worker:
    def __init__(self, server_pid: int, server_id: int, host: str, report_fd: int, queues: Sequence[str]):
        self.server_pid, self.server_id, self.host = server_pid, server_id, host
        self.report_fd, self.queues = report_fd, list(queues)
        self.pid = os.getpid()
        self.actor = f"{host}:{self.pid}"
        self.jobs_done = 0
        self.claims = 0
        self.stopping = False
        self.claimed: list[Job] = []  # claimed ahead, not started yet
        # Taken out of ``claimed`` to be handed back, not handed back yet: never to be run here.
        self.returning: list[Job] = []
        # The job run now and when (monotonic) it outlasts the window, while jobs wait behind it.
        self.running: tuple[Job, float] | None = None
        # Held by the hand-back thread while it hands jobs back, and by the main thread around every
        # change of ``running`` (see ``hand_back_ahead``).
        self.ahead = threading.Condition()
        self.hand_back_thread: threading.Thread | None = None
        self.hand_back_asleep = False  # the thread waits for a job to watch, with no deadline
        self.unsure = UnsureClaims()
        self.average_run: float | None = None  # seconds
        self.unsent: list[str] = []  # a success report, sent with the next "busy" or "idle"
        # Read once, not per job: a worker keeps its settings for life (SIGHUP replaces workers).
        self.prefetch_most, self.prefetch_window = settings.PREFETCH, settings.PREFETCH_WINDOW
        self.max_jobs, self.max_memory_mb = settings.MAX_JOBS_PER_WORKER, settings.MAX_WORKER_MEMORY_MB

    def run(self) -> None:
        # A SIGTERM that arrives between two jobs, outside run_job's own handler, means "stop".
        signal.signal(signal.SIGTERM, self.stop_requested)
        signal.pthread_sigmask(signal.SIG_BLOCK, IDLE_SIGNALS)
        delay = settings.POLL_INTERVAL
        while not self.stopping and os.getppid() == self.server_pid:
            if not self.claimed:
                self.claims += 1
                token = new_token()
                try:
                    self.claimed = self.unsure.recover(server_id=self.server_id) or claim(
                        1,
                        server_id=self.server_id,
                        host=self.host,
                        pid=self.pid,
                        queues=self.queues,
                        oldest_first=self.claims % OLDEST_FIRST_EVERY == 0,
                        prefetch=self.prefetch(),
                        token=token,
                    )
                except DatabaseError:
                    self.unsure.failed(token)
                    logger.warning("worker %s: database unavailable, retrying in %.1f s", self.pid, delay)
                    connections.close_all()
                    self.idle(delay)
                    delay = min(delay * 2, 10.0)
                    continue
                delay = settings.POLL_INTERVAL
                if not self.claimed:
                    self.idle(settings.POLL_INTERVAL)
                    continue
            self.work(self.claimed.pop(0))
            if worn := self.worn_out():
                self.report(f"retiring {worn}")
                break
        self.report("idle")  # pending successes first: they must not wait on the hand-back
        try:
            self.claimed += self.unsure.recover(server_id=self.server_id)  # a claim whose answer was lost
        except DatabaseError:
            connections.close_all()  # the server's housekeeping rescues them later, then
        self.hand_back(f"not started: worker {self.pid} stopped")

    def stop_requested(self, signum, frame) -> None:
        self.stopping = True

    def prefetch(self) -> int:
        """Jobs to claim at once: as many as fit PREFETCH_WINDOW at the recent average run time."""
        if self.average_run is None:
            return 1
        wanted = int(self.prefetch_window / max(self.average_run, 1e-4))
        if self.max_jobs:
            wanted = min(wanted, self.max_jobs - self.jobs_done)
        return max(1, min(wanted, self.prefetch_most))

    def idle(self, seconds: float) -> None:
        received = signal.sigtimedwait(IDLE_SIGNALS, seconds)
        if received is not None and received.si_signo in STOP_SIGNALS:
            self.stopping = True

    def work(self, job: Job) -> None:
        timeout = job.timeout_delta
        self.report(f"busy {job.pk} {job.fence} {timeout.total_seconds() if timeout else 0}")
        started = time.monotonic()
        watched = bool(self.claimed)
        if watched:
            self.watch_running(job, started + self.prefetch_window)
        try:
            # While the job runs, SIGTERM reaches run_job's handler (abort requested), not the idle wait.
            context = run_job(
                job, actor=self.actor, report_success=self.report_success(job), unblock=TERM_ONLY
            )
        finally:
            ended = time.monotonic()
            signal.pthread_sigmask(signal.SIG_BLOCK, IDLE_SIGNALS)
            self.jobs_done += 1
            if watched:
                # Waits for a hand-back under way; from here on ``claimed`` is the main thread's alone.
                with self.ahead:
                    self.running = None
        took = ended - started
        previous = self.average_run if self.average_run is not None else took
        self.average_run = (1 - RECENT_WEIGHT) * previous + RECENT_WEIGHT * took
        # Read after the hand-back thread let go: nothing left claimed means nothing to run next, and
        # the arbiter must not go on taking this worker for busy with the job that ended (its timeout).
        if not self.claimed or self.returning or took > self.prefetch_window:
            self.report("idle")
        if self.returning or took > self.prefetch_window:
            # What the thread could not hand back, or what a job ending before the thread woke left.
            self.hand_back(f"not started: job {job.pk} before it ran {took:.1f} s")
        # A SIGTERM during the job (server stopping) let the job wrap up; now the worker stops too.
        if context.abort_requested or STOP_SIGNALS & signal.sigpending():
            self.stopping = True

    def report_success(self, job: Job):
        """A plain success goes to the arbiter, which records many in one statement; a result too
        large for one atomic pipe write is recorded here."""

        def send(result) -> bool:
            line = f"done {job.pk} {job.fence} {json.dumps(result)}"
            if len(line) + 16 > select.PIPE_BUF:
                return False
            self.unsent.append(line)
            return True

        return send

    def report(self, line: str) -> None:
        """Write pending lines and ``line`` to the arbiter, each write whole (at most PIPE_BUF bytes,
        so lines of concurrent workers never interleave), waiting while the pipe is full."""
        lines, self.unsent = [*self.unsent, line], []
        chunks, chunk = [], b""
        for text in lines:
            encoded = f"{self.pid} {text}\n".encode()
            if len(chunk) + len(encoded) > select.PIPE_BUF:
                chunks.append(chunk)
                chunk = b""
            chunk += encoded
        chunks.append(chunk)
        for data in chunks:
            while True:
                try:
                    os.write(self.report_fd, data)
                    break
                except BlockingIOError:
                    select.select([], [self.report_fd], [], 1.0)

    def hand_back(self, reason: str) -> None:
        """Return jobs claimed ahead and not started to the queue, their attempt given back: first any
        the hand-back thread took and could not return (with its reason or this one, both true)."""
        with self.ahead:  # no job runs, so the thread hands nothing back: the lock only says so
            self.returning += self.claimed
            self.claimed = []
            self.give_back_returning(reason)

    def give_back_returning(self, reason: str, *, together: int = 1) -> None:
        """Hand back ``returning`` in order, ``together`` jobs per transaction, each one fenced (a job
        taken since, here or elsewhere, is left alone, so a transaction tried again after its commit
        went unanswered changes nothing twice), forgetting them once committed; raises when the
        database stays away, with the rest still listed."""
        while self.returning:
            jobs = self.returning[:together]

            def give_back(jobs: list[Job] = jobs) -> None:
                if len(jobs) == 1:  # its own transaction already
                    give_back_unstarted(jobs[0], reason, actor=self.actor)
                    return
                with transaction.atomic(using=settings.DATABASE):
                    for job in jobs:
                        give_back_unstarted(job, reason, actor=self.actor)

            with_db_retry(give_back)
            del self.returning[: len(jobs)]

    def watch_running(self, job: Job, until: float) -> None:
        """Tell the hand-back thread (started now if need be) that ``job`` runs with jobs claimed
        behind it, which go back to the queue if it still runs at ``until``."""
        if self.hand_back_thread is None:
            # Every signal blocked in the thread: they stay the main thread's to handle or wait for.
            previous = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
            try:
                self.hand_back_thread = threading.Thread(
                    target=self.hand_back_ahead, name="kojo-hand-back", daemon=True
                )
                self.hand_back_thread.start()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        with self.ahead:
            self.running = (job, until)
            # Woken only from its sleep: waiting for an earlier job's deadline, it finds this one's
            # then. One wake-up per window rather than per job, whose GIL hand-offs would slow the
            # jobs themselves.
            if self.hand_back_asleep:
                self.hand_back_asleep = False
                self.ahead.notify()

    def hand_back_ahead(self) -> None:
        """The hand-back thread, for the worker's life: once the running job outlasts the window, the
        jobs claimed behind it go back to the queue while it still runs, so an idle worker, here or
        on another server, takes them at once.

        It holds ``ahead`` while it hands jobs back, and the main thread takes ``ahead`` when its job
        ends, before it looks at ``claimed`` again: it never starts a job handed back or being handed
        back. A job the thread could not hand back stays in ``returning`` for the main thread, never
        in ``claimed``: its hand-back may have committed unseen, and someone else may run it now.
        Its database connection is its own (Django's are per thread), opened with the same settings
        as the main thread's and closed after each hand-back (they are rare; an idle session per
        worker would not be)."""
        with self.ahead:
            while True:
                if self.running is None or not self.claimed:
                    self.hand_back_asleep = True
                    self.ahead.wait()
                    continue
                job, until = self.running
                remaining = until - time.monotonic()
                if remaining > 0:
                    self.ahead.wait(remaining)
                    continue
                self.returning += self.claimed
                self.claimed = []
                try:
                    self.give_back_returning(
                        f"not started: job {job.pk} still running after {self.prefetch_window:g} s",
                        together=HAND_BACK_TOGETHER,
                    )
                except Exception:  # the rest stays in ``returning``: the main thread tries again
                    logger.exception("worker %s: could not hand back jobs claimed ahead", self.pid)
                finally:
                    connections.close_all()  # this thread's connections only

    def worn_out(self) -> str:
        """Why to recycle now ("" for no reason): after N jobs or M MiB, so leaks in job code cannot
        grow without bound."""
        if self.max_jobs and self.jobs_done >= self.max_jobs:
            return f"recycled after {self.jobs_done} jobs"
        if self.max_memory_mb:
            peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            if peak_mb > self.max_memory_mb:
                return f"memory above {self.max_memory_mb:g} MiB (peak {peak_mb:.0f} MiB)"
        return ""
