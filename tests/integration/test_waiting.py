import threading
import time

import pytest
from django.db import connection

import kojo
from kojo.exceptions import JobFailed, JobNotFound, WaitTimeout
from kojo.models import Job
from kojo.signals import job_canceled, job_scheduled
from kojo.states import JobState
from kojo.transitions import transition

pytestmark = pytest.mark.django_db


def test_finished_jobs_return_at_once(make_job_type):
    make_job_type("step")
    job = kojo.schedule("step")
    Job.objects.filter(pk=job.pk).update(state=JobState.COMPLETE_SUCCESS)
    started = time.monotonic()
    assert kojo.wait(job).state == JobState.COMPLETE_SUCCESS
    assert kojo.wait([job.pk])[0].pk == job.pk
    assert time.monotonic() - started < 1


def test_timeout_and_unknown_ids(make_job_type):
    make_job_type("step")
    job = kojo.schedule("step")
    with pytest.raises(WaitTimeout, match=f"jobs \\[{job.pk}\\]"):
        kojo.wait(job, timeout=0.2)
    with pytest.raises(JobNotFound):
        kojo.wait(999_999)


def test_raise_on_failure_names_the_failed_job(make_job_type):
    make_job_type("step")
    good, bad = kojo.schedule("step"), kojo.schedule("step")
    Job.objects.filter(pk=good.pk).update(state=JobState.COMPLETE_SUCCESS)
    Job.objects.filter(pk=bad.pk).update(state=JobState.COMPLETE_FAILED, error="disk full")
    assert [job.state for job in kojo.wait([good, bad])] == ["complete_success", "complete_failed"]
    with pytest.raises(JobFailed, match="disk full") as caught:
        kojo.wait([good, bad], raise_on_failure=True)
    assert [job.pk for job in caught.value.jobs] == [bad.pk]


@pytest.mark.django_db(transaction=True)
def test_wait_returns_when_another_process_finishes_the_job(make_job_type):
    make_job_type("step")
    job = kojo.schedule("step")
    Job.objects.filter(pk=job.pk).update(state=JobState.WORKING)

    def finish_later():
        time.sleep(0.3)
        transition(job.pk, JobState.COMPLETE_SUCCESS)
        connection.close()

    threading.Thread(target=finish_later).start()
    assert kojo.wait(job, timeout=10).state == JobState.COMPLETE_SUCCESS


def test_named_signals_fire_after_commit(make_job_type, django_capture_on_commit_callbacks):
    make_job_type("step")
    heard = []

    def scheduled(**kwargs):
        heard.append(("scheduled", kwargs["job_id"]))

    def canceled(**kwargs):
        heard.append(("canceled", kwargs["job_id"], kwargs["reason"]))

    job_scheduled.connect(scheduled)
    job_canceled.connect(canceled)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            job = kojo.schedule("step")
            kojo.cancel(job.pk, by="test")
        assert heard == [("scheduled", job.pk), ("canceled", job.pk, "canceled by test")]
    finally:
        job_scheduled.disconnect(scheduled)
        job_canceled.disconnect(canceled)
