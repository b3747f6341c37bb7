"""What a worker may ask of its job, each through a real server: hold, fail for good, log, end twice,
return without an ending where the type does not auto-complete, back off, retry after a timeout, and
count how its attempts ended."""

import pytest

import kojo
from kojo.models import Job, JobStateChange
from kojo.states import JobState, Outcome
from tests.server.conftest import wait_for

pytestmark = pytest.mark.server

SETTLED = (JobState.COMPLETE_SUCCESS, JobState.COMPLETE_FAILED, JobState.CANCELED, JobState.HOLD)


def settled(job, timeout: float = 40.0) -> Job:
    wait_for(lambda: Job.objects.get(pk=job.pk).state in SETTLED, timeout=timeout, message=f"job {job.pk}")
    return Job.objects.get(pk=job.pk)


def changes(job) -> list[tuple[str, str]]:
    return list(
        JobStateChange.objects.filter(job=job)
        .exclude(outcome="")
        .order_by("id")
        .values_list("outcome", "reason")
    )


@pytest.fixture
def server(start_server):
    return start_server("--mode", "static", "--concurrency", "2")


def test_a_job_can_hold_itself_until_an_operator_releases_it(server, make_job_type):
    job = settled(kojo.schedule(make_job_type(worker="tests.kojo_jobs.holds_itself").type_code))
    assert (job.state, job.attempts) == (JobState.HOLD, 1)
    assert changes(job) == [(Outcome.HELD, "waiting for a person")]


def test_complete_failed_ends_it_with_no_further_attempt_and_keeps_the_result(server, make_job_type):
    kind = make_job_type(worker="tests.kojo_jobs.fails_for_good", max_attempts=5)
    job = settled(kojo.schedule(kind.type_code))
    assert (job.state, job.attempts, job.result, job.error) == (
        JobState.COMPLETE_FAILED,
        1,
        {"row": 3},
        "bad input row 3",
    )


def test_the_job_logger_names_the_job(server, make_job_type):
    kind = make_job_type(worker="tests.kojo_jobs.logs_through_its_logger")
    job = settled(kojo.schedule(kind.type_code))
    assert job.state == JobState.COMPLETE_SUCCESS
    line = f"job[{job.pk} {kind.type_code}] processed 12 rows"
    wait_for(lambda: line in server.output(), message="the job's log line")


def test_a_second_ending_raises_and_the_first_one_stands(server, make_job_type):
    job = settled(kojo.schedule(make_job_type(worker="tests.kojo_jobs.ends_twice").type_code))
    assert (job.state, job.result) == (JobState.COMPLETE_SUCCESS, {"first": True})
    wait_for(lambda: f"job {job.pk} raised after it ended" in server.output(), message="the refused ending")


def test_returning_without_an_ending_fails_where_the_type_does_not_auto_complete(server, make_job_type):
    kind = make_job_type(worker="tests.kojo_jobs.noop", auto_complete_success=False)
    job = settled(kojo.schedule(kind.type_code))
    assert job.state == JobState.COMPLETE_FAILED
    assert "the type does not auto-complete" in changes(job)[-1][1]


@pytest.mark.parametrize(
    "backoff, delays",
    [
        ("fixed", ["1.0", "1.0", "1.0"]),
        ("linear", ["1.0", "2.0", "3.0"]),
        ("exponential", ["1.0", "2.0", "4.0"]),
    ],
)
def test_retries_back_off_as_the_type_says(server, make_job_type, backoff, delays):
    kind = make_job_type(
        worker="tests.kojo_jobs.fail",
        max_attempts=4,
        retry_interval="PT1S",
        retry_backoff=backoff,
        retry_jitter=False,
    )
    job = settled(kojo.schedule(kind.type_code))
    reasons = [reason for outcome, reason in changes(job) if outcome == Outcome.PANICKED]
    assert job.state == JobState.COMPLETE_FAILED and len(reasons) == 4
    assert [reason.split("next in ")[1] for reason in reasons[:3]] == [f"{delay} s" for delay in delays]
    assert reasons[3].endswith("attempt 4 of 4, none left")


def test_a_job_that_timed_out_is_retried_and_can_succeed(server, make_job_type):
    kind = make_job_type(
        worker="tests.kojo_jobs.slow_first_attempt", timeout="PT1S", max_attempts=2, retry_interval="PT0S"
    )
    job = settled(kojo.schedule(kind.type_code))
    assert (job.state, job.result, job.attempts) == (JobState.COMPLETE_SUCCESS, {"attempt": 2}, 2)
    assert [outcome for outcome, _ in changes(job)] == [Outcome.TIMED_OUT, Outcome.SUCCEEDED]


def test_a_jobs_own_timeout_stops_it_where_its_type_has_none(server, make_job_type):
    kind = make_job_type(worker="tests.kojo_jobs.sleep", max_attempts=1)
    job = settled(kojo.schedule(kind.type_code, {"seconds": 30}, timeout="PT1S"))
    assert job.state == JobState.COMPLETE_FAILED
    assert [outcome for outcome, _ in changes(job)] == [Outcome.TIMED_OUT]


def test_a_job_reads_how_its_earlier_attempts_ended(server, make_job_type):
    from kojo.explain import explain

    kind = make_job_type(worker="tests.kojo_jobs.reports_its_history", max_attempts=3, retry_interval="PT0S")
    job = settled(kojo.schedule(kind.type_code))
    assert (job.state, job.attempts) == (JobState.COMPLETE_SUCCESS, 3)
    assert job.result == {Outcome.CRASHED: 1, Outcome.RETRY: 1}
    assert job.outcome_counts() == {Outcome.RETRY: 1, Outcome.CRASHED: 1, Outcome.SUCCEEDED: 1}
    assert "attempts so far: succeeded 1, retry 1, crashed 1" in explain(job.pk).notes
