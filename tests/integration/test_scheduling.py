import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

import kojo
from kojo.exceptions import (
    InvalidParams,
    InvalidSchedule,
    JobTypeDisabled,
    JobTypeNotFound,
    WaitingLimitReached,
)
from kojo.models import Job, JobStateChange
from kojo.states import JobState

pytestmark = pytest.mark.django_db


def test_schedules_now_with_the_type_defaults(make_job_type):
    make_job_type("report", default_importance=7)
    before = timezone.now()
    job = kojo.schedule("report", {"day": "2026-11-26"})
    job.refresh_from_db()
    assert job.state == JobState.WAITING
    assert job.params == {"day": "2026-11-26"}
    assert job.importance == 7
    assert before <= job.start_after <= timezone.now()
    assert JobStateChange.objects.get(job=job).to_state == JobState.WAITING


def test_schedules_at_a_time_and_after_a_delay(make_job_type):
    make_job_type("report")
    at = datetime(2030, 1, 1, tzinfo=UTC)
    assert kojo.schedule("report", at=at).start_after == at
    soon = kojo.schedule("report", delay=60).start_after - timezone.now()
    assert timedelta(seconds=58) < soon <= timedelta(seconds=60)
    later = kojo.schedule("report", delay="PT1H").start_after - timezone.now()
    assert timedelta(minutes=59) < later <= timedelta(hours=1)
    assert kojo.schedule("report", importance=-5).importance == -5


@pytest.mark.parametrize(
    "params",
    [
        {"when": datetime(2026, 1, 1)},
        {"x": object()},
        {"n": float("nan")},
        ["a", "list"],
        "text",
        {"s": "\x00"},
    ],
)
def test_refuses_params_that_are_not_a_json_object(make_job_type, params):
    make_job_type("report")
    with pytest.raises(InvalidParams):
        kojo.schedule("report", params)
    assert not Job.objects.exists()


def test_refuses_huge_params(make_job_type, settings):
    settings.KOJO_PARAMS_MAX_BYTES = 1000
    make_job_type("report")
    with pytest.raises(InvalidParams, match="limit is 1000"):
        kojo.schedule("report", {"blob": "x" * 2000})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"at": datetime(2030, 1, 1)}, "aware datetime"),
        ({"at": "tomorrow"}, "must be a datetime"),
        ({"delay": -1}, "cannot be negative"),
        ({"delay": "soon"}, "ISO 8601"),
        ({"delay": 5, "at": timezone.now()}, "not both"),
        ({"importance": 101}, "from -100 to 100"),
        ({"importance": "high"}, "whole number"),
        ({"max_attempts": 0}, "max_attempts"),
    ],
)
def test_refuses_bad_schedule_arguments(make_job_type, kwargs, message):
    make_job_type("report")
    with pytest.raises(InvalidSchedule, match=message):
        kojo.schedule("report", **kwargs)
    assert not Job.objects.exists()


def test_unknown_and_disabled_types_are_refused(make_job_type):
    make_job_type("paused", is_enabled=False)
    with pytest.raises(JobTypeNotFound, match="'nope'"):
        kojo.schedule("nope")
    with pytest.raises(JobTypeDisabled, match="'paused' is disabled"):
        kojo.schedule("paused")


def test_a_rolled_back_transaction_leaves_no_job(make_job_type):
    make_job_type("report")

    class Boom(Exception):
        pass

    with pytest.raises(Boom), transaction.atomic():
        kojo.schedule("report")
        assert Job.objects.count() == 1
        raise Boom
    assert not Job.objects.exists()
    assert not JobStateChange.objects.exists()


def test_add_once_returns_the_pending_job(make_job_type):
    make_job_type("report")
    first = kojo.schedule("report", {"a": 1, "b": 2}, once=True)
    again = kojo.schedule("report", {"b": 2, "a": 1}, once=True)
    other = kojo.schedule("report", {"a": 2}, once=True)
    keyed = kojo.schedule("report", {"a": 3}, once_key="nightly")
    keyed_again = kojo.schedule("report", {"a": 4}, once_key="nightly")
    assert again.pk == first.pk
    assert other.pk != first.pk
    assert keyed_again.pk == keyed.pk
    assert Job.objects.count() == 3


def test_add_once_creates_a_new_job_once_the_first_finished(make_job_type):
    make_job_type("report")
    first = kojo.schedule("report", {"a": 1}, once=True)
    Job.objects.filter(pk=first.pk).update(state=JobState.COMPLETE_SUCCESS)
    assert kojo.schedule("report", {"a": 1}, once=True).pk != first.pk


@pytest.mark.django_db(transaction=True)
def test_add_once_is_race_safe_across_threads(make_job_type):
    make_job_type("report")
    barrier = threading.Barrier(8)
    ids, errors = [], []

    def add():
        try:
            barrier.wait()
            ids.append(kojo.schedule("report", {"same": True}, once=True).pk)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=add) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(ids)) == 1
    assert Job.objects.count() == 1


def test_waiting_allowance_refuses_extra_jobs(make_job_type):
    make_job_type("report", schedule_limit_allowance=2)
    kojo.schedule("report")
    kojo.schedule("report")
    with pytest.raises(WaitingLimitReached, match="2 waiting jobs"):
        kojo.schedule("report")
    assert Job.objects.count() == 2
