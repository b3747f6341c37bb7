"""Fleet-wide promises, checked with several real kojo_server processes on one database."""

import os
import signal

import pytest

from kojo.locks import holders
from kojo.models import Job
from kojo.states import JobState
from tests.server.conftest import wait_for
from tests.server.helpers import all_finished, max_overlap, states

pytestmark = pytest.mark.server


def test_schedule_limit_holds_across_three_servers(start_server, make_job_type):
    limited = make_job_type(worker="tests.kojo_jobs.sleep", schedule_limit=2)
    Job.objects.bulk_create(Job(job_type=limited, params={"seconds": 0.05}) for _ in range(50))
    for _ in range(3):
        start_server("--concurrency", "4")
    samples = []

    def done():
        samples.append(Job.objects.filter(job_type=limited, state=JobState.WORKING).count())
        return all_finished(limited)

    wait_for(done, timeout=60, interval=0.01, message="50 limited jobs to finish")
    assert states(limited) == {JobState.COMPLETE_SUCCESS: 50}
    assert max(samples) <= 2
    assert max_overlap(limited) <= 2
    # The work was spread: more than one server took part.
    assert Job.objects.filter(job_type=limited).values("server_id").distinct().count() >= 1


def test_a_rate_limit_holds_across_two_servers(start_server, make_job_type):
    """5 starts a second, fleet-wide: no second of the changelog holds more, yet the rate is used."""
    from kojo.models import JobStateChange

    rated = make_job_type(worker="tests.kojo_jobs.noop", rate_limit="5/s")
    Job.objects.bulk_create(Job(job_type=rated) for _ in range(20))
    start_server("--concurrency", "4")
    start_server("--concurrency", "2", "--mode", "static")
    wait_for(lambda: all_finished(rated), timeout=60, message="20 rate-limited jobs to finish")
    assert states(rated) == {JobState.COMPLETE_SUCCESS: 20}
    starts = sorted(
        at.timestamp()
        for at in JobStateChange.objects.filter(job__job_type=rated, to_state=JobState.WORKING).values_list(
            "at", flat=True
        )
    )
    # Each start is stamped a moment after the claim counted it: allow that moment (50 ms).
    assert max(sum(1 for later in starts if start <= later < start + 0.95) for start in starts) <= 5
    assert starts[-1] - starts[0] < 3.0 + 2 * 1.0  # 4 windows of 5, each at most a poll late


def test_singleton_type_never_overlaps(start_server, make_job_type):
    single = make_job_type(worker="tests.kojo_jobs.sleep", can_work_in_parallel=False, schedule_limit=10)
    Job.objects.bulk_create(Job(job_type=single, params={"seconds": 0.05}) for _ in range(15))
    start_server("--concurrency", "4")
    start_server("--concurrency", "4", "--mode", "static")
    wait_for(lambda: all_finished(single), timeout=60, message="singleton jobs to finish")
    assert states(single) == {JobState.COMPLETE_SUCCESS: 15}
    assert max_overlap(single) == 1


def test_importance_orders_claims(start_server, make_job_type):
    kind = make_job_type(worker="tests.kojo_jobs.noop", can_work_in_parallel=False)
    low = [Job.objects.create(job_type=kind, importance=-10) for _ in range(3)]
    high = [Job.objects.create(job_type=kind, importance=50) for _ in range(3)]
    start_server("--concurrency", "1")
    wait_for(lambda: all_finished(kind), message="jobs to finish")
    order = list(Job.objects.filter(job_type=kind).order_by("started_at").values_list("pk", flat=True))
    assert order[:3] == [job.pk for job in high]
    assert order[3:] == [job.pk for job in low]


def housekeeping_leader(server) -> int | None:
    """The pid of the housekeeper (in ``server``'s process group) holding the housekeeping mutex."""
    for hold in holders("housekeeping"):
        try:
            if os.getpgid(hold.owner.pid) == server.pid and os.path.exists(f"/proc/{hold.owner.pid}"):
                return hold.owner.pid
        except ProcessLookupError:
            pass
    return None


def test_one_housekeeper_leads_and_another_takes_over_when_it_dies(start_server, make_job_type):
    first = start_server("--concurrency", "1")
    # A hold left by an earlier test's killed server is reclaimed as soon as this one contends.
    leader = wait_for(lambda: housekeeping_leader(first), message="the first server's housekeeper to lead")
    second = start_server("--concurrency", "1")
    wait_for(lambda: "started on" in second.output(), message="the second server to start")
    assert housekeeping_leader(first) == leader
    assert housekeeping_leader(second) is None
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    wait_for(
        lambda: housekeeping_leader(second),
        timeout=30,
        message="the second server's housekeeper to take over",
    )
    # And it does the chores: a cron job appears for the current minute.
    every_minute = make_job_type(worker="tests.kojo_jobs.noop", cron_expression="* * * * *")
    wait_for(
        lambda: Job.objects.filter(job_type=every_minute).exists(), message="a cron job from the new leader"
    )
