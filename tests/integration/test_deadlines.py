"""Deadlines (kojo.deadlines): finish_by validated, importance rising as the deadline nears, and a job
projected to miss it flagged once, signalled, counted by the metrics and shown by explain."""

from datetime import timedelta

import pytest
from django.utils import timezone

import kojo
from kojo.deadlines import hurry
from kojo.exceptions import InvalidSchedule
from kojo.explain import explain
from kojo.fleet import snapshot
from kojo.metrics import exposition
from kojo.models import IMPORTANCE_MAX, Job, Server
from kojo.signals import job_deadline_at_risk
from kojo.states import JobState

pytestmark = pytest.mark.django_db


@pytest.fixture
def at_risk():
    heard = []

    def receiver(sender, job_id, type_code, finish_by, projected_end, **kwargs):
        heard.append(job_id)

    job_deadline_at_risk.connect(receiver)
    yield heard
    job_deadline_at_risk.disconnect(receiver)


def ran_before(kind, seconds: float, n: int = 3) -> None:
    """``n`` successful runs of ``seconds`` each: the type's recent run time."""
    now = timezone.now()
    for _ in range(n):
        Job.objects.create(
            job_type=kind,
            state=JobState.COMPLETE_SUCCESS,
            started_at=now - timedelta(seconds=seconds),
            finished_at=now,
        )


def aged(job: Job, seconds: float) -> Job:
    Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(seconds=seconds))
    return Job.objects.get(pk=job.pk)


def test_finish_by_takes_an_aware_time_or_a_duration(make_job_type):
    kind = make_job_type()
    at = timezone.now() + timedelta(hours=2)
    assert kojo.schedule(kind.type_code, finish_by=at).finish_by == at
    within = kojo.schedule(kind.type_code, finish_by="PT1H").finish_by - timezone.now()
    assert timedelta(minutes=59) < within <= timedelta(hours=1)
    (many,) = kojo.schedule_many(kind.type_code, [{}], finish_by=60)
    assert Job.objects.get(pk=many.pk).finish_by is not None


@pytest.mark.parametrize(
    "value, message",
    [
        (timezone.now().replace(tzinfo=None), "finish_by must be an aware datetime"),
        ("an hour", "finish_by: "),
        (-5, "finish_by: a duration cannot be negative"),
        ([1], "finish_by: a duration must be a timedelta"),
    ],
)
def test_bad_deadlines_are_refused_and_nothing_is_written(make_job_type, value, message):
    kind = make_job_type()
    with pytest.raises(InvalidSchedule, match=message):
        kojo.schedule(kind.type_code, finish_by=value)
    with pytest.raises(InvalidSchedule, match=message):
        kojo.schedule_many(kind.type_code, [{}], finish_by=value)
    assert not Job.objects.filter(job_type=kind).exists()


def test_importance_rises_with_the_share_of_its_time_used(make_job_type, at_risk):
    kind = make_job_type()
    halfway = aged(kojo.schedule(kind.type_code, finish_by=timezone.now() + timedelta(seconds=100)), 100)
    important = aged(
        kojo.schedule(kind.type_code, importance=80, finish_by=timezone.now() + timedelta(seconds=100)), 100
    )
    plain = kojo.schedule(kind.type_code, importance=5)
    hurry()
    assert 49 <= Job.objects.get(pk=halfway.pk).importance <= 50
    assert Job.objects.get(pk=important.pk).importance == 80  # its own is higher
    assert Job.objects.get(pk=plain.pk).importance == 5
    assert at_risk == []


def test_a_job_projected_late_is_hurried_and_flagged_once(make_job_type, at_risk):
    kind = make_job_type(schedule_limit=1)
    ran_before(kind, 60)
    ahead = kojo.schedule(kind.type_code, importance=10)
    late = kojo.schedule(kind.type_code, finish_by=timezone.now() + timedelta(seconds=90))
    roomy = kojo.schedule(kind.type_code, finish_by=timezone.now() + timedelta(hours=1))
    assert hurry() == [late.pk] and at_risk == [late.pk]
    stored = Job.objects.get(pk=late.pk)
    assert stored.deadline_at_risk and stored.importance == IMPORTANCE_MAX
    assert Job.objects.get(pk=roomy.pk).deadline_at_risk is False
    assert Job.objects.get(pk=ahead.pk).importance == 10
    assert hurry() == [] and at_risk == [late.pk]  # told once
    assert snapshot().at_risk == {kind.type_code: 1}
    assert f'kojo_jobs_deadline_at_risk{{type="{kind.type_code}"}} 1' in exposition(snapshot())
    Server.objects.create(host="node-1", pid=1, workers=[kind.worker])
    assert "; projected to miss it" in explain(late.pk).notes[-1]


def test_a_working_job_that_will_outrun_its_deadline_is_flagged(make_job_type, at_risk):
    kind = make_job_type()
    ran_before(kind, 60)
    job = kojo.schedule(kind.type_code, finish_by=timezone.now() + timedelta(seconds=20))
    Job.objects.filter(pk=job.pk).update(state=JobState.WORKING, started_at=timezone.now())
    assert hurry() == [job.pk]
    assert Job.objects.get(pk=job.pk).importance == 0  # a working job's importance no longer matters


def test_a_type_that_never_ran_is_projected_by_its_start_time_alone(make_job_type, at_risk):
    kind = make_job_type()
    kojo.schedule(kind.type_code, finish_by=timezone.now() + timedelta(seconds=30))
    too_late = kojo.schedule(kind.type_code, delay=60, finish_by=timezone.now() + timedelta(seconds=30))
    assert hurry() == [too_late.pk]
