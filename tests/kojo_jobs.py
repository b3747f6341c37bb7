"""Job callables used by the tests, registered the way a project registers its own."""

import os
import signal
import time

import kojo


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
