"""Successes reported by job processes and recorded by their server in one batch."""

import pytest

from kojo.claims import claim
from kojo.models import Job
from kojo.scheduling import schedule
from kojo.states import JobState, Outcome
from kojo.transitions import ReportedSuccess, complete_reported, transition

pytestmark = pytest.mark.django_db


def test_a_batch_records_each_result_retention_and_changelog(make_job_type):
    short, long = make_job_type(auto_delete_interval_duration="PT1M"), make_job_type()
    jobs = [schedule(short.type_code), schedule(long.type_code), schedule(short.type_code)]
    claimed = {job.pk: job for job in claim(3, host="h", pid=1)}
    results = [{"n": "ünïcode ✓", "list": [1, None], "q": 'it\'s "quoted" \\ {braces}, NULL'}, None, "text"]
    reports = [
        ReportedSuccess(job.pk, claimed[job.pk].attempts, result, f"h:{100 + i}")
        for i, (job, result) in enumerate(zip(jobs, results, strict=True))
    ]
    assert complete_reported(reports) == 3
    for job, result, report in zip(jobs, results, reports, strict=True):
        job.refresh_from_db()
        assert job.state == JobState.COMPLETE_SUCCESS and job.progress == 100
        assert job.result == result
        change = job.changes.last()
        assert (change.outcome, change.actor, change.attempt) == (Outcome.SUCCEEDED, report.actor, 1)
    assert Job.objects.filter(pk=jobs[1].pk, result__isnull=True).exists()  # None stays SQL NULL
    ttl = {job.pk: (job.delete_after - job.finished_at).total_seconds() for job in Job.objects.all()}
    assert ttl[jobs[0].pk] == 60 and ttl[jobs[1].pk] == 7 * 86400


def test_reports_for_jobs_no_longer_working_in_that_attempt_change_nothing(make_job_type):
    kind = make_job_type()
    aborted, rescued = schedule(kind.type_code), schedule(kind.type_code)
    claim(2)
    transition(aborted.pk, JobState.CANCELED, reason="aborted")
    transition(rescued.pk, JobState.WAITING, reason="orphaned")
    claim(2)  # the rescued job runs again: attempt 2
    reports = [ReportedSuccess(aborted.pk, 1, None, "h:1"), ReportedSuccess(rescued.pk, 1, None, "h:2")]
    assert complete_reported(reports) == 0
    assert Job.objects.get(pk=aborted.pk).state == JobState.CANCELED
    assert Job.objects.get(pk=rescued.pk).state == JobState.WORKING


def test_a_claim_records_the_finished_jobs_in_its_transaction(make_job_type):
    kind = make_job_type()
    first, second = schedule(kind.type_code), schedule(kind.type_code)
    (running,) = claim(1, host="h", pid=1)
    finished = [ReportedSuccess(running.pk, running.attempts, {"ok": True}, "h:1")]
    (next_job,) = claim(1, host="h", pid=1, finishing=finished)
    assert Job.objects.get(pk=running.pk).state == JobState.COMPLETE_SUCCESS
    assert Job.objects.get(pk=running.pk).result == {"ok": True}
    assert next_job.pk == second.pk != first.pk == running.pk
    # Nothing left to claim, or no free slot: the successes are still recorded.
    assert claim(1, finishing=[ReportedSuccess(next_job.pk, 1, None, "h:1")]) == []
    assert Job.objects.get(pk=next_job.pk).state == JobState.COMPLETE_SUCCESS


@pytest.mark.parametrize("result", [{"name": "a\x00b"}, ["\x00"], "\x00"])
def test_a_result_with_a_nul_character_is_refused_before_it_reaches_a_batch(result):
    from kojo.runtime import json_result

    with pytest.raises(TypeError, match="NUL"):
        json_result(result)


def test_a_backslash_before_u0000_is_no_nul():
    from kojo.runtime import json_result

    assert json_result({"path": "C:\\u0000"}) == {"path": "C:\\u0000"}
