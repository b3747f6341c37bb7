"""The kojo worker that runs Django tasks inside a kojo_server job process.

The job's params name the task by its module path, so the job process imports it (only a Django
Task object is accepted), calls it with the stored arguments, and completes the job with its JSON
return value. It sends ``task_started`` and ``task_finished``; for a failure, from inside the
exception handler (so Django's logger records the traceback), then re-raises so kojo records the
failed attempt and the job type's retry policy applies.

This module imports nothing from Django Tasks at import time: kojo registers ``run_task`` whether or
not Django Tasks is installed.
"""

from __future__ import annotations

import dataclasses
import traceback
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from kojo.registry import worker

if TYPE_CHECKING:
    from kojo.runtime import JobContext

RUN_TASK = "kojo.tasks.worker.run_task"


@worker
def run_task(job: JobContext) -> None:
    from kojo.models import Job
    from kojo.tasks import compat
    from kojo.tasks.results import bind_task, load_task, task_result

    params = job.params
    task = bind_task(load_task(params["task"]), params, strict=False)
    sender = backend_class(params.get("backend", ""))
    started = task_result(Job.objects.get(pk=job.id), task)
    compat.task_started.send(sender, task_result=started)
    args = list(params.get("args", []))
    if task.takes_context:
        args.insert(0, compat.TaskContext(task_result=started))
    try:
        value = compat.normalize_json(task.call(*args, **params.get("kwargs", {})))
        job.complete_success(value)
    except (Exception, SystemExit, KeyboardInterrupt) as error:  # each is the task's own failure
        failed = dataclasses.replace(
            started,
            status=compat.TaskResultStatus.FAILED,
            finished_at=timezone.now(),
            errors=[
                *started.errors,
                compat.TaskError(
                    exception_class_path=f"{type(error).__module__}.{type(error).__qualname__}",
                    traceback="".join(traceback.format_exception(error)),
                ),
            ],
        )
        compat.task_finished.send(sender, task_result=failed)
        raise
    compat.task_finished.send(sender, task_result=task_result(Job.objects.get(pk=job.id), task))


def backend_class(alias: str) -> Any:
    """The configured backend's class (the signals' sender); KojoBackend when this server lacks it."""
    from kojo.tasks import compat
    from kojo.tasks.backend import KojoBackend

    try:
        backend = compat.task_backends[alias]
    except (compat.InvalidTaskBackend, KeyError):
        return KojoBackend
    return type(backend) if isinstance(backend, KojoBackend) else KojoBackend
