"""Stopping and killing servers with real signals."""

import os
import signal
import time

import pytest

import kojo
from kojo.conf import settings
from kojo.models import Job, JobStateChange, Server
from kojo.states import JobState, Outcome
from tests.server.conftest import wait_for

pytestmark = pytest.mark.server


def working(job):
    """Working in its own process: the claim records the arbiter's pid until the fork records the child's."""
    return (
        Job.objects.filter(pk=job.pk, state=JobState.WORKING, pid__isnull=False)
        .exclude(pid__in=Server.objects.values("pid"))
        .exists()
    )


def test_sigterm_drains_running_jobs_then_exits(start_server, make_job_type):
    kind = make_job_type(worker="tests.kojo_jobs.sleep")
    job = kojo.schedule(kind.type_code, {"seconds": 1.0})
    later = kojo.schedule(kind.type_code, {"seconds": 0}, delay=30)
    server = start_server("--concurrency", "1")
    wait_for(lambda: working(job), message="the job to start")
    server.signal(signal.SIGTERM)
    assert server.wait(timeout=20) == 0
    job.refresh_from_db()
    assert job.state == JobState.COMPLETE_SUCCESS
    assert Job.objects.get(pk=later.pk).state == JobState.WAITING
    assert not Job.objects.filter(state=JobState.WORKING).exists()
    assert not Server.objects.exists()


def test_jobs_past_the_grace_period_are_stopped_and_requeued(start_server, make_job_type):
    kind = make_job_type(worker="tests.kojo_jobs.hang", max_attempts=1)
    job = kojo.schedule(kind.type_code)
    server = start_server(KOJO_TEST_GRACEFUL_TIMEOUT="0.5")
    wait_for(lambda: working(job), message="the job to start")
    server.signal(signal.SIGTERM)
    assert server.wait(timeout=20) == 0
    job.refresh_from_db()
    # Interrupted by the stop, not by its own fault: waiting again, the attempt given back.
    assert job.state == JobState.WAITING and job.attempts == 0
    assert JobStateChange.objects.filter(job=job, outcome=Outcome.INTERRUPTED).exists()


def test_a_second_signal_stops_at_once(start_server, make_job_type):
    kind = make_job_type(worker="tests.kojo_jobs.hang")
    job = kojo.schedule(kind.type_code)
    server = start_server(KOJO_TEST_GRACEFUL_TIMEOUT="60")
    wait_for(lambda: working(job), message="the job to start")
    started = time.monotonic()
    server.signal(signal.SIGINT)
    time.sleep(0.2)
    server.signal(signal.SIGINT)
    assert server.wait(timeout=20) == 0
    assert time.monotonic() - started < 15
    assert Job.objects.get(pk=job.pk).state == JobState.WAITING


def test_sigkill_of_a_whole_server_is_rescued_by_another(start_server, make_job_type):
    kind = make_job_type(worker="tests.kojo_jobs.sleep", max_attempts=2, retry_interval="PT0S")
    job = kojo.schedule(kind.type_code, {"seconds": 3})
    doomed = start_server("--concurrency", "1")
    wait_for(lambda: working(job), message="the job to start on the first server")
    job_pid = Job.objects.get(pk=job.pk).pid
    killed_at = time.monotonic()
    os.killpg(doomed.pid, signal.SIGKILL)  # the arbiter, its housekeeper and the job: power loss
    doomed.wait()
    survivor = start_server("--concurrency", "1")
    bound = settings.HEARTBEAT_TIMEOUT + settings.HEARTBEAT_INTERVAL + settings.HOUSEKEEPING_INTERVAL + 10
    wait_for(
        lambda: Job.objects.filter(pk=job.pk, state=JobState.COMPLETE_SUCCESS).exists(),
        timeout=bound,
        message="the orphaned job to be retried and finished",
    )
    assert time.monotonic() - killed_at < bound
    job.refresh_from_db()
    assert job.attempts == 2
    assert job.result["pid"] != job_pid
    assert JobStateChange.objects.filter(job=job, outcome=Outcome.ORPHANED).count() == 1
    assert not os.path.exists(f"/proc/{job_pid}")
    survivor.signal(signal.SIGTERM)
    assert survivor.wait() == 0


def test_sigkill_of_the_arbiter_alone_takes_its_children_down(start_server, make_job_type):
    kind = make_job_type(worker="tests.kojo_jobs.hang")
    job = kojo.schedule(kind.type_code)
    server = start_server()
    wait_for(lambda: working(job), message="the job to start")
    job_pid = Job.objects.get(pk=job.pk).pid
    os.kill(server.pid, signal.SIGKILL)
    server.wait()
    wait_for(
        lambda: not os.path.exists(f"/proc/{job_pid}"), timeout=5, message="the orphaned job process to die"
    )


def test_sigkill_of_a_pooled_worker_retries_its_job(start_server, make_job_type):
    kind = make_job_type(worker="tests.kojo_jobs.sleep", max_attempts=2, retry_interval="PT0S")
    job = kojo.schedule(kind.type_code, {"seconds": 2})
    server = start_server("--mode", "static", "--concurrency", "1")
    wait_for(lambda: working(job), message="the job to start in a worker")
    worker_pid = Job.objects.get(pk=job.pk).pid
    assert worker_pid != server.pid
    time.sleep(0.5)  # claimed is not started: let the worker report it busy and begin its sleep
    os.kill(worker_pid, signal.SIGKILL)
    wait_for(
        lambda: Job.objects.filter(pk=job.pk, state=JobState.COMPLETE_SUCCESS).exists(),
        message="a replacement worker to run the retried job",
    )
    job.refresh_from_db()
    assert job.attempts == 2 and job.result["pid"] != worker_pid
    crash = JobStateChange.objects.get(job=job, outcome=Outcome.CRASHED)
    assert "SIGKILL" in crash.reason


@pytest.mark.parametrize("mode", ["ondemand", "static"])
def test_an_idle_server_stops_without_waiting_out_its_housekeepers_pause(start_server, mode):
    """Housekeeping every 60 s: the housekeeper sits in its pause when SIGTERM comes, and the server
    exits with it at once rather than after the pause."""
    server = start_server("--mode", mode, "--concurrency", "2", KOJO_TEST_SET_HOUSEKEEPING_INTERVAL="60")
    wait_for(lambda: "leads the fleet's housekeeping" in server.output(), message="the housekeeper to lead")
    time.sleep(0.5)  # into its pause
    server.signal(signal.SIGTERM)
    assert server.wait(timeout=20) == 0
    assert "stopped" in server.output()
