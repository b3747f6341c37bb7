"""Races between sessions, forced with real concurrent transactions (threads with their own
connections) on PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

import kojo
from kojo import claims, cron
from kojo.models import Job, JobType
from kojo.pruning import prune_expired
from kojo.states import JobState
from kojo.transitions import transition

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite runs one writer at a time"),
]


class InThread(threading.Thread):
    """Run ``action`` in a thread with its own database connection; keep what it returned or raised."""

    def __init__(self, action):
        super().__init__(daemon=True)
        self.action = action
        self.result = self.error = None

    def run(self) -> None:
        try:
            self.result = self.action()
        except Exception as error:  # noqa: BLE001 - the test asserts on it
            self.error = error
        finally:
            connections.close_all()

    def outcome(self, timeout: float = 20.0):
        self.join(timeout)
        assert not self.is_alive(), "the thread is still waiting"
        if self.error is not None:
            raise self.error
        return self.result


def test_pruning_leaves_a_job_an_operator_is_retrying(make_job_type):
    kind = make_job_type(auto_delete_interval_duration="PT0S")
    job = kojo.schedule(kind.type_code)
    Job.objects.filter(pk=job.pk).update(
        state=JobState.COMPLETE_FAILED, delete_after=timezone.now() - timedelta(days=1)
    )
    retried, commit = threading.Event(), threading.Event()

    def operator_retry():
        with transaction.atomic():
            kojo.retry(job.pk)
            retried.set()
            commit.wait(10)

    operator = InThread(operator_retry)
    operator.start()
    assert retried.wait(10)
    pruner = InThread(prune_expired)
    pruner.start()
    pruner.join(1.0)  # it deletes what it may meanwhile, or waits on the retried row
    commit.set()
    operator.outcome()
    assert pruner.outcome() == 0
    assert Job.objects.get(pk=job.pk).state == JobState.WAITING
    assert prune_expired() == 0  # retried: no longer expired


def test_a_dependency_failing_while_its_dependent_is_scheduled_cancels_it(make_job_type):
    make_job_type("step")
    dependency = kojo.schedule("step")
    transition(dependency.pk, JobState.WORKING)
    scheduled, commit = threading.Event(), threading.Event()

    def view():
        with transaction.atomic():  # a request scheduling a follow-up, still open
            job = kojo.schedule("step", depends_on=[dependency])
            scheduled.set()
            commit.wait(10)
        return job

    request = InThread(view)
    request.start()
    assert scheduled.wait(10)
    failing = InThread(lambda: transition(dependency.pk, JobState.COMPLETE_FAILED, reason="boom"))
    failing.start()
    failing.join(1.0)  # it ends now, or waits for the request to commit
    commit.set()
    dependent = request.outcome()
    failing.outcome()
    assert Job.objects.get(pk=dependent.pk).state == JobState.CANCELED


def hold_type_row(job_type) -> tuple[InThread, threading.Event]:
    """Another claimer's session holding ``job_type``'s row lock until the event is set."""
    locked, release = threading.Event(), threading.Event()

    def other_claimer():
        with transaction.atomic():
            list(JobType.objects.filter(pk=job_type.pk).select_for_update())
            locked.set()
            release.wait(10)

    holder = InThread(other_claimer)
    holder.start()
    assert locked.wait(10)
    return holder, release


def test_a_claims_later_pass_never_waits_for_a_type_lock(make_job_type):
    """Two claimers that each lock one type in a first pass and want the other's in a later pass
    would deadlock: a later pass passes over a type another session holds instead of waiting."""
    full = make_job_type(schedule_limit=1)
    other = make_job_type(schedule_limit=5)
    Job.objects.create(job_type=full, state=JobState.WORKING)
    Job.objects.bulk_create(Job(job_type=full) for _ in range(claims.CANDIDATES_PER_SLOT))  # the first window
    behind = Job.objects.create(job_type=other)
    holder, release = hold_type_row(other)
    claimer = InThread(lambda: claims.claim(1, host="h", pid=1))
    claimer.start()
    claimer.join(2.0)
    finished_while_held = not claimer.is_alive()
    release.set()
    holder.outcome()
    assert finished_while_held, "a later pass waited for another claimer's type lock"
    assert claimer.outcome() == []
    assert [job.pk for job in claims.claim(1, host="h", pid=1)] == [behind.pk]


def test_a_type_made_singleton_while_a_claim_is_under_way_is_claimed_as_a_singleton(make_job_type):
    """A claim reads its candidates, then waits for a limited type's lock; meanwhile an edit makes the
    other type in its window a singleton and commits. The claim commits after the edit: it must
    count that type under the edited rule, not take all its jobs as the candidates said."""
    limited = make_job_type(schedule_limit=1)
    edited = make_job_type()
    Job.objects.create(job_type=limited)
    Job.objects.bulk_create(Job(job_type=edited) for _ in range(3))
    holder, release = hold_type_row(limited)
    claimer = InThread(lambda: claims.claim(10, host="h", pid=1))
    claimer.start()
    claimer.join(1.0)
    assert claimer.is_alive(), "the claim should be waiting for the limited type's lock"
    JobType.objects.filter(pk=edited.pk).update(can_work_in_parallel=False)
    release.set()
    holder.outcome()
    taken = claimer.outcome()
    working = Job.objects.filter(job_type=edited, state=JobState.WORKING).count()
    assert working <= 1, f"{working} jobs of a singleton type claimed by one claim: {taken}"
    # The next claim counts it as a singleton: one of its jobs works at a time.
    claims.claim(10, host="h", pid=1)
    assert Job.objects.filter(job_type=edited, state=JobState.WORKING).count() == 1


def test_a_cron_tick_never_holds_up_claims_behind_a_views_open_transaction(make_job_type):
    """A view's transaction scheduled a job of a type with a waiting allowance (so it holds that
    type's allowance lock until it commits); a cron tick of the type comes due meanwhile. The tick
    must not take the type's row and then wait for the view: every claim of the type would wait."""
    kind = make_job_type(schedule_limit=2, schedule_limit_allowance=100, cron_expression="* * * * *")
    JobType.objects.filter(pk=kind.pk).update(last_cron_tick=timezone.now() - timedelta(minutes=5))
    waiting = kojo.schedule(kind.type_code)
    scheduled, commit = threading.Event(), threading.Event()

    def view():
        with transaction.atomic():
            kojo.schedule(kind.type_code)
            scheduled.set()
            commit.wait(20)

    request = InThread(view)
    request.start()
    assert scheduled.wait(10)
    ticker = InThread(lambda: cron.schedule_due_ticks(actor="housekeeper"))
    ticker.start()
    ticker.join(5.0)
    tick_waited = ticker.is_alive()
    claimer = InThread(lambda: claims.claim(1, host="h", pid=1))
    claimer.start()
    claimer.join(3.0)
    claim_waited = claimer.is_alive()
    commit.set()
    request.outcome()
    assert ticker.outcome() == [], "the tick is made on a later pass"
    assert [job.pk for job in claimer.outcome()] == [waiting.pk]
    assert not tick_waited and not claim_waited


def test_a_release_beside_a_schedule_that_depends_on_the_released_job_never_deadlocks(make_job_type):
    """schedule() takes the type's allowance lock, then share-locks its dependencies; a release takes
    the same allowance lock before the job's row lock, so the two queue instead of waiting in a cycle."""
    kind = make_job_type(schedule_limit_allowance=100)
    held = kojo.schedule(kind.type_code)
    kojo.hold(held.pk)
    locked, go_on = threading.Event(), threading.Event()

    def release_slowly():
        with transaction.atomic():
            kojo.release(held.pk, by="operator")
            locked.set()
            go_on.wait(10)

    releaser = InThread(release_slowly)
    releaser.start()
    assert locked.wait(10)
    scheduler = InThread(lambda: kojo.schedule(kind.type_code, depends_on=[held.pk]))
    scheduler.start()
    scheduler.join(0.5)
    go_on.set()
    releaser.outcome()
    assert scheduler.outcome().dependencies.count() == 1
    assert Job.objects.get(pk=held.pk).state == JobState.WAITING
