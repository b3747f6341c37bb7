"""Pre-forked workers: dynamic scaling, recycling, and SIGHUP reload."""

import signal

import pytest

import kojo
from kojo.models import Job, JobType, Server
from kojo.states import JobState
from tests.server.conftest import wait_for

pytestmark = pytest.mark.server


def worker_pids(server) -> set[int]:
    row = Server.objects.filter(pid=server.pid).first()
    return {child["pid"] for child in (row.children if row else []) if child["kind"] == "worker"}


def test_dynamic_mode_grows_with_load_and_shrinks_when_idle(start_server, make_job_type):
    kind = make_job_type(worker="tests.kojo_jobs.sleep")
    server = start_server("--mode", "dynamic", "--concurrency", "3", KOJO_TEST_SET_MIN_WORKERS="1")
    wait_for(lambda: len(worker_pids(server)) == 1, message="one idle worker")
    jobs = [kojo.schedule(kind.type_code, {"seconds": 1.5}) for _ in range(3)]
    wait_for(lambda: len(worker_pids(server)) == 3, message="the pool to grow to three workers")
    wait_for(
        lambda: Job.objects.filter(pk__in=[j.pk for j in jobs], state=JobState.COMPLETE_SUCCESS).count() == 3
    )
    wait_for(lambda: len(worker_pids(server)) == 1, timeout=20, message="idle workers to retire")


def test_workers_are_recycled_after_n_jobs(start_server, make_job_type):
    kind = make_job_type(worker="tests.kojo_jobs.sleep")
    jobs = [kojo.schedule(kind.type_code, {"seconds": 0}) for _ in range(6)]
    start_server("--mode", "static", "--concurrency", "1", KOJO_TEST_SET_MAX_JOBS_PER_WORKER="2")
    wait_for(lambda: Job.objects.filter(state=JobState.COMPLETE_SUCCESS).count() == 6)
    pids = {Job.objects.get(pk=job.pk).result["pid"] for job in jobs}
    assert len(pids) == 3


def test_sighup_syncs_job_types_and_replaces_workers(start_server, make_job_type):
    server = start_server("--mode", "static", "--concurrency", "2")
    wait_for(lambda: JobType.objects.filter(type_code="noop").exists(), message="start-up sync")
    wait_for(lambda: len(worker_pids(server)) == 2, message="two workers")
    before = worker_pids(server)
    JobType.objects.filter(type_code="noop").delete()
    server.signal(signal.SIGHUP)
    wait_for(lambda: JobType.objects.filter(type_code="noop").exists(), message="the reload to sync again")
    wait_for(
        lambda: len(worker_pids(server)) == 2 and not worker_pids(server) & before,
        message="fresh workers after the reload",
    )
    assert server.process.poll() is None
