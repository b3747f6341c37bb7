"""Recurring jobs: definitions by known_as, one pending occurrence, the next run after the end."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

import kojo
from kojo.exceptions import InvalidSchedule, JobTypeNotFound
from kojo.models import Job, Recurrence
from kojo.recurrence import schedule_due_recurrences
from kojo.states import JobState
from kojo.transitions import transition

pytestmark = pytest.mark.django_db


def finish(job, state=JobState.COMPLETE_SUCCESS):
    transition(job.pk, JobState.WORKING, started_at=timezone.now())
    transition(job.pk, state)


def test_one_pending_occurrence_and_the_next_after_the_end(make_job_type):
    kind = make_job_type()
    kojo.recur(kind.type_code, {"n": 1}, known_as="every-hour", interval="PT1H")
    first = schedule_due_recurrences()
    assert [job.params for job in first] == [{"n": 1}]
    assert first[0].recurrence.known_as == "every-hour"
    # While it is pending, nothing more is created, however late it gets.
    assert schedule_due_recurrences(timezone.now() + timedelta(hours=5)) == []
    finish(first[0])
    assert schedule_due_recurrences() == []
    recurrence = Recurrence.objects.get(known_as="every-hour")
    ended = Job.objects.get(pk=first[0].pk).finished_at
    assert recurrence.current_job is None and recurrence.next_run_at == ended + timedelta(hours=1)
    second = schedule_due_recurrences(ended + timedelta(hours=1))
    assert len(second) == 1 and second[0].pk != first[0].pk


def test_a_failed_occurrence_also_moves_the_schedule_on(make_job_type):
    kind = make_job_type()
    kojo.recur(kind.type_code, known_as="flaky", interval="PT10M")
    (job,) = schedule_due_recurrences()
    finish(job, JobState.COMPLETE_FAILED)
    schedule_due_recurrences()
    assert Recurrence.objects.get(known_as="flaky").next_run_at > timezone.now() + timedelta(minutes=9)


def test_defining_again_is_idempotent_or_replaces(make_job_type):
    kind, other = make_job_type(), make_job_type()
    first = kojo.recur(kind.type_code, {"a": 1}, known_as="report", interval="PT1H")
    (pending,) = schedule_due_recurrences()
    same = kojo.recur(kind.type_code, {"a": 1}, known_as="report", interval="PT1H")
    assert same.pk == first.pk and Job.objects.get(pk=pending.pk).state == JobState.WAITING
    replaced = kojo.recur(other.type_code, {"a": 2}, known_as="report", interval="PT2H")
    assert replaced.pk == first.pk and Recurrence.objects.count() == 1
    old = Job.objects.get(pk=pending.pk)
    assert old.state == JobState.CANCELED
    assert "redefined" in old.changes.last().reason
    (new,) = schedule_due_recurrences()
    assert new.job_type_id == other.pk and new.params == {"a": 2}


def test_a_working_occurrence_finishes_before_the_new_definition_applies(make_job_type):
    kind = make_job_type()
    kojo.recur(kind.type_code, known_as="long", interval="PT1H")
    (job,) = schedule_due_recurrences()
    transition(job.pk, JobState.WORKING, started_at=timezone.now())
    kojo.recur(kind.type_code, known_as="long", interval="PT3H")
    assert Job.objects.get(pk=job.pk).state == JobState.WORKING
    transition(job.pk, JobState.COMPLETE_SUCCESS)
    schedule_due_recurrences()
    ended = Job.objects.get(pk=job.pk).finished_at
    assert Recurrence.objects.get(known_as="long").next_run_at == ended + timedelta(hours=3)


def test_base_time_grid_first_run(make_job_type):
    kind = make_job_type()
    base = timezone.now().replace(microsecond=0) - timedelta(minutes=1)
    recurrence = kojo.recur(kind.type_code, known_as="grid", interval="PT10M", base_time=base)
    assert recurrence.next_run_at == base + timedelta(minutes=10)


def test_stop_recurring_cancels_the_waiting_occurrence(make_job_type):
    kind = make_job_type()
    kojo.recur(kind.type_code, known_as="gone", interval="PT1M")
    (job,) = schedule_due_recurrences()
    assert kojo.stop_recurring("gone") is True
    assert Job.objects.get(pk=job.pk).state == JobState.CANCELED
    assert not Recurrence.objects.exists()
    assert kojo.stop_recurring("gone") is False


def test_a_pruned_occurrence_does_not_stop_the_schedule(make_job_type):
    kind = make_job_type()
    kojo.recur(kind.type_code, known_as="pruned", interval="PT1M")
    (job,) = schedule_due_recurrences()
    finish(job)
    Job.objects.filter(pk=job.pk).delete()
    schedule_due_recurrences()
    assert Recurrence.objects.get(known_as="pruned").next_run_at > timezone.now()


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"interval": "PT0S"}, "longer than zero"),
        ({"interval": "every hour"}, "not an ISO 8601 duration"),
        ({"interval": 3600}, "ISO 8601 duration or a timedelta"),
        ({"interval": "PT1H", "reference": "middle"}, "reference must be"),
        ({"interval": "PT1H", "base_time": timezone.datetime(2026, 1, 1)}, "aware datetime"),
        ({"interval": "PT1H", "known_as": ""}, "known_as"),
    ],
)
def test_bad_definitions_are_refused_and_nothing_is_stored(make_job_type, kwargs, error):
    kind = make_job_type()
    kwargs.setdefault("known_as", "bad")
    with pytest.raises(InvalidSchedule, match=error):
        kojo.recur(kind.type_code, **kwargs)
    assert not Recurrence.objects.exists()


def test_unknown_type_is_refused(db):
    with pytest.raises(JobTypeNotFound):
        kojo.recur("no_such_type", known_as="x", interval="PT1H")


@pytest.mark.django_db(transaction=True)
def test_concurrent_housekeepers_create_one_occurrence(make_job_type):
    kind = make_job_type()
    kojo.recur(kind.type_code, known_as="raced", interval="PT1H")
    barrier, created, errors = threading.Barrier(6), [], []

    def run():
        try:
            barrier.wait()
            created.extend(schedule_due_recurrences())
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(created) == 1
    assert Job.objects.filter(job_type=kind).count() == 1


@pytest.mark.parametrize("edit", [{"importance": 5}, {"params": '{"n": 2}'}])
def test_an_admin_edit_keeps_what_the_housekeeper_did_while_the_page_was_open(make_job_type, edit):
    from django.contrib.admin.sites import site

    from kojo.admin.recurrences import RecurrenceForm

    kind = make_job_type()
    kojo.recur(kind.type_code, {"n": 1}, known_as="hourly", interval="PT1H")
    shown = Recurrence.objects.get(known_as="hourly")  # the change page is rendered from this
    [occurrence] = schedule_due_recurrences()  # meanwhile, a housekeeper creates the occurrence
    page = RecurrenceForm(instance=shown)
    data = {name: page[name].value() for name in RecurrenceForm.Meta.fields if page[name].value() is not None}
    form = RecurrenceForm({**data, **edit}, instance=shown)  # what the browser sends back
    assert form.is_valid(), form.errors
    site._registry[Recurrence].save_model(None, form.save(commit=False), form, change=True)
    schedule_due_recurrences()
    # The occurrence made meanwhile gave way to the new definition: one pending occurrence, not two.
    assert Job.objects.get(pk=occurrence.pk).state == JobState.CANCELED
    pending = Job.objects.filter(job_type=kind, state=JobState.WAITING)
    assert pending.count() == 1
    assert Recurrence.objects.get(known_as="hourly").current_job_id == pending.get().pk
