"""``KojoBackend``: Django Tasks stored as kojo jobs and run by ``kojo_server``.

A task becomes a job of a job type that runs ``kojo.tasks.worker.run_task``: by default one type per
queue (``task_<queue>``), or a type of its own when the task names one or passes kojo options to
``@task`` (Django 6.1 forwards them; the backport does too). Retries, timeouts and limits are that
type's, tuned in the admin like any other. Priority is the job's importance (both run -100...100).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.apps import apps
from django.core import checks
from django.core.exceptions import ValidationError
from django.db import transaction

from kojo import validators
from kojo.conf import settings
from kojo.tasks import compat
from kojo.tasks.worker import RUN_TASK

# kojo's models are imported where they are used: a project that names this backend in TASKS but
# forgot "kojo" in INSTALLED_APPS gets check kojo.E020, not a RuntimeError at the backend's import.

logger = logging.getLogger(__name__)

# KojoTask options that become job type fields, with the validator each value must pass.
TYPE_OPTIONS = {
    "max_attempts": validators.validate_max_attempts,
    "timeout": validators.validate_duration,
    "retry_backoff": None,
    "retry_interval": validators.validate_duration,
    "retry_jitter": None,
    "schedule_limit": validators.validate_limit,
    "schedule_limit_allowance": validators.validate_limit,
    "can_work_in_parallel": None,
    "auto_delete_interval_duration": validators.validate_duration,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class KojoTask(compat.Task):
    """A Task that may name its kojo job type and give that type's defaults, e.g.
    ``@task(max_attempts=3, timeout="PT30S")``. The options apply when the type row is created; after
    that the row is the operators', as for types registered in code."""

    # Defaults for what Django 6.0's Task requires (6.1 and the backport have them): the documented
    # ``KojoTask(func=f, max_attempts=3)`` works on every supported line.
    priority: int = compat.DEFAULT_TASK_PRIORITY
    backend: str = compat.DEFAULT_TASK_BACKEND_ALIAS
    queue_name: str = compat.DEFAULT_TASK_QUEUE_NAME
    run_after: datetime | None = None

    job_type: str | None = None
    max_attempts: int | None = None
    timeout: str | None = None
    retry_backoff: str | None = None
    retry_interval: str | None = None
    retry_jitter: bool | None = None
    schedule_limit: int | None = None
    schedule_limit_allowance: int | None = None
    can_work_in_parallel: bool | None = None
    auto_delete_interval_duration: str | None = None

    @property
    def kojo_options(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in TYPE_OPTIONS if getattr(self, name) is not None}


def type_code(*parts: str) -> str:
    """A valid, stable type code for a queue or task path; a digest keeps lossy names distinct."""
    text = "_".join(parts)
    slug = re.sub(r"[^a-z0-9_]+", "_", text.replace(".", "_").lower()).strip("_")
    code = f"task_{slug}"
    if slug != text.replace(".", "_") or len(code) > 100:
        code = f"{code[:91]}_{hashlib.sha256(text.encode()).hexdigest()[:8]}"
    return code


def job_type_for(task: Any) -> tuple[str, dict[str, Any]]:
    """The type code a task's jobs use and the fields a new type row gets."""
    options = task.kojo_options if isinstance(task, KojoTask) else {}
    explicit = task.job_type if isinstance(task, KojoTask) else None
    if explicit:
        code, name = explicit, f"Django task {task.module_path}"
    elif options:
        parts = [task.module_path] if task.queue_name == "default" else [task.module_path, task.queue_name]
        code = type_code(*parts)
        name = f"Django task {task.module_path}"
    else:
        code, name = type_code(task.queue_name), f"Django tasks, queue {task.queue_name}"
    return code, {"worker": RUN_TASK, "name": name[:255], "queue": task.queue_name[:100], **options}


class KojoBackend(compat.BaseTaskBackend):
    task_class = KojoTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        found = list(super().check(**kwargs))
        if not apps.is_installed("kojo"):
            found.append(
                checks.Error(
                    f"TASKS[{self.alias!r}] is kojo.tasks.KojoBackend, but 'kojo' is not in INSTALLED_APPS.",
                    hint="Add 'kojo' to INSTALLED_APPS, then run manage.py migrate.",
                    id="kojo.E020",
                )
            )
        return found

    def validate_task(self, task: Any) -> None:
        from kojo.models import Backoff

        super().validate_task(task)
        if not isinstance(task, KojoTask):
            return
        checks: list[tuple[Any, Any]] = [
            (TYPE_OPTIONS[name], value) for name, value in task.kojo_options.items() if TYPE_OPTIONS[name]
        ]
        if task.job_type is not None:
            checks.append((validators.validate_type_code, task.job_type))
        for validate, value in checks:
            try:
                validate(value)
            except ValidationError as error:
                raise compat.InvalidTask("; ".join(error.messages)) from None
        if task.retry_backoff is not None and task.retry_backoff not in Backoff.values:
            raise compat.InvalidTask(f"retry_backoff must be one of {', '.join(Backoff.values)}")
        if len(task.queue_name) > 100:
            raise compat.InvalidTask("queue names are at most 100 characters")

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        """Write the job on the caller's connection, inside its transaction, and announce it."""
        from kojo.models import JobType
        from kojo.scheduling import schedule
        from kojo.tasks.results import load_task, task_result

        self.validate_task(task)
        try:
            module_level = load_task(task.module_path)
        except compat.InvalidTask:
            module_level = None
        if module_level is None or module_level.func is not task.func:
            raise compat.InvalidTask(
                f"{task.module_path!r} does not name this task: a task must be a module-level @task function"
            )
        params = {
            "task": task.module_path,
            "args": compat.normalize_json(list(args)),
            "kwargs": compat.normalize_json(dict(kwargs)),
            "backend": self.alias,
            "queue": task.queue_name,
            "priority": int(task.priority),
            "run_after": task.run_after.isoformat() if task.run_after else None,
            "takes_context": task.takes_context,
        }
        code, defaults = job_type_for(task)
        with transaction.atomic(using=settings.DATABASE):
            job_type, created = JobType.objects.get_or_create(type_code=code, defaults=defaults)
            if created:
                logger.info("created job type %s for Django tasks", code)
            if job_type.worker != RUN_TASK:
                raise compat.InvalidTask(f"job type {code!r} runs {job_type.worker}, not Django tasks")
            job = schedule(code, params, at=task.run_after, importance=int(task.priority))
        result = task_result(job, task, changes=[])
        # Once the caller's transaction commits, as the job's own wake-up message is: a receiver
        # must never hear of a task whose job then rolls back.
        sender = type(self)
        transaction.on_commit(
            lambda: compat.task_enqueued.send(sender, task_result=result), using=settings.DATABASE
        )
        return result

    def get_result(self, result_id: str) -> Any:
        from kojo.models import Job, JobStateChange
        from kojo.tasks.results import bind_task, load_task, task_result

        text = str(result_id)
        job = None
        if text.isascii() and text.isdigit():
            jobs = Job.objects.select_related("job_type").filter(job_type__worker=RUN_TASK)
            job = jobs.filter(pk=int(text)).first()
        if job is None or job.params.get("backend") != self.alias:
            raise compat.TaskResultDoesNotExist(f"no task result has the id {text!r}")
        task = bind_task(load_task(job.params["task"]), {**job.params, "backend": self.alias})
        return task_result(job, task, list(JobStateChange.objects.filter(job_id=job.pk).order_by("id")))
