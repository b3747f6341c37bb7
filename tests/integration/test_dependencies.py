import pytest
from django.db import IntegrityError, transaction

import kojo
from kojo.claims import claim
from kojo.exceptions import InvalidSchedule
from kojo.models import Job, JobDependency, JobStateChange
from kojo.states import JobState
from kojo.transitions import transition

pytestmark = pytest.mark.django_db


def test_a_job_waits_for_its_dependencies_to_succeed(make_job_type):
    kind = make_job_type("step")
    first = kojo.schedule("step", importance=-10)
    second = kojo.schedule("step", importance=-10)
    after = kojo.schedule("step", depends_on=[first, second.pk], importance=50)
    assert sorted(job.pk for job in claim(5)) == [first.pk, second.pk]  # not `after`, despite importance
    transition(first.pk, JobState.COMPLETE_SUCCESS)
    assert claim(5) == []
    transition(second.pk, JobState.COMPLETE_SUCCESS)
    assert [job.pk for job in claim(5)] == [after.pk]
    assert kind.pk == after.job_type_id


def test_a_failed_dependency_cancels_the_chain_with_the_reason(make_job_type):
    make_job_type("step")
    first = kojo.schedule("step")
    second = kojo.schedule("step", depends_on=[first])
    third = kojo.schedule("step", depends_on=[second])
    unrelated = kojo.schedule("step")
    [claimed] = claim(1)
    assert claimed.pk == first.pk
    transition(first.pk, JobState.COMPLETE_FAILED, reason="boom")
    states = dict(Job.objects.values_list("pk", "state"))
    assert states[second.pk] == states[third.pk] == JobState.CANCELED
    assert states[unrelated.pk] == JobState.WAITING
    assert JobStateChange.objects.get(job=second, to_state="canceled").reason == (
        f"dependency job {first.pk} ended complete_failed"
    )
    assert JobStateChange.objects.get(job=third, to_state="canceled").reason == (
        f"dependency job {second.pk} ended canceled"
    )


def test_bad_dependencies_are_refused_and_nothing_is_written(make_job_type):
    make_job_type("step")
    failed = kojo.schedule("step")
    Job.objects.filter(pk=failed.pk).update(state=JobState.COMPLETE_FAILED)
    count = Job.objects.count()
    with pytest.raises(InvalidSchedule, match="do not exist"):
        kojo.schedule("step", depends_on=[999_999])
    with pytest.raises(InvalidSchedule, match="without success"):
        kojo.schedule("step", depends_on=[failed])
    with pytest.raises(InvalidSchedule, match="jobs or job ids"):
        kojo.schedule("step", depends_on=["1"])
    assert Job.objects.count() == count


def test_dependencies_can_never_form_a_cycle(make_job_type):
    """Dependencies are given when a job is created, so they point only at older jobs."""
    make_job_type("step")
    first = kojo.schedule("step")
    second = kojo.schedule("step", depends_on=[first])
    assert list(first.dependencies.all()) == []
    assert [d.depends_on_id for d in second.dependencies.all()] == [first.pk]
    assert all(d.depends_on_id < d.job_id for d in second.dependencies.all())
    with pytest.raises(IntegrityError), transaction.atomic():
        JobDependency.objects.create(job=first, depends_on=first)
