"""Pre-forked workers: dynamic scaling, recycling, SIGHUP reload, and claiming ahead (prefetch)."""

import os
import signal
import time
from collections import Counter

import pytest

import kojo
from kojo.models import Job, JobStateChange, JobType, Server
from kojo.states import JobState, Outcome
from tests.server.conftest import wait_for

pytestmark = pytest.mark.server
# Pooled workers claim ahead on PostgreSQL only (its one-statement claim); on SQLite, one at a time.
claims_ahead = pytest.mark.skipif(
    os.environ.get("KOJO_TEST_DB", "postgres") != "postgres", reason="claiming ahead is PostgreSQL's"
)


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


def claims_per_statement(job_type) -> list[int]:
    """How many jobs of ``job_type`` each claim took: a claim stamps its jobs with one time and actor."""
    claims = Counter(
        JobStateChange.objects.filter(job__job_type=job_type, to_state=JobState.WORKING).values_list(
            "at", "actor"
        )
    )
    return list(claims.values())


@claims_ahead
def test_a_worker_of_short_jobs_claims_several_at_once(start_server, make_job_type):
    kind = make_job_type()
    kojo.schedule_many(kind.type_code, [{} for _ in range(300)])
    start_server("--mode", "static", "--concurrency", "1")
    wait_for(lambda: Job.objects.filter(state=JobState.COMPLETE_SUCCESS).count() == 300, timeout=30)
    assert max(claims_per_statement(kind)) > 1
    # Prefetched or not, each job was claimed once and ran once.
    assert sum(claims_per_statement(kind)) == 300
    assert set(Job.objects.values_list("attempts", flat=True)) == {1}


@claims_ahead
def test_a_slow_job_hands_the_jobs_claimed_behind_it_back(start_server, make_job_type):
    kind = make_job_type(worker="tests.kojo_jobs.sleep")
    quick = kojo.schedule_many(kind.type_code, [{"seconds": 0} for _ in range(30)])
    slow = kojo.schedule(kind.type_code, {"seconds": 1})
    later = kojo.schedule_many(kind.type_code, [{"seconds": 0} for _ in range(40)])
    start_server("--mode", "static", "--concurrency", "1")
    wait_for(lambda: Job.objects.filter(state=JobState.COMPLETE_SUCCESS).count() == 71, timeout=30)
    handed_back = JobStateChange.objects.filter(
        from_state=JobState.WORKING, to_state=JobState.WAITING, outcome=Outcome.INTERRUPTED
    )
    assert handed_back.exists()
    # Handed back while the slow job ran, once it had outlasted the window (0.05 s).
    assert {change.reason for change in handed_back} == {
        f"not started: job {slow.pk} still running after 0.05 s"
    }
    assert {change.job_id for change in handed_back} <= {job.pk for job in later}
    # The attempt was given back: each job still ran once, in attempt 1.
    assert set(
        Job.objects.filter(pk__in=[job.pk for job in quick + later]).values_list("attempts", flat=True)
    ) == {1}


@claims_ahead
def test_jobs_claimed_behind_a_slow_job_go_to_an_idle_worker_while_it_runs(start_server, make_job_type):
    kind = make_job_type(worker="tests.kojo_jobs.timed_sleep")
    kojo.schedule_many(kind.type_code, [{"seconds": 0} for _ in range(60)])
    slow = kojo.schedule(kind.type_code, {"seconds": 4})
    later = kojo.schedule_many(kind.type_code, [{"seconds": 0} for _ in range(60)])
    # A window of 0.5 s: a worker claims up to 64 jobs from its second claim on.
    start_server("--mode", "static", "--concurrency", "2", KOJO_TEST_SET_PREFETCH_WINDOW="0.5")
    wait_for(lambda: Job.objects.filter(state=JobState.COMPLETE_SUCCESS).count() == 121, timeout=30)
    slow.refresh_from_db()
    # The jobs claimed with the slow job, behind it, in the claim that ran it (one time, one actor).
    ran_by = JobStateChange.objects.filter(job=slow, to_state=JobState.WORKING).latest("id")
    ahead = Job.objects.filter(
        pk__in=JobStateChange.objects.filter(
            to_state=JobState.WORKING, at=ran_by.at, actor=ran_by.actor, job_id__gt=slow.pk
        ).values("job_id")
    )
    assert ahead.exists(), "the slow job's worker claimed jobs behind it"
    # Each went back while the slow job ran, and another worker started it long before its end.
    waits = {job.pk: round(job.result["started"] - slow.result["started"], 2) for job in ahead}
    assert max(waits.values()) < 1.5, f"started this long after the slow job: {waits}"
    assert slow.result["ended"] - slow.result["started"] > 3.9
    assert slow.result["pid"] not in {job.result["pid"] for job in ahead}
    handed_back = JobStateChange.objects.filter(job__in=ahead, outcome=Outcome.INTERRUPTED)
    assert {change.reason for change in handed_back} == {
        f"not started: job {slow.pk} still running after 0.5 s"
    }
    assert {change.job_id for change in handed_back} == {job.pk for job in ahead}
    # And ran exactly once: claimed twice (ahead, then by the idle worker), ended once, in attempt 1.
    for job in ahead:
        changes = list(JobStateChange.objects.filter(job=job).order_by("id"))
        assert [(change.from_state, change.to_state) for change in changes][1:] == [
            (JobState.WAITING, JobState.WORKING),
            (JobState.WORKING, JobState.WAITING),
            (JobState.WAITING, JobState.WORKING),
            (JobState.WORKING, JobState.COMPLETE_SUCCESS),
        ], changes
        assert job.attempts == 1
    assert {job.pk for job in ahead} <= {job.pk for job in later}


@claims_ahead
def test_sigkill_of_a_worker_returns_the_jobs_it_had_not_started(start_server, make_job_type):
    quick_kind = make_job_type()
    hang_kind = make_job_type(worker="tests.kojo_jobs.hang")
    kojo.schedule_many(quick_kind.type_code, [{} for _ in range(30)])
    hanging = kojo.schedule(hang_kind.type_code, {"seconds": 60})
    queued = kojo.schedule_many(quick_kind.type_code, [{} for _ in range(40)])
    # A long window: the worker still holds the jobs claimed behind the hanging one when it dies.
    server = start_server("--mode", "static", "--concurrency", "1", KOJO_TEST_SET_PREFETCH_WINDOW="30")

    def running_hang() -> int | None:
        row = Server.objects.filter(pid=server.pid).first()
        busy = [child for child in (row.children if row else []) if child["job_id"] == hanging.pk]
        return busy[0]["pid"] if busy else None

    wait_for(lambda: running_hang() is not None, message="the hanging job to run in the worker")
    worker_pid = running_hang()
    unstarted = set(
        Job.objects.filter(
            pk__in=[job.pk for job in queued], state=JobState.WORKING, pid=worker_pid
        ).values_list("pk", flat=True)
    )
    assert unstarted, "the worker held jobs claimed behind the hanging one"
    os.kill(worker_pid, signal.SIGKILL)
    wait_for(
        lambda: Job.objects.filter(job_type=quick_kind, state=JobState.COMPLETE_SUCCESS).count() == 70,
        message="a replacement worker to run the returned jobs",
    )
    hanging.refresh_from_db()
    assert hanging.state == JobState.COMPLETE_FAILED
    assert "SIGKILL" in JobStateChange.objects.get(job=hanging, outcome=Outcome.CRASHED).reason
    returned = JobStateChange.objects.filter(outcome=Outcome.INTERRUPTED)
    assert set(returned.values_list("job_id", flat=True)) == unstarted
    assert set(returned.values_list("reason", flat=True)) == {f"not started: worker {worker_pid} ended first"}
    assert set(Job.objects.filter(job_type=quick_kind).values_list("attempts", flat=True)) == {1}


def claimed_ahead_behind(
    start_server, kind, behind: list[dict], slow_seconds: float = 1.5, **server_kwargs: str
) -> Job:
    """Queue 30 quick jobs of ``kind``, a slow one, then ``behind``; start one single-worker server
    and wait until the slow job runs (the server's heartbeat lists it); return the job claimed right
    behind it: working, not started."""
    kojo.schedule_many(kind.type_code, [{"seconds": 0} for _ in range(30)])
    slow = kojo.schedule(kind.type_code, {"seconds": slow_seconds})
    kojo.schedule_many(kind.type_code, behind)
    server = start_server("--mode", "static", "--concurrency", "1", **server_kwargs)

    def running() -> bool:
        row = Server.objects.filter(pid=server.pid).first()
        return any(child["job_id"] == slow.pk for child in (row.children if row else []))

    wait_for(running, message="the slow job to run")
    target = Job.objects.filter(pk__gt=slow.pk, state=JobState.WORKING).order_by("pk").first()
    assert target is not None, "the worker claimed jobs ahead, behind the slow one"
    return target


@claims_ahead
def test_an_abort_of_a_job_claimed_ahead_cancels_it_when_handed_back(start_server, make_job_type):
    kind = make_job_type(worker="tests.kojo_jobs.sleep")
    # A 2 s window, the slow job 4 s: the abort lands before the hand-back, 2 s into the slow job.
    target = claimed_ahead_behind(
        start_server, kind, [{"seconds": 0} for _ in range(20)], 4, KOJO_TEST_SET_PREFETCH_WINDOW="2"
    )
    assert kojo.abort(target.pk, by="test") is False  # working: handed to its server
    wait_for(lambda: Job.objects.filter(pk=target.pk, state=JobState.CANCELED).exists())
    change = JobStateChange.objects.get(job=target, to_state=JobState.CANCELED)
    assert change.outcome == Outcome.ABORTED and change.reason.startswith("aborted before it started")
    assert Job.objects.get(pk=target.pk).result is None  # it never ran
    wait_for(lambda: Job.objects.filter(state=JobState.COMPLETE_SUCCESS).count() == 50)


@claims_ahead
def test_an_abort_of_a_job_claimed_ahead_stops_it_as_it_starts(start_server, make_job_type):
    kind = make_job_type(worker="tests.kojo_jobs.sleep")
    # A long window: the slow job hands nothing back, so the aborted job does start.
    target = claimed_ahead_behind(
        start_server, kind, [{"seconds": 0.05} for _ in range(5)], KOJO_TEST_SET_PREFETCH_WINDOW="10"
    )
    assert kojo.abort(target.pk, by="test") is False
    wait_for(lambda: Job.objects.filter(pk=target.pk, state=JobState.CANCELED).exists())
    change = JobStateChange.objects.get(job=target, to_state=JobState.CANCELED)
    assert change.outcome == Outcome.ABORTED and change.reason == "aborted by test"
    assert Job.objects.get(pk=target.pk).result is None
    wait_for(lambda: Job.objects.filter(state=JobState.COMPLETE_SUCCESS).count() == 35, timeout=30)


def test_a_stream_of_important_jobs_does_not_starve_an_old_one(start_server, make_job_type):
    kind = make_job_type(worker="tests.kojo_jobs.sleep")
    old = kojo.schedule(kind.type_code, {"seconds": 0}, importance=-5)
    important = [kojo.schedule(kind.type_code, {"seconds": 0.05}, importance=5) for _ in range(10)]
    start_server("--mode", "static", "--concurrency", "1")
    # Important jobs arrive faster than the one worker runs them (20 a second): the queue never empties.
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline and Job.objects.get(pk=old.pk).state != JobState.COMPLETE_SUCCESS:
        important += [kojo.schedule(kind.type_code, {"seconds": 0.05}, importance=5) for _ in range(3)]
        time.sleep(0.05)
    assert Job.objects.get(pk=old.pk).state == JobState.COMPLETE_SUCCESS
    assert Job.objects.filter(pk__in=[job.pk for job in important], state=JobState.WAITING).exists()


@claims_ahead
def test_jobs_claimed_behind_a_job_longer_than_the_heartbeat_timeout_are_not_orphaned(
    start_server, make_job_type
):
    kind = make_job_type(worker="tests.kojo_jobs.sleep")
    kojo.schedule_many(kind.type_code, [{"seconds": 0} for _ in range(30)])
    slow = kojo.schedule(kind.type_code, {"seconds": 4.5})  # the tests' heartbeat timeout is 3 s
    kojo.schedule_many(kind.type_code, [{"seconds": 0} for _ in range(20)])
    start_server("--mode", "static", "--concurrency", "1")
    wait_for(lambda: Job.objects.filter(state=JobState.COMPLETE_SUCCESS).count() == 51, timeout=40)
    assert Job.objects.get(pk=slow.pk).attempts == 1
    assert not JobStateChange.objects.filter(outcome=Outcome.ORPHANED).exists()
    assert JobStateChange.objects.filter(outcome=Outcome.INTERRUPTED).exists()  # handed back after it


def worker_events(path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_worker_lifecycle_signals_say_why_each_worker_stopped(start_server, make_job_type, tmp_path):
    events = tmp_path / "workers.jsonl"
    kind = make_job_type(worker="tests.kojo_jobs.sleep")
    jobs = [kojo.schedule(kind.type_code, {"seconds": 0}) for _ in range(4)]
    server = start_server(
        "--mode",
        "static",
        "--concurrency",
        "1",
        KOJO_TEST_SET_MAX_JOBS_PER_WORKER="2",
        KOJO_TEST_SET_PREFETCH="1",
        KOJO_TEST_WORKER_EVENTS=str(events),
    )
    wait_for(
        lambda: (
            Job.objects.filter(pk__in=[job.pk for job in jobs], state=JobState.COMPLETE_SUCCESS).count() == 4
        )
    )
    wait_for(lambda: len(worker_pids(server)) == 1, message="the third worker")
    (last,) = worker_pids(server)
    os.kill(last, signal.SIGKILL)
    wait_for(lambda: len(worker_pids(server) - {last}) == 1, message="a worker in place of the killed one")
    server.signal(signal.SIGTERM)
    assert server.wait(timeout=30) == 0
    seen = worker_events(events)
    stopped = [event["reason"] for event in seen if event["event"] == "stopped"]
    assert stopped[:2] == ["recycled after 2 jobs", "recycled after 2 jobs"]
    assert stopped[2].startswith("crashed: process terminated by SIGKILL")
    assert stopped[3] == "stop"
    started = [event["pid"] for event in seen if event["event"] == "started"]
    assert len(started) == 4 and len(stopped) == 4 and set(started) == {event["pid"] for event in seen}
