"""Readiness criteria at claim time: bucket limits, registered checks, any/all, against the database."""

import threading
from collections import Counter

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from kojo.claims import claim
from kojo.models import Job, JobType
from kojo.readiness import any_of, check, limit_to
from kojo.registry import Registry
from kojo.scheduling import schedule
from kojo.states import JobState

pytestmark = pytest.mark.django_db


def test_bucket_limit_caps_working_jobs_per_params_value(make_job_type):
    kind = make_job_type(readiness=limit_to(2, key="customer"))
    for customer in "aaaabbbc":
        schedule(kind.type_code, {"customer": customer})
    claimed = claim(20)
    assert Counter(job.params["customer"] for job in claimed) == {"a": 2, "b": 2, "c": 1}
    assert claim(20) == []
    # One of customer a's jobs ends: exactly one more of a's may start, nobody else's.
    done = next(job for job in claimed if job.params["customer"] == "a")
    Job.objects.filter(pk=done.pk).update(state=JobState.COMPLETE_SUCCESS)
    again = claim(20)
    assert [job.params["customer"] for job in again] == ["a"]


def test_bucket_limit_with_overall_limit(make_job_type):
    kind = make_job_type(readiness=[limit_to(2, key="customer"), limit_to(3)])
    for customer in "aabbcc":
        schedule(kind.type_code, {"customer": customer})
    assert len(claim(20)) == 3


def test_jobs_not_ready_wait_without_using_attempts_and_block_nothing(make_job_type, tmp_path):
    gate = tmp_path / "gate"
    gated = make_job_type(readiness=check("tests.kojo_jobs.gate_open"))
    blocked = [schedule(gated.type_code, {"gate": str(gate)}, importance=50) for _ in range(30)]
    free = schedule(make_job_type().type_code, importance=-50)
    assert [job.pk for job in claim(1)] == [free.pk]  # thirty not-ready jobs ahead of it hide nothing
    assert claim(5) == []
    assert set(Job.objects.filter(pk__in=[j.pk for j in blocked]).values_list("state", "attempts")) == {
        (JobState.WAITING, 0)
    }
    gate.touch()
    assert len(claim(5)) == 5


def test_any_lets_urgent_jobs_past_a_full_limit(make_job_type):
    kind = make_job_type(readiness=any_of(check("tests.kojo_jobs.is_urgent"), limit_to(1)))
    schedule(kind.type_code, {"urgent": False})
    schedule(kind.type_code, {"urgent": False})
    schedule(kind.type_code, {"urgent": True})
    claimed = claim(10)
    assert sorted(job.params["urgent"] for job in claimed) == [False, True]


def test_a_raising_check_keeps_its_jobs_waiting_and_others_running(make_job_type):
    broken = make_job_type(readiness={"check": "tests.kojo_jobs.broken_check"})
    schedule(broken.type_code)
    other = schedule(make_job_type().type_code)
    assert [job.pk for job in claim(5)] == [other.pk]


def test_readiness_is_validated_in_the_model_and_the_registrar(make_job_type):
    kind = make_job_type()
    kind.readiness = {"limit": 0}
    with pytest.raises(ValidationError, match="whole number from 1"):
        kind.full_clean()
    registry = Registry()
    with pytest.raises(ValidationError, match="not a registered readiness check"):
        registry.add_job_type("gated", "tests.kojo_jobs.noop", readiness={"check": "os.system"})


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_never_exceed_a_bucket_limit(make_job_type):
    kind = make_job_type(readiness=limit_to(2, key="customer"))
    for customer in "abc" * 10:
        schedule(kind.type_code, {"customer": customer})
    claimers, barrier = 6, threading.Barrier(6)
    errors = []

    def run():
        try:
            barrier.wait()
            for _ in range(5):
                claim(3, host="test", pid=threading.get_ident() % 100000)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(claimers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    working = Counter(
        params["customer"]
        for params in Job.objects.filter(job_type=kind, state=JobState.WORKING).values_list(
            "params", flat=True
        )
    )
    assert working == {"a": 2, "b": 2, "c": 2}
    assert JobType.objects.filter(pk=kind.pk).exists()
