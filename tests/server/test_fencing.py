"""Leases and fences under the faults production brings: paused processes, lost answers, held locks,
skewed clocks, killed sessions. Every run is counted outside kojo, in a file the job appends to."""

from __future__ import annotations

import os
import signal
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

import kojo
from kojo.models import Job, JobStateChange, Server
from kojo.states import TERMINAL, JobState, Outcome
from tests.server.conftest import wait_for
from tests.server.helpers import all_finished, max_overlap
from tests.server.proxy import CommitAnswerDropper

pytestmark = pytest.mark.server
postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="row locks, sessions and the wire protocol are PostgreSQL's"
)


def runs(log: Path) -> dict[int, list[tuple[int, str]]]:
    """Each job's logged run events, in order: [(fence, "start" | "end"), ...]."""
    found: dict[int, list[tuple[int, str]]] = defaultdict(list)
    if log.exists():
        for line in log.read_text().splitlines():
            job_id, fence, event, *_ = line.split()
            found[int(job_id)].append((int(fence), event))
    return found


def starts(log: Path, job: Job) -> int:
    return sum(1 for _, event in runs(log)[job.pk] if event == "start")


def ran_once_each(log: Path, jobs: list[Job]) -> None:
    """Every job ran exactly once, to its end, and its recorded ending is that run's."""
    logged = runs(log)
    for job in jobs:
        job.refresh_from_db()
        assert job.state == JobState.COMPLETE_SUCCESS, (job.pk, job.state, job.error)
        assert logged[job.pk] == [(job.fence, "start"), (job.fence, "end")], (job.pk, logged[job.pk])


def rescued(kind) -> int:
    return JobStateChange.objects.filter(job__job_type=kind, outcome=Outcome.ORPHANED).count()


def database_session():
    """A session of the test's own, outside Django, on the test database."""
    params = connection.settings_dict
    return psycopg.connect(
        dbname=params["NAME"], user=params["USER"], host=params["HOST"], port=params["PORT"], autocommit=False
    )


@postgres_only
def test_a_job_holding_its_own_row_lock_stalls_no_renewal(start_server, make_job_type, tmp_path):
    """Case 1: the job's progress write keeps its row locked past HEARTBEAT_TIMEOUT; neither it nor
    the other job of its server is rescued, and the other server runs neither again."""
    log = tmp_path / "runs"
    locker = make_job_type(worker="tests.kojo_jobs.holds_own_row")
    sleeper = make_job_type(worker="tests.kojo_jobs.logged_sleep")
    held = kojo.schedule(locker.type_code, {"seconds": 8, "log": str(log)})
    other = kojo.schedule(sleeper.type_code, {"seconds": 8, "log": str(log)})
    start_server("--mode", "ondemand", "--concurrency", "2")
    wait_for(lambda: starts(log, held) and starts(log, other), message="both jobs to start")
    start_server("--mode", "ondemand", "--concurrency", "2")
    wait_for(lambda: all_finished(locker) and all_finished(sleeper), timeout=40, message="both jobs")
    ran_once_each(log, [held, other])
    assert rescued(locker) == rescued(sleeper) == 0


@postgres_only
def test_a_rescue_rechecks_staleness_as_it_acts(start_server, make_job_type):
    """Case 2: a housekeeper finds a job stale, but its row is locked; by the time the lock is gone its
    server has renewed. The job must not be rescued, and must be once its server really is silent."""
    kind = make_job_type()
    long_ago = timezone.now() - timedelta(minutes=5)
    holder = Server.objects.create(host="elsewhere", pid=1, started_at=long_ago, heartbeat_at=long_ago)
    job = kojo.schedule(kind.type_code)
    Job.objects.filter(pk=job.pk).update(
        state=JobState.WORKING, server=holder, attempts=1, fence=F("fence") + 1, heartbeat_at=long_ago
    )
    fence = Job.objects.get(pk=job.pk).fence
    session = database_session()
    session.execute(f"SELECT id FROM {Job._meta.db_table} WHERE id = %s FOR UPDATE", [job.pk])
    start_server("--mode", "ondemand", "--concurrency", "1")
    time.sleep(3)  # several housekeeping passes meet the stale, locked job
    renew = f"UPDATE {Server._meta.db_table} SET heartbeat_at = clock_timestamp() WHERE id = %s"
    session.execute(renew, [holder.pk])
    session.commit()
    session.autocommit = True
    for _ in range(12):  # the holder keeps renewing for a while
        session.execute(renew, [holder.pk])
        time.sleep(0.5)
    job.refresh_from_db()
    assert (job.state, job.fence) == (JobState.WORKING, fence), "a renewed job was rescued"
    # Silent for good now: rescued within the deadline, its fence moved on.
    wait_for(lambda: Job.objects.get(pk=job.pk).state in TERMINAL, timeout=20, message="the rescue")
    assert Job.objects.get(pk=job.pk).fence > fence
    session.close()


@postgres_only
def test_a_view_holding_its_transaction_stalls_no_claim(start_server, make_job_type, tmp_path):
    """Case 3: a request schedules a job of a type with a waiting allowance and keeps its transaction
    open past HEARTBEAT_TIMEOUT; the ondemand arbiter claiming that limited type is not held up, and
    its running singleton job is neither rescued nor run twice."""
    log = tmp_path / "runs"
    kind = make_job_type(worker="tests.kojo_jobs.logged_sleep", schedule_limit=1, schedule_limit_allowance=10)
    first = kojo.schedule(kind.type_code, {"seconds": 8, "log": str(log)})
    queued = kojo.schedule(kind.type_code, {"seconds": 0.1, "log": str(log)})
    start_server("--mode", "ondemand", "--concurrency", "2")
    wait_for(lambda: starts(log, first), message="the singleton job to start")
    start_server("--mode", "ondemand", "--concurrency", "2")
    with transaction.atomic():  # the view's request, as with ATOMIC_REQUESTS
        late = kojo.schedule(kind.type_code, {"seconds": 0.1, "log": str(log)})
        time.sleep(6)
    wait_for(lambda: all_finished(kind), timeout=40, message="every job of the type")
    ran_once_each(log, [first, queued, late])
    assert rescued(kind) == 0
    assert max_overlap(kind) == 1


def test_a_node_whose_clock_is_off_keeps_its_jobs(start_server, make_job_type, tmp_path):
    """Case 4: the node leading housekeeping runs 4 s fast, the node running the jobs 4 s slow:
    liveness is the database's clock, so the judge rescues none of the live jobs."""
    log = tmp_path / "runs"
    kind = make_job_type(worker="tests.kojo_jobs.logged_sleep")
    judge = start_server("--concurrency", "1", "--queue", "elsewhere", KOJO_TEST_CLOCK_OFFSET="4")
    wait_for(lambda: "leads the fleet's housekeeping" in judge.output(), message="the judge to lead")
    jobs = [kojo.schedule(kind.type_code, {"seconds": 6, "log": str(log)}) for _ in range(2)]
    start_server("--mode", "ondemand", "--concurrency", "2", KOJO_TEST_CLOCK_OFFSET="-4")
    wait_for(lambda: all_finished(kind), timeout=40, message="every job")
    ran_once_each(log, jobs)
    assert rescued(kind) == 0


@postgres_only
def test_a_lost_claim_answer_runs_the_job_once_without_charging_an_attempt(
    start_server, make_job_type, tmp_path
):
    """Case 5: the claim commits, its answer never arrives. The server learns what it claimed from its
    claim token and runs it: once, with its only attempt."""
    log = tmp_path / "runs"
    kind = make_job_type(worker="tests.kojo_jobs.logged_sleep", max_attempts=1)
    job = kojo.schedule(kind.type_code, {"seconds": 0.2, "log": str(log)})
    with CommitAnswerDropper(marker=b"claim_token") as proxy:
        start_server("--mode", "ondemand", "--concurrency", "1", KOJO_TEST_DB_PORT=str(proxy.port))
        wait_for(proxy.dropped.is_set, timeout=30, message="the claim's answer to be lost")
        wait_for(lambda: all_finished(kind), timeout=90, message="the job to end")
    ran_once_each(log, [job])
    assert job.attempts == 1


@postgres_only
def test_killed_sessions_under_pooled_load_run_every_job_once(start_server, make_job_type, tmp_path):
    """Case 6: the server's database sessions are terminated again and again while pooled workers run
    jobs; no job runs twice, and each job's recorded success is its own run's."""
    log = tmp_path / "runs"
    kind = make_job_type(worker="tests.kojo_jobs.logged_sleep")
    jobs = [kojo.schedule(kind.type_code, {"seconds": 0.02, "log": str(log)}) for _ in range(300)]
    server = start_server("--mode", "static", "--concurrency", "2")
    wait_for(lambda: len(runs(log)) >= 10, timeout=30, message="work to start")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        ours = cursor.fetchone()[0]
    session = database_session()
    session.autocommit = True
    terminated = 0
    while len(runs(log)) < 250 and terminated < 40:
        terminated += session.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid NOT IN (pg_backend_pid(), %s)",
            [ours],
        ).fetchone()[0]
        time.sleep(0.4)
    session.close()
    assert terminated >= 4
    wait_for(lambda: all_finished(kind), timeout=120, interval=0.2, message="every job")
    ran_once_each(log, jobs)
    assert server.process.poll() is None


def test_an_arbiter_death_reruns_only_the_successes_of_its_last_moments(
    start_server, make_job_type, tmp_path
):
    """Case 7: successes reported to the arbiter are recorded within REPORTED_DELAY; killing it reruns
    at most the jobs that succeeded in that window (the README's at-least-once window)."""
    log = tmp_path / "runs"
    kind = make_job_type(worker="tests.kojo_jobs.logged_sleep", max_attempts=3)
    jobs = [kojo.schedule(kind.type_code, {"seconds": 0, "log": str(log)}) for _ in range(200)]
    first = start_server("--mode", "ondemand", "--concurrency", "4")
    wait_for(lambda: len(runs(log)) >= 60, timeout=30, message="work to be under way")
    os.kill(first.pid, signal.SIGKILL)  # the arbiter only: its children die with it
    start_server("--mode", "ondemand", "--concurrency", "4")
    wait_for(lambda: all_finished(kind), timeout=60, message="every job")
    logged = runs(log)
    # Ran to its end, and yet ran again: its reported success was lost with the arbiter.
    again = [pk for pk, events in logged.items() if events[1:2] == [(events[0][0], "end")] and events[2:]]
    assert len(again) <= 4, f"{len(again)} jobs ran again after their success was reported"
    for job in jobs:
        job.refresh_from_db()
        assert job.state == JobState.COMPLETE_SUCCESS
        assert (job.fence, "end") in logged[job.pk]


def test_a_server_paused_past_its_retention_comes_back_with_new_workers(
    start_server, make_job_type, tmp_path
):
    """Case 8: an arbiter stopped (SIGSTOP) until its server row was forgotten: its workers stopped
    their runs when the lease lapsed; resumed, it registers again, replaces its workers, and runs jobs."""
    log = tmp_path / "runs"
    kind = make_job_type(worker="tests.kojo_jobs.logged_sleep", max_attempts=3)
    paused = start_server("--mode", "static", "--concurrency", "2")
    long = kojo.schedule(kind.type_code, {"seconds": 6, "log": str(log)})
    wait_for(lambda: starts(log, long), timeout=30, message="the long job to start")
    first_row = Server.objects.get(pid=paused.pid)
    rescuer = start_server("--mode", "ondemand", "--concurrency", "1")
    os.kill(paused.pid, signal.SIGSTOP)
    try:
        # The paused server's workers kill their run when the lease lapses; the rescuer takes it over.
        wait_for(lambda: starts(log, long) == 2, timeout=30, message="the long job rescued and run again")
        Server.objects.filter(pk=first_row.pk).delete()  # as forget_dead_servers does after the retention
    finally:
        os.kill(paused.pid, signal.SIGCONT)
    second_row = wait_for(
        lambda: Server.objects.filter(pid=paused.pid).exclude(pk=first_row.pk).first(),
        timeout=30,
        message="the resumed server to register again",
    )
    first_run = [event for fence, event in runs(log)[long.pk] if fence == runs(log)[long.pk][0][0]]
    assert first_run == ["start"], "the taken-over run must have been stopped"
    wait_for(lambda: all_finished(kind), timeout=30, message="the rescued run to end")
    rescuer.kill_tree()
    later = [kojo.schedule(kind.type_code, {"seconds": 0.1, "log": str(log)}) for _ in range(4)]
    wait_for(
        lambda: all(Job.objects.get(pk=job.pk).state == JobState.COMPLETE_SUCCESS for job in later),
        timeout=40,
        message="jobs run by the resumed server",
    )
    assert {Job.objects.get(pk=job.pk).server_id for job in later} == {second_row.pk}
    assert paused.process.poll() is None


@pytest.mark.parametrize("mode", ["ondemand", "static"])
def test_an_ending_rolled_back_by_the_jobs_exception_records_that_exception(
    start_server, make_job_type, mode
):
    """Case 9: complete_success() inside a transaction that the job's exception rolls back: the
    exception is the attempt's outcome, and the job does not stay working."""
    kind = make_job_type(worker="tests.kojo_jobs.ends_then_raises", max_attempts=1)
    job = kojo.schedule(kind.type_code)
    start_server("--mode", mode, "--concurrency", "1")
    wait_for(lambda: all_finished(kind), timeout=30, message="the job to end")
    job.refresh_from_db()
    assert job.state == JobState.COMPLETE_FAILED
    assert "ValueError: raised after the ending" in job.error
    assert job.result is None
    outcomes = list(
        JobStateChange.objects.filter(job=job, from_state=JobState.WORKING).values_list("outcome", flat=True)
    )
    assert outcomes == [Outcome.PANICKED]


def test_a_raising_signal_receiver_stops_neither_the_server_nor_the_job(start_server, make_job_type):
    """Case 10: a job_started receiver that raises is logged with its job; the job runs."""
    kind = make_job_type(worker="tests.kojo_jobs.echo")
    jobs = [kojo.schedule(kind.type_code, {"n": n}) for n in range(3)]
    server = start_server("--mode", "ondemand", "--concurrency", "1", KOJO_TEST_RAISING_RECEIVER="1")
    wait_for(lambda: all_finished(kind), timeout=30, message="every job")
    for job in jobs:
        job.refresh_from_db()
        assert job.state == JobState.COMPLETE_SUCCESS and job.attempts == 1
    assert server.process.poll() is None
    assert f"job {jobs[0].pk}: signal receiver" in server.output()
    assert "a broken job_started receiver" in server.output()
