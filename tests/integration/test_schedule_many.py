"""kojo.schedule_many(): many jobs of one type in one transaction and a constant number of queries."""

import pytest
from django.db import connection, transaction

import kojo
from kojo.exceptions import InvalidParams, JobTypeDisabled, WaitingLimitReached
from kojo.models import Job, JobStateChange
from kojo.states import JobState

pytestmark = pytest.mark.django_db


def test_creates_each_job_with_its_changelog_row(make_job_type, django_assert_max_num_queries):
    kind = make_job_type(default_importance=7)
    params = [{"n": n, "text": "ünï ✓"} for n in range(500)]
    # The type, the jobs, their changelog, the transaction (SQLite splits big INSERTs into batches).
    with django_assert_max_num_queries(6 if connection.vendor == "postgresql" else 30):
        jobs = kojo.schedule_many(kind.type_code, params)
    assert [job.params for job in jobs] == params
    assert all(job.pk and job.importance == 7 for job in jobs)
    stored = Job.objects.filter(job_type=kind, state=JobState.WAITING)
    assert sorted(stored.values_list("pk", flat=True)) == sorted(job.pk for job in jobs)
    changes = JobStateChange.objects.filter(job__in=jobs, from_state="", to_state=JobState.WAITING)
    assert changes.count() == 500


def test_one_bad_params_object_refuses_them_all(make_job_type):
    kind = make_job_type()
    with pytest.raises(InvalidParams, match="not JSON"):
        kojo.schedule_many(kind.type_code, [{"n": 1}, {"bad": {1, 2}}, {"n": 3}])
    with pytest.raises(InvalidParams, match="a list of params objects"):
        kojo.schedule_many(kind.type_code, {"n": 1})
    assert not Job.objects.exists()


def test_allowance_counts_the_whole_batch(make_job_type):
    kind = make_job_type(schedule_limit_allowance=5)
    kojo.schedule_many(kind.type_code, [{}] * 3)
    with pytest.raises(WaitingLimitReached, match="3 more would pass"):
        kojo.schedule_many(kind.type_code, [{}] * 3)
    assert Job.objects.count() == 3
    kojo.schedule_many(kind.type_code, [{}] * 2)
    assert Job.objects.count() == 5


def test_jobs_exist_only_if_the_caller_commits(make_job_type):
    kind = make_job_type()
    with pytest.raises(RuntimeError), transaction.atomic():
        kojo.schedule_many(kind.type_code, [{}] * 10)
        raise RuntimeError("roll back")
    assert not Job.objects.exists() and not JobStateChange.objects.exists()


def test_disabled_type_and_empty_list(make_job_type):
    assert kojo.schedule_many(make_job_type().type_code, []) == []
    with pytest.raises(JobTypeDisabled):
        kojo.schedule_many(make_job_type(is_enabled=False).type_code, [{}])
