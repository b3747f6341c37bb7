"""``manage.py kojo_run <job id>``: one job in the foreground of the command's own process."""

import os
import subprocess
import sys

import pytest
from django.db.models import F
from django.utils import timezone

import kojo
from kojo.models import Job, JobStateChange, Server
from kojo.states import JobState, Outcome
from tests.server.conftest import ROOT, wait_for

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]


def kojo_run(job_id: int, **env: str) -> subprocess.CompletedProcess:
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.server_settings",
        "PYTHONPATH": str(ROOT),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "django", "kojo_run", str(job_id)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_runs_the_job_in_its_own_process_even_before_it_is_due(make_job_type):
    kind = make_job_type(worker="tests.kojo_jobs.sleep")
    job = kojo.schedule(kind.type_code, {"seconds": 0}, delay=3600)
    done = kojo_run(job.pk)
    assert done.returncode == 0, done.stderr
    job.refresh_from_db()
    assert (job.state, job.attempts) == (JobState.COMPLETE_SUCCESS, 1)
    assert f"job {job.pk}: complete_success, attempt 1" in done.stdout
    # The pid that ran the job is the command's: no fork, so a debugger sees the job's code.
    assert job.pid == job.result["pid"]
    assert not Server.objects.exists()  # its own server row is gone with it


def test_a_failure_is_recorded_like_any_run(make_job_type):
    kind = make_job_type(worker="tests.kojo_jobs.fail", max_attempts=2)
    job = kojo.schedule(kind.type_code)
    done = kojo_run(job.pk)
    assert done.returncode == 0, done.stderr
    job.refresh_from_db()
    assert (job.state, job.attempts) == (JobState.WAITING, 1)  # the retry policy's second attempt
    change = JobStateChange.objects.filter(job=job, outcome=Outcome.PANICKED).get()
    assert "ValueError: failure 1" in change.reason
    assert "error: exception builtins.ValueError: failure 1" in done.stdout


def test_it_refuses_a_job_another_server_holds_and_says_whose(make_job_type):
    kind = make_job_type()
    job = kojo.schedule(kind.type_code)
    holder = Server.objects.create(host="node-9", pid=77)
    Job.objects.filter(pk=job.pk).update(
        state=JobState.WORKING, server=holder, attempts=1, fence=F("fence") + 1, started_at=timezone.now()
    )
    refused = kojo_run(job.pk)
    assert refused.returncode == 1
    assert f"job {job.pk} cannot run here: it is working (attempt 1) on server[77]@node-9" in refused.stderr
    assert Job.objects.get(pk=job.pk).attempts == 1


def test_it_keeps_a_singleton_single(make_job_type):
    kind = make_job_type(can_work_in_parallel=False, schedule_limit_allowance=5)
    running = kojo.schedule(kind.type_code)
    Job.objects.filter(pk=running.pk).update(state=JobState.WORKING, attempts=1, fence=F("fence") + 1)
    job = kojo.schedule(kind.type_code)
    refused = kojo_run(job.pk)
    assert refused.returncode == 1
    assert f"is a singleton: 1/1 working (jobs {running.pk})" in refused.stderr
    assert Job.objects.get(pk=job.pk).state == JobState.WAITING


def test_a_long_foreground_run_keeps_its_lease_while_a_fleet_judges_it(start_server, make_job_type):
    """A run paused in a debugger is no dead run: its own server row stays fresh, so the fleet's
    housekeeper never rescues it (HEARTBEAT_TIMEOUT 3 s here, the run 6 s)."""
    fast = {"KOJO_TEST_SET_HEARTBEAT_TIMEOUT": "3", "KOJO_TEST_SET_HEARTBEAT_INTERVAL": "0.5"}
    judge = start_server("--queue", "elsewhere", **fast)
    wait_for(lambda: "leads the fleet's housekeeping" in judge.output(), message="the judge to lead")
    kind = make_job_type(worker="tests.kojo_jobs.sleep")
    job = kojo.schedule(kind.type_code, {"seconds": 6})
    done = kojo_run(job.pk, **fast)
    assert done.returncode == 0, done.stderr
    job.refresh_from_db()
    assert (job.state, job.attempts) == (JobState.COMPLETE_SUCCESS, 1)
    assert not JobStateChange.objects.filter(job=job, outcome=Outcome.ORPHANED).exists()
