"""Reading a kojo job back as a Django ``TaskResult``: status, timestamps, attempts and errors.

Everything comes from the job row and its changelog, so any process can read any result. Each
claim is one ``working`` change whose actor (``host:pid``) is a worker id, which makes
``TaskResult.attempts`` count kojo's attempts. Each failed attempt is one ``TaskError``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.utils.module_loading import import_string

from kojo.models import Job, JobStateChange
from kojo.states import JobState, Outcome
from kojo.tasks import compat

STATUS = {
    JobState.WAITING: compat.TaskResultStatus.READY,
    JobState.HOLD: compat.TaskResultStatus.READY,
    JobState.WORKING: compat.TaskResultStatus.RUNNING,
    JobState.COMPLETE_SUCCESS: compat.TaskResultStatus.SUCCESSFUL,
    JobState.COMPLETE_FAILED: compat.TaskResultStatus.FAILED,
    JobState.CANCELED: compat.TaskResultStatus.FAILED,
}

# execution.record_exception writes "exception <module>.<qualname>: <message>".
EXCEPTION_REASON = re.compile(r"^exception ([\w.]+): ")


class TaskProcessDied(Exception):
    """The job process died while running the task (killed, perhaps out of memory)."""


class TaskTimedOut(Exception):
    """The task ran past its job type's timeout and was stopped."""


class TaskAborted(Exception):
    """An operator aborted the task while it ran."""


class TaskServerLost(Exception):
    """The server running the task stopped answering; the attempt was given up."""


class TaskEndedFailed(Exception):
    """The job was ended as failed without an exception (for example, a result that is not JSON)."""


# Outcomes that end an attempt without success, and the exception each stands for when no exception
# was raised in the task itself.
FAILED_ATTEMPT = {
    Outcome.PANICKED: TaskEndedFailed,
    Outcome.CRASHED: TaskProcessDied,
    Outcome.TIMED_OUT: TaskTimedOut,
    Outcome.ABORTED: TaskAborted,
    Outcome.ORPHANED: TaskServerLost,
    Outcome.FAILED: TaskEndedFailed,
}


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def load_task(path: str) -> Any:
    """The module-level Task at ``path``; anything else is refused, so a job row cannot run any callable."""
    try:
        task = import_string(path)
    except ImportError as error:
        raise compat.InvalidTask(f"task {path!r} cannot be imported: {error}") from None
    if not isinstance(task, compat.Task) or task.module_path != path:
        raise compat.InvalidTask(f"{path!r} is not a Django task: use a module-level @task function")
    return task


def bind_task(task: Any, params: dict[str, Any], *, strict: bool = True) -> Any:
    """The task as it was enqueued: its priority, queue, run_after and backend alias.

    A kojo_server whose settings lack the task's backend cannot rebuild it; with ``strict=False`` the
    module-level task is used as it stands.
    """
    run_after = params.get("run_after")
    try:
        return task.using(
            priority=params.get("priority", 0),
            queue_name=params.get("queue"),
            run_after=datetime.fromisoformat(run_after) if run_after else None,
            backend=params.get("backend"),
        )
    except (compat.InvalidTask, compat.InvalidTaskBackend):
        if strict:
            raise
        return task


def task_errors(job: Job, changes: Iterable[JobStateChange]) -> list[Any]:
    """One TaskError per failed attempt, each with its own traceback (kept on its changelog row; rows
    written before kojo kept them there have the latest one on the job, and the reason for the rest)."""
    failed = [change for change in changes if change.outcome in FAILED_ATTEMPT]
    errors = []
    for n, change in enumerate(failed, 1):
        match = EXCEPTION_REASON.match(change.reason)
        if match:
            path = match.group(1)
        else:
            path = class_path(FAILED_ATTEMPT[Outcome(change.outcome)])
        latest = n == len(failed) and job.traceback and change.outcome == Outcome.PANICKED
        text = change.traceback or (job.traceback if latest else change.reason)
        errors.append(compat.TaskError(exception_class_path=path, traceback=text))
    return errors


def attempt_claims(changes: Iterable[JobStateChange]) -> list[JobStateChange]:
    """The claim that ran each attempt. A claim handed back unstarted (a draining server, a pooled
    worker's job claimed ahead) gave its attempt back, and the next claim carries the same number:
    one worker id per kojo attempt, so ``TaskResult.attempts`` is the job's ``attempts``."""
    by_attempt: dict[int, JobStateChange] = {}
    for change in changes:
        if change.to_state == JobState.WORKING:
            by_attempt[change.attempt] = change  # the last claim of the number; its first place kept
    return list(by_attempt.values())


def task_result(job: Job, task: Any, changes: list[JobStateChange] | None = None) -> Any:
    """The Django TaskResult of a job that runs a task."""
    if changes is None:
        changes = list(JobStateChange.objects.filter(job_id=job.pk).order_by("id"))
    claims = attempt_claims(changes)
    status = STATUS[JobState(job.state)]
    result = compat.TaskResult(
        task=task,
        id=str(job.pk),
        status=status,
        enqueued_at=job.created_at,
        started_at=claims[0].at if claims else job.started_at,
        finished_at=job.finished_at if job.is_finished else None,
        last_attempted_at=claims[-1].at if claims else None,
        args=job.params.get("args", []),
        kwargs=job.params.get("kwargs", {}),
        backend=job.params.get("backend", ""),
        errors=task_errors(job, changes),
        worker_ids=[change.actor or f"attempt-{change.attempt}" for change in claims],
    )
    if status == compat.TaskResultStatus.SUCCESSFUL:
        object.__setattr__(result, "_return_value", job.result)
    return result
