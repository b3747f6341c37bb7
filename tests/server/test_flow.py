"""Job flow with real servers: bucket limits across a fleet, readiness checks, retry_on, recurrence."""

import os
import subprocess
import sys
import time
from collections import defaultdict

import pytest

import kojo
from kojo.models import Job, JobStateChange
from kojo.readiness import check, limit_to
from kojo.states import JobState, Outcome
from tests.server.conftest import ROOT, wait_for
from tests.server.helpers import all_finished, states

pytestmark = pytest.mark.server


def max_overlap_per_bucket(job_type, key: str) -> dict[str, int]:
    """Most jobs of each ``params[key]`` value working at the same instant, from the changelog."""
    events = defaultdict(list)
    changes = JobStateChange.objects.filter(job__job_type=job_type).select_related("job").order_by("id")
    for change in changes:
        bucket = change.job.params[key]
        if change.to_state == JobState.WORKING:
            events[bucket].append((change.at, 1))
        elif change.from_state == JobState.WORKING:
            events[bucket].append((change.at, -1))
    peaks = {}
    for bucket, moments in events.items():
        running = peak = 0
        for _, delta in sorted(moments):  # at equal times the ending (-1) counts first
            running += delta
            peak = max(peak, running)
        peaks[bucket] = peak
    return peaks


def test_bucket_limit_holds_across_three_servers(start_server, make_job_type):
    kind = make_job_type(worker="tests.kojo_jobs.sleep", readiness=limit_to(2, key="customer"))
    for customer in "abc" * 8:
        kojo.schedule(kind.type_code, {"customer": customer, "seconds": 0.2})
    for _ in range(3):
        start_server("--concurrency", "4")
    samples = []

    def done():
        working = Job.objects.filter(job_type=kind, state=JobState.WORKING).values_list("params", flat=True)
        counts = defaultdict(int)
        for params in working:
            counts[params["customer"]] += 1
        samples.append(max(counts.values(), default=0))
        return all_finished(kind)

    wait_for(done, timeout=90, interval=0.01, message="24 bucketed jobs to finish")
    assert states(kind) == {JobState.COMPLETE_SUCCESS: 24}
    assert max(samples) <= 2
    peaks = max_overlap_per_bucket(kind, "customer")
    assert set(peaks) == {"a", "b", "c"} and max(peaks.values()) <= 2
    # The cap is per bucket, not per type: several customers ran side by side.
    assert sum(peaks.values()) > 2


def test_job_waits_until_its_readiness_check_holds(start_server, make_job_type, tmp_path):
    gate = tmp_path / "gate"
    gated = make_job_type(worker="tests.kojo_jobs.echo", readiness=check("tests.kojo_jobs.gate_open"))
    job = kojo.schedule(gated.type_code, {"gate": str(gate)})
    other = kojo.schedule(make_job_type(worker="tests.kojo_jobs.echo").type_code)
    start_server("--concurrency", "2")
    wait_for(lambda: Job.objects.get(pk=other.pk).state == JobState.COMPLETE_SUCCESS, message="other job")
    job.refresh_from_db()
    assert job.state == JobState.WAITING and job.attempts == 0
    gate.touch()
    wait_for(lambda: Job.objects.get(pk=job.pk).state == JobState.COMPLETE_SUCCESS, message="gated job")


def test_only_listed_exceptions_are_retried(start_server, make_job_type):
    kind = make_job_type(
        worker="tests.kojo_jobs.fail_with",
        max_attempts=3,
        retry_interval="PT0S",
        retry_on="builtins.ConnectionError",
    )
    retried = kojo.schedule(kind.type_code, {"error": "ConnectionResetError"})
    final = kojo.schedule(kind.type_code, {"error": "ValueError"})
    start_server("--concurrency", "2")
    wait_for(lambda: all_finished(kind), timeout=30, message="both jobs to end")
    retried.refresh_from_db()
    final.refresh_from_db()
    assert (retried.state, retried.attempts) == (JobState.COMPLETE_FAILED, 3)
    assert (final.state, final.attempts) == (JobState.COMPLETE_FAILED, 1)
    assert "no further attempt" in final.changes.last().reason
    # Every attempt's error is kept in the changelog.
    errors = [c.reason for c in retried.changes.filter(outcome=Outcome.PANICKED)]
    assert [("attempt 1" in e, "attempt 2" in e, "attempt 3" in e) for e in errors] == [
        (True, False, False),
        (False, True, False),
        (False, False, True),
    ]


def test_recurring_job_runs_again_an_interval_after_each_end(start_server, make_job_type):
    kind = make_job_type(worker="tests.kojo_jobs.sleep")
    kojo.recur(kind.type_code, {"seconds": 0.3}, known_as="tick", interval="PT1S")
    start_server("--concurrency", "2")
    wait_for(
        lambda: Job.objects.filter(job_type=kind, state=JobState.COMPLETE_SUCCESS).count() >= 3,
        timeout=30,
        message="three occurrences",
    )
    runs = list(
        Job.objects.filter(job_type=kind, state=JobState.COMPLETE_SUCCESS)
        .order_by("started_at")
        .values_list("started_at", "finished_at")
    )
    for (_, previous_end), (start, _) in zip(runs, runs[1:], strict=False):
        # Never overlapping, and never before an interval has passed since the previous end.
        assert (start - previous_end).total_seconds() >= 1.0
    assert all(job.recurrence.known_as == "tick" for job in Job.objects.filter(job_type=kind))


ADD_ONCE = """
import os, sys, time, django
django.setup()
import kojo
start = float(sys.argv[1])
time.sleep(max(0.0, start - time.time()))
for n in range(20):
    print(kojo.schedule(sys.argv[2], {"n": n % 5}, once=True).pk)
"""


def test_add_once_is_race_safe_across_processes(transactional_db, make_job_type):
    kind = make_job_type()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.server_settings", "PYTHONPATH": str(ROOT)}
    start = time.time() + 2.0  # every process is connected and waiting before the race starts
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", ADD_ONCE, str(start), kind.type_code],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    outputs = [process.communicate(timeout=60) for process in processes]
    assert [process.returncode for process in processes] == [0] * 6, [err for _, err in outputs]
    ids = {int(line) for out, _ in outputs for line in out.split()}
    # 6 processes × 20 calls over 5 distinct params: exactly 5 jobs, each returned to every caller.
    assert len(ids) == 5
    assert Job.objects.filter(job_type=kind).count() == 5


def test_per_job_max_attempts_overrides_the_type(start_server, make_job_type):
    kind = make_job_type(worker="tests.kojo_jobs.fail", max_attempts=1, retry_interval="PT0S")
    stubborn = kojo.schedule(kind.type_code, max_attempts=3)
    once = kojo.schedule(kind.type_code)
    start_server("--concurrency", "2")
    wait_for(lambda: all_finished(kind), timeout=30, message="both jobs to fail")
    stubborn.refresh_from_db()
    once.refresh_from_db()
    assert (stubborn.state, stubborn.attempts) == (JobState.COMPLETE_FAILED, 3)
    assert (once.state, once.attempts) == (JobState.COMPLETE_FAILED, 1)
    assert "failure 3" in stubborn.error


def test_a_job_projected_to_miss_its_deadline_overtakes_the_queue(start_server, make_job_type):
    """The leading housekeeper flags the late job and raises it to the top: the server runs it next,
    before the jobs queued ahead of it."""
    from datetime import timedelta

    from django.db import transaction
    from django.utils import timezone

    kind = make_job_type(worker="tests.kojo_jobs.sleep", schedule_limit=1)
    start_server("--concurrency", "2")
    first = kojo.schedule(kind.type_code, {"seconds": 1.5})  # the type's run time: 1.5 s
    wait_for(lambda: all_finished(kind), timeout=30, message="the first run")
    with transaction.atomic():
        running = kojo.schedule(kind.type_code, {"seconds": 1.5})
        queued = [kojo.schedule(kind.type_code, {"seconds": 0.1}) for _ in range(2)]
        late = kojo.schedule(
            kind.type_code, {"seconds": 0.1}, finish_by=timezone.now() + timedelta(seconds=2.5)
        )
    wait_for(lambda: all_finished(kind), timeout=30, message="every job")
    jobs = {job.pk: job for job in Job.objects.filter(job_type=kind)}
    assert jobs[late.pk].deadline_at_risk and jobs[late.pk].importance == 100
    assert all(jobs[late.pk].started_at < jobs[job.pk].started_at for job in queued)
    assert (
        jobs[running.pk].started_at < jobs[late.pk].started_at
        and jobs[first.pk].state == JobState.COMPLETE_SUCCESS
    )
