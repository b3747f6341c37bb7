"""The root process of ``kojo_server``: it owns the children and nothing else blocks it.

Signal handlers only queue the signal number (and wake the loop through a pipe). One loop handles
queued signals, keeps the server's lease (renews it when due; stops every job process at once when it
lapsed, see ``kojo.server.lease``), then reaps children, reads what pooled workers report, kills
children that overran their timeout, were aborted or whose run was taken over, and keeps the pool full.
In ``ondemand`` mode the arbiter claims due jobs itself and forks one process per job; in ``static``
and ``dynamic`` modes it keeps pre-forked workers that claim for themselves. Stopping is two-stage: drain for
``GRACEFUL_TIMEOUT``, then SIGTERM, ``KILL_GRACE``, SIGKILL; a second stop signal skips the drain.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import select
import signal
import socket
import time
from dataclasses import dataclass, field

from django.db import (
    DatabaseError,
    DataError,
    IntegrityError,
    NotSupportedError,
    ProgrammingError,
    connections,
    transaction,
)
from django.db.models import Case, F, Value, When

import kojo
from kojo import lifecycle, messaging, signals
from kojo.checks import stored_type_problems, unapplied_migrations
from kojo.claims import OLDEST_FIRST_EVERY, UnsureClaims, claim, new_token
from kojo.conf import settings
from kojo.models import Job, Server
from kojo.registry import registry
from kojo.retries import end_attempt, give_back_unstarted, requeue_interrupted
from kojo.server import exitcodes, forking, health
from kojo.server import lease as lease_module
from kojo.server.forking import set_title
from kojo.server.health import HealthFile
from kojo.server.heartbeat import beat, register_server
from kojo.server.housekeeper import spawn_housekeeper
from kojo.server.job_process import spawn_job_process
from kojo.server.lease import Lease, bounded
from kojo.server.reload import Probe
from kojo.server.worker import spawn_worker
from kojo.states import JobState, Outcome
from kojo.transitions import ReportedSuccess, complete_reported, transition

logger = logging.getLogger(__name__)

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGCHLD)
# A child that dies this soon after it was forked, this many times in a row, halts the server.
BOOT_WINDOW, BOOT_FAILURES = 1.0, 5
# Seconds the loop lets workers' report lines gather before it reads them again.
REPORT_BATCHING = 0.002
# Seconds an abort message for a job no child runs is kept, in case a worker claimed it ahead.
ABORT_MEMORY = 60.0
# Seconds between tries to record reported successes while the database is away.
REPORTED_RETRY = 0.5
# Reported successes are recorded together once the oldest has waited this long (seconds), or sooner
# with the next claim.
REPORTED_DELAY = 0.01


@dataclass
class Child:
    pid: int
    kind: str  # "job", "worker" or "housekeeper"
    index: int = 0
    started: float = field(default_factory=time.monotonic)
    job_id: int | None = None
    fence: int = 0
    server_id: int | None = None  # a pooled worker's: the server row it claims under
    type_code: str = ""
    deadline: float | None = None
    timed_out: tuple[int | None, int | None] | None = None  # the (job, fence) a timeout kill was for
    timeout: float = 0.0
    idle_since: float | None = None
    kill_reason: str = ""
    retiring: str = ""  # why a pooled worker exits on its own or when asked: recycled, memory, idle
    term_sent_at: float | None = None
    pid_recorded: bool = False


def report_broken_types() -> None:
    """Log each stored job type that is wrong as it stands (a worker path that does not import, a cron
    expression edited by hand), by type code: ``manage.py check`` sees stored rows only when asked.
    Only the database's errors reach the caller: a check that fails otherwise must not stop a server."""
    try:
        problems = stored_type_problems()
    except DatabaseError:
        raise
    except Exception:
        logger.exception("could not check the stored job types")
        return
    for type_code, found in problems.items():
        logger.error("job type %r is misconfigured: %s", type_code, "; ".join(found))


class Arbiter:
    def __init__(self, *, mode: str, concurrency: int, queues: list[str]):
        self.mode, self.concurrency, self.queues = mode, concurrency, queues
        self.pid = os.getpid()
        self.host = socket.gethostname()
        self.actor = f"{self.host}:{self.pid}"
        self.children: dict[int, Child] = {}
        self.signal_queue: list[int] = []
        self.stop_requested = 0  # 1 = drain, 2 = stop now
        self.probe: Probe | None = None  # a reload's check that the code on disk starts
        self.reexec = False  # after the drain, exec the same command line: a reload
        self.server: Server | None = None
        self.claims = 0
        self.lease = Lease()
        self.next_beat = 0.0
        self.unsure = UnsureClaims()
        self.taken_over: set[tuple[int, int, int]] = set()  # (pid, job, fence) seen taken over once
        self.quick_deaths = 0
        self.db_backoff = 0.0
        self.database_problem = ""  # why the database's last answer was a refusal, while it lasts
        self.health = HealthFile(self.pid)
        self.report_buffer = b""
        self.more_due = False
        self.unsettled: list[tuple[Child, int]] = []
        self.reported: list[ReportedSuccess] = []
        self.reported_since = 0.0
        self.aborts_ahead: dict[int, float] = {}  # job id -> when its abort message came
        self.last_woken = 0.0
        self.subscriber = (
            messaging.Subscriber(messaging.WAKE, messaging.ABORT) if messaging.enabled() else None
        )

    # --- start-up -------------------------------------------------------------------------------
    def run(self) -> int:
        set_title(f"server[{self.pid}]")
        # From here on every session of this process bounds its waits (lock_timeout, statement_timeout).
        lease_module.bounded_waits = True
        connections.close_all()
        self.wakeup_r, self.wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # Close-on-exec both: a program a job runs must not hold the server's pipes.
        self.report_r, self.report_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        forking.parent_only_fds[:] = [self.wakeup_r, self.wakeup_w, self.report_r]
        signal.set_wakeup_fd(self.wakeup_w, warn_on_full_buffer=False)
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, self.queue_signal)
        self.show_health()
        if (refused := self.start_up()) is not None:
            return refused
        logger.info(
            "server[%s] started on %s: kojo %s, mode %s, concurrency %s, queues %s, database %s, locks %s",
            self.pid,
            self.host,
            kojo.__version__,
            self.mode,
            self.concurrency,
            ", ".join(self.queues) or "all",
            describe_database(),
            settings.LOCK_BACKEND,
        )
        try:
            code = self.loop()
        finally:
            self.stop()
        return code

    def start_up(self) -> int | None:
        """Sync job types and register this server, waiting out a database that is not up yet (a
        node booting beside its database). None when started; else the exit code: OK if told to stop
        meanwhile, NOT_MIGRATED for a database that answers but lacks kojo's tables (waiting would
        not help)."""
        delay = 0.5
        while not self.stop_requested:
            try:
                if missing := self.missing_migrations():
                    logger.critical(
                        "the database lacks kojo's migrations %s: run `manage.py migrate`, then start "
                        "the server again",
                        ", ".join(missing),
                    )
                    return exitcodes.NOT_MIGRATED
                registry.sync()
                report_broken_types()
                sent = time.monotonic()
                self.server = register_server(self.mode, self.concurrency, self.queues)
                self.lease.renewed(sent)
                self.next_beat = sent + settings.HEARTBEAT_INTERVAL
                return None
            except DatabaseError as error:
                logger.warning(
                    "database unavailable at start-up (%s); retrying in %.1f s", str(error).strip(), delay
                )
                self.database_problem = str(error).strip()
                connections.close_all()
                waited_until = time.monotonic() + delay
                while not self.stop_requested and (left := waited_until - time.monotonic()) > 0:
                    self.show_health()  # alive, and degraded: a probe must not take this for stuck
                    select.select([self.wakeup_r], [], [], min(left, health.EVERY))  # a signal cuts it short
                    self.drain_wakeups()
                    self.handle_signals()
                delay = min(delay * 2, 10.0)
        return exitcodes.OK

    def missing_migrations(self) -> list[str]:
        """kojo's migrations the database lacks. A role that may not read Django's migration table
        (migrations run under another) cannot tell: the server goes on; a database that does not
        answer raises, and start-up waits for it."""
        try:
            return unapplied_migrations()
        except (ProgrammingError, NotSupportedError) as error:
            logger.warning("could not check kojo's migrations (%s); starting anyway", str(error).strip())
            connections.close_all()
            return []

    def queue_signal(self, signum, frame) -> None:
        self.signal_queue.append(signum)

    # --- the loop -------------------------------------------------------------------------------
    def loop(self) -> int:
        while not self.stop_requested:
            self.wait()
            self.handle_signals()
            if self.stop_requested:
                break
            self.keep_lease()
            self.read_reports()
            self.reap_children()
            self.follow_probe()
            if self.quick_deaths >= BOOT_FAILURES:
                logger.critical("children keep dying at start-up; stopping the server")
                return exitcodes.BOOT_ERROR
            self.kill_stuck_children()
            self.guarded(self.maintain_children)
            if self.reported and time.monotonic() - self.reported_since >= REPORTED_DELAY:
                self.guarded(self.record_reported)
            self.keep_lease()
            self.show_health()
        return exitcodes.OK

    def show_health(self) -> None:
        self.health.update(
            mode=self.mode,
            running=len(self.job_children()),
            database=self.database_problem or "ok",
            messaging=self.subscriber.problem if self.subscriber else "off",
            stopping=bool(self.stop_requested),
        )

    def wait(self) -> None:
        timeout = 0.0 if self.more_due and self.free_job_slots() else settings.POLL_INTERVAL
        if self.db_backoff:
            timeout = self.db_backoff
        # Never sleep past a renewal, nor past the lease's end while anything runs under it.
        timeout = min(timeout, self.next_deadline_in(), self.next_beat - time.monotonic())
        if self.job_children():
            timeout = min(timeout, self.lease.remaining())
        watched = [self.wakeup_r, self.report_r]
        message_fd = self.subscriber.fileno() if self.subscriber else None
        if message_fd is not None:
            watched.append(message_fd)
        try:
            ready, _, _ = select.select(watched, [], [], max(timeout, 0.0))
        except InterruptedError:
            return
        if message_fd is not None and message_fd in ready:
            self.handle_messages()
        if self.wakeup_r in ready:
            self.drain_wakeups()
        elif ready == [self.report_r]:
            # Busy workers report thousands of lines a second: take them in batches, not one by one.
            pause = self.last_woken + REPORT_BATCHING - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        self.last_woken = time.monotonic()

    def drain_wakeups(self) -> None:
        try:
            while os.read(self.wakeup_r, 4096):
                pass
        except BlockingIOError:
            pass

    def handle_messages(self) -> None:
        """Wake-ups make the next loop claim at once (or rouse one idle worker); aborts kill the job
        here if this server runs it. Both are also found by polling, so a lost message only delays."""
        for name, payload in self.subscriber.messages():
            if name == messaging.WAKE:
                self.more_due = True
                idle = [
                    child for child in self.children.values() if child.kind == "worker" and child.idle_since
                ]
                if idle:
                    self.signal_child(idle[0], signal.SIGUSR1)
            elif name == messaging.ABORT:
                job_id = payload.get("job_id")
                running = [child for child in self.job_children() if child.job_id == job_id]
                for child in running:
                    if child.term_sent_at is None:
                        logger.info("job %s: abort message received; stopping its process group", job_id)
                        self.terminate(child, "abort")
                if not running and self.mode != "ondemand":
                    # Perhaps claimed ahead by one of our workers: stopped as soon as it starts.
                    now = time.monotonic()
                    self.aborts_ahead = {j: t for j, t in self.aborts_ahead.items() if now - t < ABORT_MEMORY}
                    self.aborts_ahead[job_id] = now

    def next_deadline_in(self) -> float:
        now = time.monotonic()
        soonest = settings.POLL_INTERVAL
        if self.reported:
            soonest = self.reported_since + REPORTED_DELAY - now
        for child in self.children.values():
            if child.term_sent_at is not None:
                soonest = min(soonest, child.term_sent_at + settings.KILL_GRACE - now)
            elif child.deadline is not None:
                soonest = min(soonest, child.deadline - now)
        return max(soonest, 0.01)

    def guarded(self, step) -> None:
        """Run a step that talks to the database; while the database is away, log and back off. The
        lease comes first: it is renewed before the step if due, whatever the backoff."""
        self.keep_lease()
        try:
            step()
            self.db_backoff = 0.0
            self.database_problem = ""
        except DatabaseError as error:
            self.database_problem = str(error).strip()
            self.db_backoff = min(max(self.db_backoff * 2, 0.5), 10.0)
            logger.warning("database unavailable (%s); retrying in %.1f s", error, self.db_backoff)
            connections.close_all()

    def handle_signals(self) -> None:
        while self.signal_queue:
            signum = self.signal_queue.pop(0)
            if signum in (signal.SIGTERM, signal.SIGINT):
                if self.reexec:
                    self.reexec = False  # during a reload's drain: the drain goes on, as a stop's
                else:
                    self.stop_requested = 2 if self.stop_requested else 1
                logger.info("server[%s]: %s, stopping", self.pid, signal.Signals(signum).name)
            elif signum == signal.SIGQUIT:
                self.stop_requested, self.reexec = 2, False
            elif signum == signal.SIGHUP:
                self.reload()

    def reload(self) -> None:
        """SIGHUP: probe the code on disk, then drain and run it (kojo.server.reload)."""
        if self.stop_requested or self.probe is not None:
            return  # stopping anyway, or a reload is under way
        logger.info("server[%s]: SIGHUP: checking that the code on disk starts", self.pid)
        try:
            self.probe = Probe()
        except OSError as error:  # no interpreter at that path any more, no temp space, no fork
            logger.error("server[%s]: reload refused, the probe could not start (%s)", self.pid, error)

    def follow_probe(self) -> None:
        """A finished probe: drain and start again with the new code, or say why not and go on."""
        probe = self.probe
        if probe is None:
            return
        if probe.overdue():
            probe.kill()
        elif probe.status is None:
            return
        if probe.succeeded:
            logger.info(
                "server[%s]: the code on disk starts; draining, then starting again with it", self.pid
            )
            self.stop_requested, self.reexec = max(self.stop_requested, 1), True
        else:
            logger.error(
                "server[%s]: reload refused, the code on disk does not start (%s); still running the "
                "code it started with",
                self.pid,
                probe.failure(),
            )
        probe.close()
        self.probe = None

    # --- children ---------------------------------------------------------------------------------
    def reap_children(self) -> None:
        reaped = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if self.probe is not None and pid == self.probe.pid:
                self.probe.exited(status)
                continue
            reaped.append((pid, status))
        if reaped:
            # What the dead wrote before dying is in the pipe ("busy" or "done" lines): read it while
            # they are still known children.
            self.read_reports()
        for pid, status in reaped:
            child = self.children.pop(pid, None)
            if child is None:
                continue
            if time.monotonic() - child.started < BOOT_WINDOW and status != 0 and child.job_id is None:
                self.quick_deaths += 1
            elif child.kind != "housekeeper":
                self.quick_deaths = 0
            if child.kill_reason == "lease" and child.kind == "worker":
                self.quick_deaths = 0  # killed on purpose, not failing to start
            if child.kind == "worker":
                self.announce_worker("worker_stopped", child, reason=why_stopped(child, status))
            # A job process that exits 0 on its own has recorded or reported its job's ending; a pooled
            # worker that exits may leave jobs working (running or claimed ahead), as may any child
            # that dies.
            if child.kind == "worker" or (child.kind == "job" and (status != 0 or child.kill_reason)):
                self.unsettled.append((child, status))
        if self.unsettled:
            # A job that reported success did succeed: record that before settling what is left, and
            # settle nothing while it cannot be recorded (the job would look unstarted or crashed).
            self.flush_reported()
            if not self.reported:
                self.guarded(self.settle_all)

    def settle_all(self) -> None:
        """Settle reaped children's jobs; what the database refuses now is tried again next loop."""
        while self.unsettled:
            child, status = self.unsettled[0]
            self.settle(child, status)
            self.unsettled.pop(0)

    def settle(self, child: Child, status: int) -> None:
        """Record the ending of jobs whose process exited while they were still working."""
        jobs = Job.objects.select_related("job_type").filter(state=JobState.WORKING)
        if child.kind == "worker":
            # Every job a pooled worker claimed carries its pid. The one it last reported busy with
            # was running; it reports "busy" before it starts a job, so the others never started.
            jobs = jobs.filter(server_id=child.server_id, pid=child.pid)
        else:
            jobs = jobs.filter(pk=child.job_id, fence=child.fence)
        for job in jobs:
            self.keep_lease()
            if child.kind == "worker" and (job.pk, job.fence) != (child.job_id, child.fence):
                give_back_unstarted(job, f"not started: worker {child.pid} ended first", actor=self.actor)
            else:
                self.settle_running(job, child, status)

    def settle_running(self, job: Job, child: Child, status: int) -> None:
        if child.kill_reason == "timeout" and child.timed_out != (job.pk, job.fence):
            # A pooled worker's job finished just in time and the kill landed on its next one.
            reason = f"interrupted: stopped by a timeout meant for job {child.timed_out[0]}"
            requeue_interrupted(job, reason, actor=self.actor)
        elif child.kill_reason == "timeout":
            end_attempt(job, Outcome.TIMED_OUT, f"timed out after {child.timeout:g} s", actor=self.actor)
        elif child.kill_reason == "abort" and not job.abort_requested_by:
            # The kill was meant for a job claimed ahead that finished first; this one was not aborted.
            requeue_interrupted(
                job, "interrupted: stopped by an abort meant for another job", actor=self.actor
            )
        elif child.kill_reason == "abort":
            by = job.abort_requested_by
            transition(
                job.pk,
                JobState.CANCELED,
                expect=[JobState.WORKING],
                outcome=Outcome.ABORTED,
                reason=f"aborted by {by}",
                actor=self.actor,
                strict=False,
                where={"fence": job.fence},
            )
        elif child.kill_reason == "stop":
            requeue_interrupted(job, f"interrupted: server[{self.pid}] stopped", actor=self.actor)
        elif child.kill_reason == "lease":
            reason = f"stopped: server[{self.pid}] could not renew its lease in time"
            end_attempt(job, Outcome.ORPHANED, reason, actor=self.actor)
        else:
            end_attempt(job, Outcome.CRASHED, describe_exit(status), actor=self.actor)

    def read_reports(self) -> None:
        """Lines from pooled workers, ``<pid> busy <job> <fence> <timeout>`` or ``<pid> idle``, and
        from job processes, ``<pid> done <job> <fence> <result JSON>``, recorded here in batches."""
        try:
            while chunk := os.read(self.report_r, 65536):
                self.report_buffer += chunk
        except BlockingIOError:
            pass
        *lines, self.report_buffer = self.report_buffer.split(b"\n")
        now = time.monotonic()
        for line in lines:
            try:
                self.read_report(line, now)
            except (ValueError, IndexError, UnicodeDecodeError) as error:  # JSONDecodeError is a ValueError
                logger.error("ignored a malformed report line %r: %s", line[:200], error)

    def read_report(self, line: bytes, now: float) -> None:
        """One line; a line that does not parse raises (ValueError, IndexError), and is skipped."""
        parts = line.decode().split(maxsplit=4)
        if len(parts) == 5 and parts[1] == "done":
            job_id, fence, result = int(parts[2]), int(parts[3]), json.loads(parts[4])
            if not self.reported:
                self.reported_since = now
            self.reported.append(ReportedSuccess(job_id, fence, result, f"{self.host}:{parts[0]}"))
            worker = self.children.get(int(parts[0]))
            if worker is not None and worker.kind == "worker" and worker.job_id == job_id:
                worker.job_id, worker.deadline, worker.idle_since = None, None, now
            return
        child = self.children.get(int(parts[0]))
        if child is None:
            return
        if parts[1] == "retiring":
            child.retiring = line.decode().split(" ", 2)[2].strip()
        elif parts[1] == "busy":
            child.job_id, child.fence, child.timeout = int(parts[2]), int(parts[3]), float(parts[4])
            child.deadline = now + child.timeout if child.timeout else None
            child.idle_since = None
            if self.aborts_ahead.pop(child.job_id, None) is not None:
                logger.info("job %s: aborted before it started; stopping its worker", child.job_id)
                self.terminate(child, "abort")
        elif parts[1] == "idle":
            child.job_id, child.deadline, child.idle_since = None, None, now
        else:
            raise ValueError(f"unknown report {parts[1]!r}")

    def flush_reported(self) -> None:
        """Record pending reported successes now, unless there are none (no database round trip)."""
        if self.reported:
            self.guarded(self.record_reported)

    def record_reported(self) -> None:
        """Record reported successes in one statement (in ``ondemand`` mode the claim usually carries
        them); kept if the database is away, and tried again after a pause."""
        try:
            with bounded():
                complete_reported(self.reported)
        except (DataError, IntegrityError):
            # One report the database refuses must not hold back the others: record them one by one.
            for report in self.reported:
                self.record_one(report)
        except DatabaseError:
            self.reported_since = time.monotonic() + REPORTED_RETRY  # due again after a pause
            raise
        self.reported = []

    def give_back_unsure(self) -> None:
        """Jobs a claim took whose answer was lost, never started: back to waiting, their attempt
        given back, rather than left working under a row about to go (rescued later, charged)."""
        with bounded():
            jobs = self.unsure.recover(server_id=self.server.pk)
        for job in jobs:
            give_back_unstarted(
                job, "not started: its claim's answer was lost, and the server stopped", actor=self.actor
            )

    def record_one(self, report: ReportedSuccess) -> None:
        try:
            with bounded():
                complete_reported([report])
        except (DataError, IntegrityError) as error:
            logger.error("job %s: its result could not be stored: %s", report.job_id, error)
            with bounded():
                transition(
                    report.job_id,
                    JobState.COMPLETE_FAILED,
                    expect=[JobState.WORKING],
                    outcome=Outcome.FAILED,
                    reason=f"the result could not be stored: {str(error).strip()}",
                    actor=report.actor,
                    strict=False,
                    where={"fence": report.fence},
                )

    def kill_stuck_children(self) -> None:
        now = time.monotonic()
        if any(child.deadline is not None and now >= child.deadline for child in self.children.values()):
            self.read_reports()  # a worker may have said meanwhile that it finished in time
        for child in list(self.children.values()):
            if child.term_sent_at is not None:
                if now - child.term_sent_at >= settings.KILL_GRACE:
                    self.signal_child(child, signal.SIGKILL)
            elif child.deadline is not None and now >= child.deadline:
                logger.warning("job %s timed out after %g s; stopping it", child.job_id, child.timeout)
                child.timed_out = (child.job_id, child.fence)
                self.terminate(child, "timeout")

    def terminate(self, child: Child, reason: str) -> None:
        child.kill_reason = child.kill_reason or reason
        child.term_sent_at = time.monotonic()
        self.signal_child(child, signal.SIGTERM)

    def signal_child(self, child: Child, signum: int) -> None:
        """Job processes and workers lead their own process group: kill the group, grandchildren too."""
        try:
            if child.kind == "housekeeper":
                os.kill(child.pid, signum)
            else:
                os.killpg(child.pid, signum)
        except ProcessLookupError:
            try:
                os.kill(child.pid, signum)  # forked but not yet leading its group
            except ProcessLookupError:
                pass
        except OSError as error:
            if error.errno != errno.EPERM:
                raise

    def maintain_children(self) -> None:
        if not any(child.kind == "housekeeper" for child in self.children.values()):
            self.spawn(Child(spawn_housekeeper(server_pid=self.pid, host=self.host), "housekeeper"))
        if self.lease.lapsed():
            return  # nothing new runs until the lease is renewed
        if self.mode == "ondemand":
            self.fork_for_due_jobs()
        else:
            self.keep_workers()

    def spawn(self, child: Child) -> None:
        self.children[child.pid] = child

    def announce_worker(self, event: str, child: Child, **extra) -> None:
        """worker_started / worker_stopped, as a signal here and an event for listen() (kojo.lifecycle)."""
        fields = {"pid": child.pid, "index": child.index, "server_pid": self.pid, "host": self.host, **extra}
        lifecycle.send(getattr(signals, event), event, Arbiter, **fields)

    def job_children(self) -> list[Child]:
        return [child for child in self.children.values() if child.kind != "housekeeper"]

    def free_job_slots(self) -> int:
        return self.concurrency - len(self.job_children())

    def fork_for_due_jobs(self) -> None:
        free = self.free_job_slots()
        self.more_due = False
        if free <= 0:
            return
        self.claims += 1
        token = new_token()
        with bounded():
            jobs = self.unsure.recover(server_id=self.server.pk)
        if not jobs:
            try:
                jobs = claim(
                    free,
                    server_id=self.server.pk,
                    host=self.host,
                    pid=self.pid,
                    queues=self.queues,
                    oldest_first=self.claims % OLDEST_FIRST_EVERY == 0,
                    finishing=self.reported,
                    token=token,
                    phase=bounded,
                )
            except DatabaseError:
                self.unsure.failed(token)
                raise
            self.reported = []  # recorded by the claim's own statement
        self.more_due = len(jobs) == free
        for job in jobs:
            timeout = job.timeout_delta
            pid = spawn_job_process(
                job, server_pid=self.pid, host=self.host, report_fd=self.report_w, lease=self.lease
            )
            self.spawn(
                Child(
                    pid,
                    "job",
                    job_id=job.pk,
                    fence=job.fence,
                    type_code=job.job_type.type_code,
                    timeout=timeout.total_seconds() if timeout else 0.0,
                    deadline=time.monotonic() + timeout.total_seconds() if timeout else None,
                )
            )

    def keep_workers(self) -> None:
        workers = [child for child in self.children.values() if child.kind == "worker"]
        wanted = self.concurrency
        if self.mode == "dynamic":
            busy = sum(1 for child in workers if child.job_id is not None)
            idle = len(workers) - busy
            wanted = max(settings.MIN_WORKERS, min(self.concurrency, busy + 1))
            # Retire workers idle for a while beyond the minimum.
            retire_after = 10 * settings.POLL_INTERVAL
            now = time.monotonic()
            for child in workers:
                if idle > settings.MIN_WORKERS and child.idle_since and now - child.idle_since > retire_after:
                    child.retiring = child.retiring or "idle"
                    self.signal_child(child, signal.SIGUSR2)
                    child.idle_since = None
                    idle -= 1
        used = {child.index for child in workers}
        for index in range(1, self.concurrency + 1):
            if len(used) >= wanted:
                break
            if index not in used:
                pid = spawn_worker(
                    index,
                    server_pid=self.pid,
                    server_id=self.server.pk,
                    host=self.host,
                    report_fd=self.report_w,
                    queues=self.queues,
                    lease=self.lease,
                )
                worker = Child(
                    pid, "worker", index=index, server_id=self.server.pk, idle_since=time.monotonic()
                )
                self.spawn(worker)
                self.announce_worker("worker_started", worker)
                used.add(index)

    # --- the lease ------------------------------------------------------------------------------
    def keep_lease(self) -> None:
        """Stop every run at once if the lease lapsed; renew it when due. Called before each step
        that may wait on the database, so no step can starve the renewal."""
        if self.lease.lapsed():
            self.fence_off("its lease lapsed (no renewal confirmed in time)")
        if time.monotonic() >= self.next_beat and self.server is not None:
            self.renew()

    def renew(self) -> None:
        sent = time.monotonic()
        self.next_beat = sent + settings.HEARTBEAT_INTERVAL
        try:
            alive = beat(self.server, self.describe_children())
            if not alive:
                logger.error("server[%s]: my server row is gone (declared dead?); registering anew", self.pid)
                # Its runs belong to the old row and are rescued: stop them, start afresh under the new.
                self.fence_off("it registered again under a new id")
                self.server = register_server(self.mode, self.concurrency, self.queues)
        except DatabaseError as error:
            logger.warning("server[%s]: could not renew its lease (%s)", self.pid, str(error).strip())
            self.database_problem = str(error).strip()
            connections.close_all()
            return
        if self.lease.lapsed():
            # Confirmed too late: the runs may have been taken over meanwhile. Stop them before going on.
            self.fence_off("its lease lapsed before the renewal was confirmed")
        self.lease.renewed(sent)
        self.guarded(self.check_runs)

    def fence_off(self, why: str) -> None:
        """Kill every job process and pooled worker now (SIGKILL): they may no longer be trusted."""
        victims = [child for child in self.job_children() if child.kill_reason != "lease"]
        for child in victims:  # before logging: a stalled log pipe must not delay the kill
            self.kill_untrusted(child)
        if victims:
            logger.error("server[%s]: %s; killed %d job processes", self.pid, why, len(victims))

    def kill_untrusted(self, child: Child) -> None:
        """SIGKILL a child whose run may no longer be trusted: no grace, nothing more it may do."""
        child.kill_reason, child.term_sent_at = "lease", time.monotonic()
        self.signal_child(child, signal.SIGKILL)

    def check_runs(self) -> None:
        """After a renewal: kill runs taken over elsewhere (their fence moved on) and aborted ones,
        record running jobs' own pids, and run what a claim whose answer was lost took."""
        self.read_reports()
        running = {child.job_id: child for child in self.job_children() if child.job_id is not None}
        if running:
            rows = {
                pk: (fence, aborted_by)
                for pk, fence, aborted_by in Job.objects.filter(pk__in=list(running)).values_list(
                    "pk", "fence", "abort_requested_by"
                )
            }
            self.read_reports()  # a worker that moved on meanwhile is not running that job any more
            suspects, self.taken_over = self.taken_over, set()
            for job_id, child in running.items():
                if child.job_id != job_id or child.kill_reason == "lease":
                    continue
                fence, aborted_by = rows.get(job_id, (None, ""))
                if fence != child.fence:
                    # Seen at two renewals in a row: a worker whose job ended itself and was claimed
                    # again elsewhere may simply not have said yet that it moved on.
                    run = (child.pid, job_id, child.fence)
                    if run not in suspects:
                        self.taken_over.add(run)
                        continue
                    logger.error("job %s: run %s was taken over; killing its process", job_id, child.fence)
                    self.kill_untrusted(child)
                elif aborted_by and child.term_sent_at is None:
                    logger.info("job %s: abort requested; stopping its process group", job_id)
                    self.terminate(child, "abort")
        self.record_job_pids()

    def record_job_pids(self) -> None:
        """The claim recorded this server's pid on each job; jobs still running at a renewal get their
        own process's pid (most short jobs are over before that, and need no write). A row the job
        itself holds locked is skipped, never waited for."""
        unrecorded = {c.job_id: c for c in self.job_children() if c.kind == "job" and not c.pid_recorded}
        if not unrecorded:
            return
        with transaction.atomic(using=settings.DATABASE):
            free = list(
                Job.objects.select_for_update(skip_locked=True)
                .filter(pk__in=list(unrecorded), state=JobState.WORKING)
                .values_list("pk", "fence")
            )
            ids = [pk for pk, fence in free if fence == unrecorded[pk].fence]
            if ids:
                Job.objects.filter(pk__in=ids).update(
                    pid=Case(*(When(pk=pk, then=Value(unrecorded[pk].pid)) for pk in ids), default=F("pid"))
                )
        for pk in ids:
            unrecorded[pk].pid_recorded = True

    def describe_children(self) -> list[dict]:
        return [
            {"pid": child.pid, "kind": child.kind, "job_id": child.job_id, "type_code": child.type_code}
            for child in self.children.values()
        ]

    # --- stopping -------------------------------------------------------------------------------
    def stop(self) -> None:
        """Drain (unless told twice), then stop what still runs, record it honestly, and leave."""
        for child in self.children.values():
            if child.kind == "housekeeper":
                self.signal_child(child, signal.SIGTERM)
            elif child.kind == "worker":
                self.signal_child(child, signal.SIGUSR2)  # finish the current job, then exit
        self.guarded(lambda: Server.objects.filter(pk=self.server.pk).update(stopping=True))
        self.guarded(self.give_back_unsure)
        self.flush_reported()
        deadline = time.monotonic() + settings.GRACEFUL_TIMEOUT
        while self.job_children() and self.stop_requested < 2 and time.monotonic() < deadline:
            self.wait()
            self.handle_signals()
            self.read_reports()
            self.reap_children()
            self.flush_reported()
            self.kill_stuck_children()
            self.keep_lease()
        for child in list(self.children.values()):
            if child.term_sent_at is None:
                self.terminate(child, "stop")
        while self.children:
            self.wait()
            self.read_reports()
            self.reap_children()
            self.flush_reported()
            self.kill_stuck_children()
            self.keep_lease()
            self.show_health()
        if self.probe is not None:
            if self.probe.status is None:
                self.probe.kill()  # never a pid already reaped: it may be another process's now
            self.probe.close()
            self.probe = None
        self.guarded(lambda: Server.objects.filter(pk=self.server.pk).delete())
        self.health.remove()
        logger.info("server[%s] stopped", self.pid)


def describe_database(using: str | None = None) -> str:
    """Which database, for people: vendor, host, port and name, never the credentials."""
    using = using or settings.DATABASE
    connection = connections[using]
    params = connection.settings_dict
    where = ":".join(str(part) for part in (params.get("HOST"), params.get("PORT")) if part)
    return f"{connection.vendor} {params.get('NAME')}" + (f" on {where}" if where else "")


def why_stopped(child: Child, status: int) -> str:
    """A pooled worker's reason to have exited, as worker_stopped says it."""
    if child.kill_reason == "lease":
        return "lease lapsed"
    if child.kill_reason:
        return child.kill_reason  # killed (timeout, abort, stop): whatever it meant to do on its own
    if child.retiring:
        return child.retiring
    if status != 0:
        return describe_exit(status).replace(" without ending the job", "")
    return "stop"


def describe_exit(status: int) -> str:
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        name = signal.Signals(signum).name if signum in signal.Signals._value2member_map_ else str(signum)
        hint = ", perhaps out of memory?" if signum == signal.SIGKILL else ""
        return f"crashed: process terminated by {name}{hint}"
    return f"crashed: process exited with code {os.waitstatus_to_exitcode(status)} without ending the job"
