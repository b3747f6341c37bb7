"""The waiting allowance (``schedule_limit_allowance``) on every way into the queue, race-safe."""

import threading
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

import kojo
from kojo.claims import claim
from kojo.exceptions import WaitingLimitReached
from kojo.models import Job, Recurrence
from kojo.recurrence import schedule_due_recurrences
from kojo.retries import end_attempt
from kojo.states import JobState, Outcome
from kojo.transitions import transition
from tests.integration.test_races import InThread

pytestmark = pytest.mark.django_db


def ended(kind, state: JobState) -> Job:
    job = kojo.schedule(kind.type_code)
    transition(job.pk, JobState.WORKING, started_at=timezone.now())
    transition(job.pk, state)
    return job


def test_an_operator_retry_beyond_the_allowance_is_refused(make_job_type):
    kind = make_job_type(schedule_limit_allowance=1)
    failed = ended(kind, JobState.COMPLETE_FAILED)
    kojo.schedule(kind.type_code)
    with pytest.raises(WaitingLimitReached, match="schedule_limit_allowance of 1"):
        kojo.retry(failed.pk)
    assert Job.objects.get(pk=failed.pk).state == JobState.COMPLETE_FAILED


@pytest.mark.parametrize("release", [kojo.release, kojo.run_now])
def test_releasing_a_held_job_beyond_the_allowance_is_refused(make_job_type, release):
    kind = make_job_type(schedule_limit_allowance=1)
    held = kojo.schedule(kind.type_code)
    kojo.hold(held.pk)
    kojo.schedule(kind.type_code)
    with pytest.raises(WaitingLimitReached):
        release(held.pk)
    assert Job.objects.get(pk=held.pk).state == JobState.HOLD


def test_a_recurrence_occurrence_beyond_the_allowance_is_skipped_and_the_schedule_moves_on(make_job_type):
    kind = make_job_type(schedule_limit_allowance=1)
    kojo.schedule(kind.type_code)
    kojo.recur(kind.type_code, known_as="hourly", interval="PT1H")
    assert schedule_due_recurrences() == []
    assert Job.objects.filter(job_type=kind).count() == 1
    recurrence = Recurrence.objects.get(known_as="hourly")
    assert recurrence.current_job is None and recurrence.next_run_at > timezone.now() + timedelta(minutes=59)


def test_a_retry_by_the_jobs_own_policy_is_let_in_by_design(make_job_type):
    kind = make_job_type(schedule_limit_allowance=1, max_attempts=3, retry_interval="PT0S")
    kojo.schedule(kind.type_code)
    [job] = claim(1)
    kojo.schedule(kind.type_code)
    end_attempt(job, Outcome.PANICKED, "raised RuntimeError")
    assert Job.objects.get(pk=job.pk).state == JobState.WAITING
    assert Job.objects.filter(job_type=kind, state=JobState.WAITING).count() == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_releases_take_the_last_waiting_place_once(make_job_type):
    kind = make_job_type(schedule_limit_allowance=1)
    held = []
    for _ in range(2):
        held.append(kojo.schedule(kind.type_code))
        kojo.hold(held[-1].pk)
    first_in, go_on = threading.Event(), threading.Event()

    def release_and_wait(job_id: int):
        with transaction.atomic():
            kojo.release(job_id)
            first_in.set()
            go_on.wait(10)

    first = InThread(lambda: release_and_wait(held[0].pk))
    first.start()
    assert first_in.wait(10)
    # The first release has not committed: the second counts after it, never beside it.
    second = InThread(lambda: kojo.release(held[1].pk))
    second.start()
    second.join(0.5)
    go_on.set()
    first.outcome()
    with pytest.raises(WaitingLimitReached):
        second.outcome()
    assert Job.objects.filter(job_type=kind, state=JobState.WAITING).count() == 1
