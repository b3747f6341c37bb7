"""Operator and API control of existing jobs: cancel, abort, release, retry, hold, run now. Every
change goes through the state machine; these functions only pick the transition and record who asked."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from kojo import messaging
from kojo.conf import settings
from kojo.exceptions import DependencyFailed, IllegalTransition
from kojo.models import Job, JobStateChange, JobType
from kojo.scheduling import (
    ENDED_WITHOUT_SUCCESS,
    MAX_ID,
    count_against_allowance,
    dependency_states,
    lock_allowance,
)
from kojo.states import JobState
from kojo.transitions import default_actor, transition


def cancel(job_id: int, *, by: str = "", reason: str = "") -> None:
    """Cancel a job that has not started (waiting or held). A finished job cannot be canceled."""
    transition(
        job_id,
        JobState.CANCELED,
        expect=[JobState.WAITING, JobState.HOLD],
        reason=reason or f"canceled by {by or default_actor()}",
        actor=by,
    )


def abort(job_id: int, *, by: str = "") -> bool:
    """Cancel a waiting job, or ask the server running a working job to kill it (on any node).

    Returns True when the job was canceled at once, False when the abort was handed to its server.
    """
    by = by or default_actor()
    if transition(
        job_id,
        JobState.CANCELED,
        expect=[JobState.WAITING, JobState.HOLD],
        reason=f"canceled by {by}",
        actor=by,
        strict=False,
    ):
        return True
    if Job.objects.filter(pk=job_id, state=JobState.WORKING).update(abort_requested_by=by):
        transaction.on_commit(
            lambda: messaging.publish(messaging.ABORT, {"job_id": job_id, "by": by}), using=settings.DATABASE
        )
        return False
    state = Job.objects.filter(pk=job_id).values_list("state", flat=True).first()
    raise IllegalTransition(job_id, state, JobState.CANCELED)


def release(job_id: int, *, by: str = "") -> None:
    """Let a held job run again; refused (WaitingLimitReached) while its type has as many jobs waiting
    as its ``schedule_limit_allowance`` allows."""
    with transaction.atomic(using=settings.DATABASE):
        check_allowance_of(job_id, [JobState.HOLD])
        transition(
            job_id,
            JobState.WAITING,
            expect=[JobState.HOLD],
            reason=f"released by {by or default_actor()}",
            actor=by,
            start_after=timezone.now(),
        )


def check_allowance_of(job_id: int, states: list[JobState]) -> None:
    """The job's type's waiting allowance, as ``schedule()`` checks it, when the job is in one of
    ``states``: a job an operator puts back in the queue is new work for it (a retry the job's own
    policy makes is not: see kojo.retries). In any other state the transition that follows says why
    it cannot be done. The allowance lock comes first, then the job's row lock (so its state cannot
    change before the transition), in the order ``schedule()`` takes them."""
    if not isinstance(job_id, int) or abs(job_id) > MAX_ID:
        return  # the transition says "no such job"
    job_type = JobType.objects.filter(jobs__pk=job_id).first()
    if job_type is None or not job_type.schedule_limit_allowance:
        return
    lock_allowance(job_type, using=settings.DATABASE)
    row = Job.objects.select_for_update(of=("self",)).filter(pk=job_id)
    if row.values_list("state", flat=True).first() in states:
        count_against_allowance(job_type, using=settings.DATABASE)


def retry(job_id: int, *, by: str = "") -> None:
    """Run a failed or canceled job again, with a fresh count of attempts.

    A job whose dependency ended without success would wait forever: that is refused, naming the
    dependencies to retry first (a dependency's own retry does not bring back what it canceled). So is
    a retry beyond the type's waiting allowance (WaitingLimitReached), as for ``release``.
    """
    with transaction.atomic(using=settings.DATABASE):
        check_allowance_of(job_id, [JobState.COMPLETE_FAILED, JobState.CANCELED])
        dependencies = []
        if isinstance(job_id, int) and abs(job_id) <= MAX_ID:  # else the transition says "no such job"
            dependencies = list(Job.objects.filter(dependents__job_id=job_id).values_list("pk", flat=True))
        states = dependency_states(dependencies, using=settings.DATABASE)
        failed = {pk: state for pk, state in states.items() if state in ENDED_WITHOUT_SUCCESS}
        if failed:
            listed = ", ".join(f"job {pk} ({state})" for pk, state in sorted(failed.items()))
            raise DependencyFailed(f"job {job_id} cannot be retried before its dependencies {listed}")
        transition(
            job_id,
            JobState.WAITING,
            expect=[JobState.COMPLETE_FAILED, JobState.CANCELED],
            reason=f"retried by {by or default_actor()}",
            actor=by,
            attempts=0,
            start_after=timezone.now(),
            abort_requested_by="",
            error="",
            traceback="",
        )


def hold(job_id: int, *, by: str = "") -> None:
    """Park a waiting job."""
    transition(
        job_id, JobState.HOLD, expect=[JobState.WAITING], reason=f"held by {by or default_actor()}", actor=by
    )


def run_now(job_id: int, *, by: str = "") -> None:
    """Let a held job run now (a release, within the waiting allowance), or bring a waiting job's
    start forward to now.

    A waiting job stays waiting, so the second case is no transition: one conditional UPDATE of its
    start time plus a changelog row, and a wake-up for idle servers once the transaction commits.
    Dependencies and readiness criteria still apply; only the start time is waived.
    """
    by = by or default_actor()
    now = timezone.now()
    reason = f"run now by {by}"
    with transaction.atomic(using=settings.DATABASE):
        check_allowance_of(job_id, [JobState.HOLD])
        if transition(
            job_id,
            JobState.WAITING,
            expect=[JobState.HOLD],
            reason=reason,
            actor=by,
            strict=False,
            start_after=now,
        ):
            return
    with transaction.atomic(using=settings.DATABASE):
        if not Job.objects.filter(pk=job_id, state=JobState.WAITING).update(start_after=now):
            state = Job.objects.filter(pk=job_id).values_list("state", flat=True).first()
            raise IllegalTransition(job_id, state, JobState.WAITING)
        # The UPDATE holds the row lock until commit: this read sees the job as updated.
        job = Job.objects.filter(pk=job_id).values_list("attempts", "job_type__type_code")
        attempts, type_code = job.get()
        JobStateChange.objects.create(
            job_id=job_id,
            from_state=JobState.WAITING,
            to_state=JobState.WAITING,
            reason=reason,
            actor=by,
            attempt=attempts,
            at=now,
        )
        transaction.on_commit(
            lambda: messaging.publish(messaging.WAKE, {"job_id": job_id, "type_code": type_code}),
            using=settings.DATABASE,
        )
