import pytest
from django.db import IntegrityError, transaction

import kojo
from kojo.claims import claim
from kojo.exceptions import DependencyFailed, InvalidSchedule
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


def test_failing_the_head_of_a_long_chain_cancels_all_of_it_at_once(make_job_type):
    kind = make_job_type("step")
    length = 20_000  # recursion in Python failed past 500 links
    head = kojo.schedule("step")
    chain = Job.objects.bulk_create(Job(job_type=kind) for _ in range(length))
    links = zip([head, *chain[:-1]], chain, strict=True)
    JobDependency.objects.bulk_create(JobDependency(job=job, depends_on=before) for before, job in links)
    transition(head.pk, JobState.WORKING)
    transition(head.pk, JobState.COMPLETE_FAILED, reason="boom")
    assert Job.objects.filter(state=JobState.CANCELED).count() == length
    last = JobStateChange.objects.get(job=chain[-1], to_state=JobState.CANCELED)
    assert last.reason == f"dependency job {chain[-2].pk} ended canceled"
    assert last.from_state == JobState.WAITING
    first = JobStateChange.objects.get(job=chain[0], to_state=JobState.CANCELED)
    assert first.reason == f"dependency job {head.pk} ended complete_failed"


def test_a_job_reached_by_several_paths_is_canceled_once(make_job_type):
    make_job_type("step")
    head = kojo.schedule("step")
    left = kojo.schedule("step", depends_on=[head])
    right = kojo.schedule("step", depends_on=[head])
    held = kojo.schedule("step", depends_on=[left, right, head])
    kojo.hold(held.pk)
    transition(head.pk, JobState.CANCELED)
    changes = JobStateChange.objects.filter(job=held, to_state=JobState.CANCELED)
    assert [(change.from_state, change.reason) for change in changes] == [
        (JobState.HOLD, f"dependency job {head.pk} ended canceled")
    ]
    assert Job.objects.get(pk=held.pk).delete_after is not None


def test_a_job_canceled_by_its_failed_dependency_cannot_be_retried_before_it(make_job_type):
    make_job_type("step")
    first = kojo.schedule("step")
    second = kojo.schedule("step", depends_on=[first])
    transition(first.pk, JobState.WORKING)
    transition(first.pk, JobState.COMPLETE_FAILED, reason="boom")
    expected = rf"before its dependencies job {first.pk} \(complete_failed\)"
    with pytest.raises(DependencyFailed, match=expected):
        kojo.retry(second.pk)
    assert Job.objects.get(pk=second.pk).state == JobState.CANCELED
    kojo.retry(first.pk)  # the dependency first: then the dependent may follow
    kojo.retry(second.pk)
    assert Job.objects.get(pk=second.pk).state == JobState.WAITING
