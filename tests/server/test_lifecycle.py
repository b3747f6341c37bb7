"""One server, real processes: outcomes, retries, timeouts, crashes, aborts, modes."""

import os
import signal
import threading
import time

import pytest
from django.conf import settings as django_settings
from django.db import connection, transaction

import kojo
from kojo.exceptions import JobFailed
from kojo.models import Job, JobStateChange
from kojo.states import JobState, Outcome
from tests.server.conftest import wait_for

pytestmark = pytest.mark.server


def finished(job, timeout=20.0):
    def check():
        job.refresh_from_db()
        return job.state in (JobState.COMPLETE_SUCCESS, JobState.COMPLETE_FAILED, JobState.CANCELED)

    wait_for(check, timeout=timeout, message=f"job {job.pk} to finish")
    return job


def outcomes(job):
    return list(JobStateChange.objects.filter(job=job).exclude(outcome="").values_list("outcome", flat=True))


@pytest.mark.parametrize("mode", ["ondemand", "static", "dynamic"])
def test_each_mode_runs_jobs_with_results(start_server, make_job_type, mode):
    kind = make_job_type(worker="tests.kojo_jobs.echo")
    jobs = [kojo.schedule(kind.type_code, {"n": n}) for n in range(6)]
    start_server("--mode", mode, "--concurrency", "2")
    for n, job in enumerate(jobs):
        assert finished(job).state == JobState.COMPLETE_SUCCESS
        assert job.result == {"n": n}
        assert job.attempts == 1


def test_exceptions_are_retried_then_fail_with_every_error_kept(start_server, make_job_type):
    kind = make_job_type(
        worker="tests.kojo_jobs.fail", max_attempts=3, retry_interval="PT0.1S", retry_jitter=False
    )
    job = kojo.schedule(kind.type_code)
    start_server()
    finished(job)
    assert job.state == JobState.COMPLETE_FAILED
    assert job.attempts == 3
    assert "ValueError: failure 3" in job.error
    assert "Traceback" in job.traceback
    reasons = list(
        JobStateChange.objects.filter(job=job, outcome=Outcome.PANICKED).values_list("reason", flat=True)
    )
    assert [r.split(";")[0] for r in reasons] == [
        f"exception builtins.ValueError: failure {n}" for n in (1, 2, 3)
    ]


def test_a_job_that_kills_its_process_every_time_ends_failed(start_server, make_job_type):
    kind = make_job_type(worker="tests.kojo_jobs.kill_self", max_attempts=2, retry_interval="PT0S")
    job = kojo.schedule(kind.type_code)
    start_server()
    finished(job)
    assert job.state == JobState.COMPLETE_FAILED and job.attempts == 2
    assert outcomes(job) == [Outcome.CRASHED, Outcome.CRASHED]
    assert "SIGKILL" in job.error


def test_sigkill_of_a_job_process_is_retried(start_server, make_job_type):
    kind = make_job_type(worker="tests.kojo_jobs.kill_self", max_attempts=3, retry_interval="PT0S")
    job = kojo.schedule(kind.type_code, {"until": 2})
    start_server()
    finished(job)
    assert job.state == JobState.COMPLETE_SUCCESS
    assert job.result == {"attempt": 2}
    assert outcomes(job) == [Outcome.CRASHED, Outcome.SUCCEEDED]


def test_timeout_stops_the_job_and_records_it(start_server, make_job_type):
    kind = make_job_type(worker="tests.kojo_jobs.hang", timeout="PT1S", max_attempts=1)
    job = kojo.schedule(kind.type_code)
    start_server()
    finished(job, timeout=30)
    assert job.state == JobState.COMPLETE_FAILED
    assert outcomes(job) == [Outcome.TIMED_OUT]
    assert "timed out after 1 s" in job.error


def test_timeout_in_pooled_mode(start_server, make_job_type):
    kind = make_job_type(worker="tests.kojo_jobs.hang", timeout="PT1S")
    job = kojo.schedule(kind.type_code)
    follow_up = kojo.schedule(make_job_type(worker="tests.kojo_jobs.echo").type_code, {"ok": 1}, delay=1.5)
    start_server("--mode", "static", "--concurrency", "1")
    assert finished(job, timeout=30).state == JobState.COMPLETE_FAILED
    assert outcomes(job) == [Outcome.TIMED_OUT]
    assert finished(follow_up).state == JobState.COMPLETE_SUCCESS  # the worker was replaced


def test_abort_kills_a_working_job_on_its_node(start_server, make_job_type):
    kind = make_job_type(worker="tests.kojo_jobs.hang")
    job = kojo.schedule(kind.type_code)
    server = start_server()
    # The claim first records the arbiter's pid; the job process's own pid follows the fork.
    wait_for(
        lambda: Job.objects.filter(pk=job.pk, state=JobState.WORKING, pid__isnull=False)
        .exclude(pid=server.pid)
        .exists()
    )
    pid = Job.objects.get(pk=job.pk).pid
    assert kojo.abort(job.pk, by="admin:alice") is False
    finished(job)
    assert job.state == JobState.CANCELED
    change = JobStateChange.objects.get(job=job, outcome=Outcome.ABORTED)
    assert change.reason == "aborted by admin:alice"
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), message="the job process to be gone")


def test_a_cooperative_job_sees_the_abort_and_reports_progress(start_server, make_job_type):
    kind = make_job_type(worker="tests.kojo_jobs.cooperative")
    job = kojo.schedule(kind.type_code)
    start_server()
    wait_for(lambda: (Job.objects.get(pk=job.pk).progress or 0) > 3, message="progress")
    kojo.abort(job.pk, by="test")
    assert finished(job).state == JobState.CANCELED
    assert outcomes(job) == [Outcome.ABORTED]


def test_job_schedules_in_its_transaction_and_retries_itself(start_server, make_job_type):
    # "noop" (the type fan_out schedules) is declared in code: migrate and each flush create its row.
    kind = make_job_type(worker="tests.kojo_jobs.fan_out")
    job = kojo.schedule(kind.type_code)
    start_server()
    finished(job)
    assert job.result == {"attempt": 2}
    assert outcomes(job) == [Outcome.RETRY, Outcome.SUCCEEDED]
    wait_for(lambda: Job.objects.filter(job_type__type_code="noop", state=JobState.COMPLETE_SUCCESS).exists())


def test_process_titles_name_the_server_and_job(start_server, make_job_type):
    kind = make_job_type(worker="tests.kojo_jobs.hang")
    job = kojo.schedule(kind.type_code)
    server = start_server()
    wait_for(lambda: Job.objects.filter(pk=job.pk, pid__isnull=False).exclude(pid=server.pid).exists())
    pid = Job.objects.get(pk=job.pk).pid
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        title = cmdline.read().decode().strip("\x00")
    assert title == f"kojo: server[{server.pid}]/job[{job.pk} {kind.type_code}]"
    server.signal(signal.SIGKILL)


def test_dependencies_order_jobs_and_failures_cancel_dependents(start_server, make_job_type):
    sleeper = make_job_type(worker="tests.kojo_jobs.sleep")
    failing = make_job_type(worker="tests.kojo_jobs.fail")
    first = kojo.schedule(sleeper.type_code, {"seconds": 0.5})
    then = kojo.schedule(sleeper.type_code, {"seconds": 0}, depends_on=[first], importance=90)
    doomed = kojo.schedule(failing.type_code)
    never = kojo.schedule(sleeper.type_code, depends_on=[doomed])
    start_server("--concurrency", "4")
    assert finished(then).state == JobState.COMPLETE_SUCCESS
    assert then.started_at >= finished(first).finished_at
    assert finished(never).state == JobState.CANCELED
    assert never.attempts == 0
    assert finished(doomed).state == JobState.COMPLETE_FAILED


def test_wait_follows_jobs_run_by_a_server(start_server, make_job_type):
    good = kojo.schedule(make_job_type(worker="tests.kojo_jobs.echo").type_code, {"v": 1})
    bad = kojo.schedule(make_job_type(worker="tests.kojo_jobs.fail").type_code)
    start_server()
    assert kojo.wait(good, timeout=20).result == {"v": 1}
    with pytest.raises(JobFailed, match="ValueError: failure 1"):
        kojo.wait([good, bad], timeout=20, raise_on_failure=True)


def test_the_report_pipe_is_the_servers_own(start_server, make_job_type):
    """A job process cannot read the server's report pipe, a program it runs inherits none of its
    pipes, and a malformed line written into the pipe is logged and skipped."""
    kind = make_job_type(worker="tests.kojo_jobs.pipe_hygiene")
    prober = kojo.schedule(kind.type_code)
    server = start_server("--mode", "ondemand", "--concurrency", "1")
    finished(prober)
    after = kojo.schedule("noop")
    finished(after)
    assert prober.result == {"readable": 0, "inherited": 0}
    assert after.state == JobState.COMPLETE_SUCCESS
    assert server.process.poll() is None
    assert "ignored a malformed report line b'" in server.output()


def test_a_pooled_timeout_is_never_blamed_on_the_next_job(start_server, make_job_type, tmp_path):
    """The arbiter is paused while a pooled job finishes just inside its timeout and the worker moves
    on; resumed past that deadline, it must not stop the next job as if it had timed out."""
    log = tmp_path / "runs"
    kind = make_job_type(worker="tests.kojo_jobs.logged_sleep", timeout="PT1S")
    first = kojo.schedule(kind.type_code, {"seconds": 0.5, "log": str(log)})
    # A lease long enough that the pause cannot make the server stop its own jobs.
    server = start_server("--mode", "static", "--concurrency", "1", KOJO_TEST_SET_HEARTBEAT_TIMEOUT="6")
    wait_for(lambda: log.exists() and f"{first.pk} " in log.read_text(), message="the first job to start")
    nxt = kojo.schedule(kind.type_code, {"seconds": 0.6, "log": str(log)})
    os.kill(server.pid, signal.SIGSTOP)
    time.sleep(1.0)  # the first job ends in time; the worker takes the next; its deadline passes unseen
    os.kill(server.pid, signal.SIGCONT)
    finished(first)
    finished(nxt)
    assert (first.state, nxt.state) == (JobState.COMPLETE_SUCCESS, JobState.COMPLETE_SUCCESS), nxt.error
    assert Outcome.TIMED_OUT not in outcomes(first) + outcomes(nxt)


def test_a_timeout_that_passes_while_the_arbiter_is_busy_is_not_blamed_on_the_next_job(
    start_server, make_job_type, tmp_path
):
    """The arbiter is held in a statement (settling a crashed worker's job, whose row the test holds
    locked) while a pooled job ends inside its timeout and its worker starts the next one. When the
    statement gives way, the first job's deadline is long past: the arbiter must read what the worker
    said first, and not stop the next job as if it had timed out."""
    log, go = tmp_path / "runs", tmp_path / "go"
    timed = make_job_type(worker="tests.kojo_jobs.logged_sleep", timeout="PT2S")
    slow = make_job_type(worker="tests.kojo_jobs.logged_sleep", timeout="PT20S")
    crashing = make_job_type(worker="tests.kojo_jobs.exits_when_told")
    crasher = kojo.schedule(crashing.type_code, {"go": str(go)})
    first = kojo.schedule(timed.type_code, {"seconds": 1.2, "log": str(log)})
    # Statements give up after HEARTBEAT_TIMEOUT / 5 (6 s here): the arbiter waits out the whole hold.
    quick_kill = {"KOJO_TEST_SET_KILL_GRACE": "1", "KOJO_TEST_SET_HEARTBEAT_TIMEOUT": "30"}
    start_server("--mode", "static", "--concurrency", "2", **quick_kill)
    wait_for(lambda: log.exists() and f"{first.pk} " in log.read_text(), message="the first job to start")
    started = time.monotonic()
    nxt = kojo.schedule(slow.type_code, {"seconds": 3, "log": str(log)})  # outlasts a kill's grace
    locked, release = threading.Event(), threading.Event()

    def hold_the_crashers_row():
        with transaction.atomic():
            list(Job.objects.select_for_update().filter(pk=crasher.pk))
            locked.set()
            release.wait(10)
        connection.close()

    holder = threading.Thread(target=hold_the_crashers_row)
    holder.start()
    assert locked.wait(10)
    go.touch()  # the crash: the arbiter reaps its worker and waits on the row to record it
    # The first job ends (1.2 s) and its worker takes the next; the first job's deadline (2 s) passes
    # while the arbiter still waits.
    time.sleep(max(0.0, 2.5 - (time.monotonic() - started)))
    release.set()
    holder.join()
    finished(first)
    finished(nxt)
    assert (first.state, nxt.state) == (JobState.COMPLETE_SUCCESS, JobState.COMPLETE_SUCCESS), nxt.error
    assert Outcome.TIMED_OUT not in outcomes(first) + outcomes(nxt)
    assert Outcome.CRASHED in outcomes(Job.objects.get(pk=crasher.pk))


def test_the_server_says_when_it_starts_and_stops_whatever_the_root_logging(start_server):
    """A project that logs only warnings at its root still sees, on stderr, the server's start (with
    what it runs: version, mode, concurrency, queues, database, lock backend) and its stop."""
    server = start_server("--concurrency", "3", "--queue", "mail", KOJO_TEST_ROOT_LOGGING="WARNING")
    wait_for(lambda: "started on" in server.output(), message="the start line")
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    start = next(line for line in server.output().splitlines() if "started on" in line)
    assert " INFO " in start
    locks = f"locks {django_settings.KOJO_LOCK_BACKEND}"
    for part in (f"kojo {kojo.__version__}", "mode ondemand", "concurrency 3", "queues mail", locks):
        assert part in start, start
    assert "database postgresql" in start or "database sqlite" in start, start
    assert "stopped" in server.output()


def test_a_project_logging_at_its_root_gets_kojo_lines_there_once(start_server):
    """A root handler that shows INFO gets kojo's lines through the root logger, not twice."""
    server = start_server(KOJO_TEST_ROOT_LOGGING="INFO")
    wait_for(lambda: "started on" in server.output(), message="the start line")
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    lines = server.output().splitlines()
    assert sum("started on" in line for line in lines) == 1, lines
    assert sum(line.endswith("stopped") for line in lines) == 1, lines


def test_the_server_names_each_broken_stored_type_at_start(start_server, make_job_type):
    from kojo.models import JobType

    JobType.objects.create(type_code="gone_worker", name="x", worker="tests.kojo_jobs.renamed_away")
    JobType.objects.create(
        type_code="hand_edited", name="x", worker="tests.kojo_jobs.noop", cron_expression="every tuesday"
    )
    kind = make_job_type(worker="tests.kojo_jobs.noop")
    server = start_server()
    job = finished(kojo.schedule(kind.type_code))  # the server runs the others as usual
    assert job.state == JobState.COMPLETE_SUCCESS
    log = server.output()
    assert "job type 'gone_worker' is misconfigured: " in log and "tests.kojo_jobs.renamed_away" in log
    assert "job type 'hand_edited' is misconfigured: 'every tuesday' is not a valid cron expression" in log
    assert f"job type '{kind.type_code}' is misconfigured" not in log
