"""The life of a job: one state enum and the one table of legal moves.

A job is born ``waiting``. Once its start time has come (and its dependencies and readiness criteria
allow), a server claims it: ``working``. The job's process then asks for an ending: ``complete_success``,
``complete_failed``, a retry (back to ``waiting`` with a later start time) or ``hold`` (parked until an
operator releases it back to ``waiting``). A waiting or held job can be ``canceled``; a working one can be
aborted, which also ends ``canceled``. When a job's process dies, times out or raises, the outcome is
written to the changelog and the type's retry policy turns it into ``waiting`` (another attempt) or
``complete_failed``. An operator may retry a failed or canceled job, which makes it ``waiting`` again.

``transitions.transition()`` is the only code that moves a job between these states.
"""

from __future__ import annotations

from django.db import models


class JobState(models.TextChoices):
    # Scheduled; runnable once start_after has passed.
    WAITING = "waiting", "waiting"
    # Claimed by a server; a process is running it.
    WORKING = "working", "working"
    # Parked; never claimed until released.
    HOLD = "hold", "hold"
    # Finished well.
    COMPLETE_SUCCESS = "complete_success", "complete success"
    # Finished badly, with no attempt left.
    COMPLETE_FAILED = "complete_failed", "complete failed"
    # Canceled before it ran, or aborted while it ran.
    CANCELED = "canceled", "canceled"


class Outcome(models.TextChoices):
    """Why a working job stopped, recorded in the changelog beside the state change."""

    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed (requested by the job)"
    RETRY = "retry", "retry requested by the job"
    HELD = "held", "held"
    PANICKED = "panicked", "raised an exception"
    CRASHED = "crashed", "process died"
    TIMED_OUT = "timed_out", "timed out"
    ABORTED = "aborted", "aborted"
    INTERRUPTED = "interrupted", "interrupted by server stop"
    ORPHANED = "orphaned", "server lost (stale heartbeat)"


TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.WAITING: frozenset({JobState.WORKING, JobState.HOLD, JobState.CANCELED}),
    JobState.WORKING: frozenset(
        {
            JobState.COMPLETE_SUCCESS,
            JobState.COMPLETE_FAILED,
            JobState.WAITING,
            JobState.HOLD,
            JobState.CANCELED,
        }
    ),
    JobState.HOLD: frozenset({JobState.WAITING, JobState.CANCELED}),
    JobState.COMPLETE_SUCCESS: frozenset(),
    JobState.COMPLETE_FAILED: frozenset({JobState.WAITING}),
    JobState.CANCELED: frozenset({JobState.WAITING}),
}

# States a job never leaves on its own; only an operator's retry brings failed or canceled jobs back.
TERMINAL: frozenset[JobState] = frozenset(
    {JobState.COMPLETE_SUCCESS, JobState.COMPLETE_FAILED, JobState.CANCELED}
)

# States in which a job is still "pending": add-once keys are unique among these.
PENDING: frozenset[JobState] = frozenset({JobState.WAITING, JobState.WORKING, JobState.HOLD})


def sources(target: JobState) -> frozenset[JobState]:
    """The states from which a job may move to ``target``."""
    return frozenset(state for state, targets in TRANSITIONS.items() if target in targets)


def is_legal(current: JobState | str, target: JobState | str) -> bool:
    return JobState(target) in TRANSITIONS[JobState(current)]
