import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from kojo.exceptions import IllegalTransition
from kojo.models import Job, JobStateChange
from kojo.signals import job_state_changed
from kojo.states import TRANSITIONS, JobState
from kojo.transitions import transition

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("current", list(JobState))
@pytest.mark.parametrize("target", list(JobState))
def test_every_pair_succeeds_exactly_when_legal(make_job_type, current, target):
    job = Job.objects.create(job_type=make_job_type(), state=current)
    legal = target in TRANSITIONS[current]
    if legal:
        assert transition(job.pk, target, reason="test") is True
        job.refresh_from_db()
        assert job.state == target
        change = JobStateChange.objects.get(job=job)
        assert (change.from_state, change.to_state, change.reason) == (current, target, "test")
    else:
        with pytest.raises(IllegalTransition) as caught:
            transition(job.pk, target)
        assert caught.value.current == current
        assert Job.objects.get(pk=job.pk).state == current
        assert not JobStateChange.objects.filter(job=job).exists()


def test_not_strict_returns_false_instead_of_raising(make_job_type):
    job = Job.objects.create(job_type=make_job_type(), state=JobState.COMPLETE_SUCCESS)
    assert transition(job.pk, JobState.CANCELED, strict=False) is False


def test_expect_narrows_the_allowed_sources(make_job_type):
    job = Job.objects.create(job_type=make_job_type(), state=JobState.HOLD)
    with pytest.raises(IllegalTransition, match="is hold"):
        transition(job.pk, JobState.CANCELED, expect=[JobState.WAITING])


def test_missing_job_is_named(db):
    with pytest.raises(IllegalTransition, match="does not exist"):
        transition(999_999, JobState.CANCELED)


def test_finishing_sets_finish_and_retention_times(make_job_type):
    job = Job.objects.create(
        job_type=make_job_type(auto_delete_interval_duration="P2D"), state=JobState.WORKING
    )
    transition(job.pk, JobState.COMPLETE_SUCCESS, result={"ok": True})
    job.refresh_from_db()
    assert job.result == {"ok": True}
    assert (job.delete_after - job.finished_at).days == 2


def test_the_state_change_is_one_conditional_update(make_job_type):
    job = Job.objects.create(job_type=make_job_type(), state=JobState.WAITING)
    with CaptureQueriesContext(connection) as queries:
        transition(job.pk, JobState.HOLD)
    updates = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert len(updates) == 1
    assert '"state" = ' in updates[0].split("WHERE")[1]


def test_signal_fires_after_commit(make_job_type, django_capture_on_commit_callbacks):
    seen = []

    def receiver(**kwargs):
        seen.append((kwargs["from_state"], kwargs["to_state"]))

    job_state_changed.connect(receiver)
    try:
        job = Job.objects.create(job_type=make_job_type(), state=JobState.WAITING)
        with django_capture_on_commit_callbacks(execute=True):
            transition(job.pk, JobState.CANCELED)
            assert seen == []
        assert seen == [("waiting", "canceled")]
    finally:
        job_state_changed.disconnect(receiver)
