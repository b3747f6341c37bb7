"""Job callables used by the tests, registered the way a project registers its own."""

import os
import signal
import time
from pathlib import Path

from django.db import transaction
from django.dispatch import receiver

import kojo
import kojo.signals


@kojo.job_type("noop", name="No-op")
def noop(job):
    return None


@kojo.worker
def echo(job):
    return job.params


@kojo.worker
def sleep(job):
    """Sleep ``params["seconds"]``, then return the pid that ran the job."""
    time.sleep(job.params.get("seconds", 0.1))
    return {"pid": os.getpid()}


@kojo.worker
def timed_sleep(job):
    """Sleep ``params["seconds"]``; return the pid that ran the job and when (wall clock, seconds) it
    started and ended."""
    started = time.time()
    time.sleep(job.params.get("seconds", 0.1))
    return {"pid": os.getpid(), "started": started, "ended": time.time()}


@kojo.worker
def fail(job):
    raise ValueError(f"failure {job.attempt}")


@kojo.worker
def kill_self(job):
    """Die by SIGKILL (as an out-of-memory kill would) until attempt ``params["until"]``, then succeed."""
    if job.attempt < job.params.get("until", 10**6):
        os.kill(os.getpid(), signal.SIGKILL)
    return {"attempt": job.attempt}


@kojo.worker
def hang(job):
    """Ignore abort requests and sleep for a long time (timeouts and kills must stop it)."""
    time.sleep(job.params.get("seconds", 300))


@kojo.worker
def cooperative(job):
    """Sleep in small steps, reporting progress, until asked to abort."""
    for step in range(job.params.get("steps", 600)):
        if job.should_abort():
            return {"stopped_at": step}
        job.progress(step % 100)
        time.sleep(0.05)
    return {"done": True}


@kojo.worker
def fan_out(job):
    """Schedule a child job inside the job's transaction and ask to be retried once."""
    if job.attempt == 1:
        job.schedule("noop")
        job.retry(delay=0)
        return None
    job.complete_success({"attempt": job.attempt})


@kojo.readiness_check
def gate_open(params):
    """Ready once the file named by ``params["gate"]`` exists (tests open the gate by creating it)."""
    return os.path.exists(params["gate"])


@kojo.readiness_check
def is_urgent(params):
    return bool(params.get("urgent"))


@kojo.readiness_check
def broken_check(params):
    raise RuntimeError("this check is broken")


@kojo.worker
def fail_with(job):
    """Raise the built-in exception named by ``params["error"]``."""
    raise getattr(__import__("builtins"), job.params["error"])(f"attempt {job.attempt}")


@kojo.worker
def give_back(job):
    """Return ``params["result"]`` (or a string of ``params["size"]`` characters) without touching the
    database."""
    if "size" in job.params:
        return {"text": "é" * job.params["size"]}
    return job.params.get("result")


@kojo.worker
def count_jobs(job):
    """Touch the database, then return."""
    from kojo.models import Job

    return {"jobs": Job.objects.count()}


def log_run(job, event: str) -> None:
    """Append "<job id> <fence> <event> <pid> <time>" to the file ``params["log"]``: each run counted
    outside kojo, by the tests that must know how often a job really ran."""
    with open(job.params["log"], "a") as log:
        log.write(f"{job.id} {job.fence} {event} {os.getpid()} {time.time():.6f}\n")


@kojo.worker
def logged_sleep(job):
    """Log the run's start, sleep ``params["seconds"]``, log its end."""
    log_run(job, "start")
    time.sleep(job.params.get("seconds", 0))
    log_run(job, "end")


@kojo.worker
def holds_own_row(job):
    """Report progress inside a transaction and keep it open: the job's own row stays locked for
    ``params["seconds"]``."""
    log_run(job, "start")
    with transaction.atomic():
        job.progress(50)
        time.sleep(job.params["seconds"])
    log_run(job, "end")


@kojo.worker
def ends_then_raises(job):
    """End the job inside a transaction, then raise: the rollback undoes the ending."""
    with transaction.atomic():
        job.complete_success({"too": "early"})
        raise ValueError("raised after the ending")


if os.environ.get("KOJO_TEST_RAISING_RECEIVER"):

    @receiver(kojo.signals.job_started, dispatch_uid="tests.kojo_jobs.broken_receiver")
    def broken_receiver(sender, **kwargs):
        raise RuntimeError("a broken job_started receiver")


@kojo.worker
def pipe_hygiene(job):
    """Write a malformed line (its pid alone) into every pipe this job process can write to; count
    the pipes it can read, and those a program it runs would inherit."""
    found = {"readable": 0, "inherited": 0}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            is_pipe = fd > 2 and os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:")
            with open(f"/proc/self/fdinfo/{fd}") as info:
                flags = int(info.read().split("flags:")[1].split()[0], 8)
        except (OSError, IndexError):
            continue  # the directory's own descriptor, gone by now
        if not is_pipe:
            continue
        found["inherited"] += not flags & os.O_CLOEXEC
        if flags & os.O_ACCMODE == os.O_RDONLY:
            found["readable"] += 1
        else:
            os.write(fd, f"{os.getpid()}\n".encode())  # one token: this child's pid, and nothing after
    return found


@kojo.worker
def exits_when_told(job):
    """Wait for the file ``params["go"]`` to exist, then end the process at once (a crash)."""
    go = Path(job.params["go"])
    while not go.exists():
        time.sleep(0.01)
    os._exit(1)


@kojo.worker
def fenced_append(job):
    """Take the mutex ``params["lock"]`` and append this run's job id and fencing token to the file
    ``params["log"]``: a test reads whether two holds ever shared a token."""
    with kojo.mutex(job.params["lock"], timeout=60) as lock:
        with open(job.params["log"], "a") as log:
            log.write(f"{job.id} {lock.token}\n")
        time.sleep(job.params.get("seconds", 0))


# KOJO_TEST_EXTRA_JOBS=<module>: a test's own job code, written where the server's path finds it (a
# reload test rewrites it between two SIGHUPs).
if os.environ.get("KOJO_TEST_EXTRA_JOBS"):
    import importlib

    importlib.import_module(os.environ["KOJO_TEST_EXTRA_JOBS"])


# The worker verbs, one job each (tests/server/test_worker_verbs.py).
@kojo.worker
def holds_itself(job):
    job.hold("waiting for a person")


@kojo.worker
def fails_for_good(job):
    job.complete_failed("bad input row 3", result={"row": 3})


@kojo.worker
def logs_through_its_logger(job):
    job.logger.warning("processed %s rows", 12)
    return None


@kojo.worker
def ends_twice(job):
    job.complete_success({"first": True})
    job.complete_failed("a second ending")


@kojo.worker
def slow_first_attempt(job):
    if job.attempt == 1:
        time.sleep(30)
    return {"attempt": job.attempt}


@kojo.worker
def reports_its_history(job):
    """Crash on the first attempt, ask for a retry on the second, then return how they ended."""
    if job.attempt == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    if job.attempt == 2:
        job.retry(reason="once more")
        return None
    return job.outcome_counts()


# KOJO_TEST_WORKER_EVENTS=<path>: the server appends each worker_started / worker_stopped to that file.
if os.environ.get("KOJO_TEST_WORKER_EVENTS"):
    import json

    @receiver(kojo.signals.worker_started, dispatch_uid="tests.worker_started")
    @receiver(kojo.signals.worker_stopped, dispatch_uid="tests.worker_stopped")
    def log_worker_event(sender, signal, pid, index, reason="", **kwargs):
        kind = "started" if signal is kojo.signals.worker_started else "stopped"
        with open(os.environ["KOJO_TEST_WORKER_EVENTS"], "a") as events:
            events.write(json.dumps({"event": kind, "pid": pid, "index": index, "reason": reason}) + "\n")
