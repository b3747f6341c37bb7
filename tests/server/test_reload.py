"""SIGHUP runs the code on disk: a probe first, then a drain and an exec in place (same pid). Meanwhile
a server claims only jobs whose worker its code registers, so a type only new code defines waits."""

import signal

import pytest

import kojo
from kojo.explain import explain
from kojo.models import Job, JobType, Server
from kojo.states import JobState
from tests.server.conftest import ROOT, wait_for

pytestmark = pytest.mark.server

MODULE = "reloadable_jobs"
VERSION_1 = """
import time

import kojo


@kojo.worker
def first(job):
    time.sleep(job.params.get("seconds", 0))
    return {"version": 1}
"""
VERSION_2 = (
    VERSION_1.replace('"version": 1', '"version": 2')
    + """

@kojo.worker
def second(job):
    return {"version": 2}
"""
)
BROKEN = VERSION_2 + "\ndef oops(:\n"


def state(job) -> str:
    return Job.objects.get(pk=job.pk).state


@pytest.mark.parametrize("mode", ["ondemand", "static"])
def test_sighup_runs_new_code_and_a_type_only_it_defines_waits_until_then(start_server, tmp_path, mode):
    code = tmp_path / f"{MODULE}.py"
    code.write_text(VERSION_1)
    first = JobType.objects.create(type_code="first", name="first", worker=f"{MODULE}.first")
    # A type added by the deploy: its row exists before any server runs the code that defines it.
    second = JobType.objects.create(type_code="second", name="second", worker=f"{MODULE}.second")
    server = start_server(
        "--mode",
        mode,
        "--concurrency",
        "2",
        KOJO_TEST_EXTRA_JOBS=MODULE,
        PYTHONPATH=f"{tmp_path}:{ROOT}",
        PYTHONDONTWRITEBYTECODE="1",
        KOJO_TEST_GRACEFUL_TIMEOUT="30",
    )
    waiting = kojo.schedule(second.type_code)
    running = kojo.schedule(first.type_code, {"seconds": 8})
    wait_for(lambda: state(running) == JobState.WORKING, message="the long job of the old code to start")
    assert state(waiting) == JobState.WAITING  # not failed: no server here can run it yet
    why = explain(waiting.pk)
    assert why.blockers == [
        f"no live server serving queue 'default' has its worker '{MODULE}.second' (deploy the code "
        "that registers it, then restart the servers or send them SIGHUP)"
    ]

    code.write_text(BROKEN)
    server.signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in server.output(), message="the broken code to be refused")
    assert "SyntaxError" in server.output()
    assert server.process.poll() is None and state(waiting) == JobState.WAITING

    code.write_text(VERSION_2)
    server.signal(signal.SIGHUP)
    wait_for(lambda: state(waiting) == JobState.COMPLETE_SUCCESS, timeout=40, message="the new type's job")
    assert Job.objects.get(pk=waiting.pk).result == {"version": 2}
    # The job that ran through the reload finished on the old code, once, with its only attempt.
    old = Job.objects.get(pk=running.pk)
    assert (old.state, old.result, old.attempts) == (JobState.COMPLETE_SUCCESS, {"version": 1}, 1)
    assert server.process.poll() is None  # the same process, exec'd anew
    row = Server.objects.get(pid=server.pid)
    assert f"{MODULE}.second" in row.workers
    after = kojo.schedule(first.type_code)
    wait_for(lambda: state(after) == JobState.COMPLETE_SUCCESS, message="a job on the new code")
    assert Job.objects.get(pk=after.pk).result == {"version": 2}


def test_a_stop_during_a_reloads_drain_stops_the_server(start_server, make_job_type):
    """SIGHUP started a drain towards a re-exec; SIGTERM then means stop, as a supervisor's stop does."""
    kind = make_job_type(worker="tests.kojo_jobs.sleep")
    server = start_server("--concurrency", "1", KOJO_TEST_GRACEFUL_TIMEOUT="30")
    running = kojo.schedule(kind.type_code, {"seconds": 4})
    wait_for(lambda: state(running) == JobState.WORKING, message="the job to start")
    server.signal(signal.SIGHUP)
    wait_for(lambda: "draining, then starting again" in server.output(), message="the reload's drain")
    server.signal(signal.SIGTERM)
    assert server.wait(timeout=30) == 0
    assert "starting again with the code on disk" not in server.output()
    assert state(running) == JobState.COMPLETE_SUCCESS  # drained, not cut off
