"""Operator and API control of existing jobs: cancel, abort, release, retry. Every change goes
through the state machine; these functions only pick the transition and record who asked."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from kojo import messaging
from kojo.exceptions import IllegalTransition
from kojo.models import Job
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
        transaction.on_commit(lambda: messaging.publish(messaging.ABORT, {"job_id": job_id, "by": by}))
        return False
    state = Job.objects.filter(pk=job_id).values_list("state", flat=True).first()
    raise IllegalTransition(job_id, state, JobState.CANCELED)


def release(job_id: int, *, by: str = "") -> None:
    """Let a held job run again."""
    transition(
        job_id,
        JobState.WAITING,
        expect=[JobState.HOLD],
        reason=f"released by {by or default_actor()}",
        actor=by,
        start_after=timezone.now(),
    )


def retry(job_id: int, *, by: str = "") -> None:
    """Run a failed or canceled job again, with a fresh count of attempts."""
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
