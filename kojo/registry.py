"""Workers and job types registered from code.

``@kojo.worker`` marks a callable as allowed to run jobs; ``@kojo.job_type(...)`` does that and also
declares a job type with its defaults. Only registered workers can be named by a job type, so an
admin cannot point a type at an arbitrary importable function. Registration runs when Django imports
each app's ``kojo_jobs`` module and touches no database; ``sync()`` creates the missing job type
rows: after ``migrate`` (``sync_after_migrate``), at server start-up, and for one type when it is first
scheduled. Rows that already exist are left as operators tuned them.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError

from kojo import validators
from kojo.conf import settings
from kojo.exceptions import UnknownWorker

logger = logging.getLogger(__name__)

# Job type fields a registration may set, with the validator each value must pass.
TYPE_FIELD_VALIDATORS: dict[str, Callable[[Any], None] | None] = {
    "name": validators.text_validator(255),
    "can_work_in_parallel": validators.validate_flag,
    "default_importance": validators.validate_importance,
    "cron_expression": validators.validate_cron,
    "cron_overflow": validators.validate_cron_overflow,
    "cron_timezone": validators.validate_timezone,
    "schedule_limit": validators.validate_limit,
    "schedule_limit_allowance": validators.validate_limit,
    "keep_instances": validators.validate_limit,
    "is_enabled": validators.validate_flag,
    "auto_complete_success": validators.validate_flag,
    "auto_delete_interval_duration": validators.validate_duration,
    "timeout": validators.validate_duration,
    "max_attempts": validators.validate_max_attempts,
    "retry_backoff": validators.validate_backoff,
    "retry_interval": validators.validate_duration,
    "retry_jitter": validators.validate_flag,
    "queue": validators.text_validator(100),
    "retry_on": validators.validate_exception_classes,
    "readiness": validators.validate_readiness,
    "rate_limit": validators.validate_rate,
    "rate_key": validators.validate_rate_key,
}


def worker_path(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


@dataclass
class Registration:
    type_code: str
    worker: str
    fields: dict[str, Any] = field(default_factory=dict)


class Registry:
    def __init__(self) -> None:
        self.workers: dict[str, Callable[..., Any]] = {}
        self.job_types: dict[str, Registration] = {}
        self._paths: tuple[str, ...] | None = None

    def worker_paths(self) -> tuple[str, ...]:
        """The registered workers' paths, sorted: what this process can run (its claims take only
        jobs of these, and its server row lists them)."""
        if self._paths is None or len(self._paths) != len(self.workers):
            self._paths = tuple(sorted(self.workers))
        return self._paths

    def add_worker(self, obj: Any) -> Any:
        """Register a function, or every public method of a class (run on a fresh instance per job)."""
        if inspect.isclass(obj):
            methods = [
                name for name, member in vars(obj).items() if callable(member) and not name.startswith("_")
            ]
            for name in methods:
                self.workers[f"{worker_path(obj)}.{name}"] = _method_runner(obj, name)
        elif callable(obj):
            self.workers[worker_path(obj)] = obj
        else:
            raise TypeError(f"{obj!r} is not callable and cannot be a kojo worker")
        return obj

    def add_job_type(self, type_code: str, worker: str | Callable[..., Any], **fields: Any) -> Registration:
        """Declare a job type; the same validators as the admin and the checks reject bad values."""
        if not isinstance(worker, str):
            self.add_worker(worker)
            worker = worker_path(worker)
        if isinstance(fields.get("retry_on"), (list, tuple)):
            fields["retry_on"] = "\n".join(
                name if isinstance(name, str) else worker_path(name) for name in fields["retry_on"]
            )
        errors = self.validate(type_code, worker, fields)
        if errors:
            raise ValidationError(errors)
        registration = Registration(type_code, worker, fields)
        self.job_types[type_code] = registration
        return registration

    def validate(self, type_code: str, worker: str, fields: dict[str, Any]) -> list[ValidationError]:
        errors = []
        checks: list[tuple[Callable[[Any], None], Any]] = [
            (validators.validate_type_code, type_code),
            (validators.validate_worker, worker),
        ]
        for name, value in fields.items():
            if name not in TYPE_FIELD_VALIDATORS:
                errors.append(ValidationError(f"{name!r} is not a job type field", code="unknown_field"))
            elif TYPE_FIELD_VALIDATORS[name] and value not in (None, ""):
                checks.append((TYPE_FIELD_VALIDATORS[name], value))
        for validate, value in checks:
            try:
                validate(value)
            except ValidationError as error:
                errors.append(error)
        return errors

    def resolve(self, path: str) -> Callable[..., Any]:
        try:
            return self.workers[path]
        except KeyError:
            raise UnknownWorker(f"{path!r} is not a registered kojo worker") from None

    def sync(self, using: str | None = None, *, only: str | None = None) -> list[str]:
        """Create a row for every registered type (or the type ``only``) that has none; return the
        codes created. Race-safe: two processes syncing at once create each row once."""
        using = using or settings.DATABASE
        from kojo.models import JobType

        created = []
        for registration in self.job_types.values():
            if only is not None and registration.type_code != only:
                continue
            defaults = {"worker": registration.worker, "name": registration.type_code, **registration.fields}
            _, was_created = JobType.objects.using(using).get_or_create(
                type_code=registration.type_code, defaults=defaults
            )
            if was_created:
                created.append(registration.type_code)
                logger.info("created job type %s", registration.type_code)
        return created


def sync_after_migrate(sender: Any, *, using: str, **kwargs: Any) -> None:
    """``post_migrate`` (after ``migrate``, and after the test runners' flushes): the types declared in
    code exist as soon as their table does, before any server has started, in your tests too."""
    if using != settings.DATABASE:
        return
    from kojo.checks import unapplied_migrations

    if unapplied_migrations(using):
        return  # migrated to an earlier state on purpose: the table may lack columns the model has
    registry.sync(using=using)


def _method_runner(cls: type, name: str) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        return getattr(cls(), name)(*args, **kwargs)

    run.__name__ = run.__qualname__ = f"{cls.__qualname__}.{name}"
    run.__module__ = cls.__module__
    return run


registry = Registry()


def worker(obj: Any) -> Any:
    """Decorator: allow a function (or each public method of a class) to be a job type's worker."""
    return registry.add_worker(obj)


def job_type(type_code: str, **fields: Any) -> Callable[[Any], Any]:
    """Decorator: register the function as a worker and declare a job type that runs it."""

    def decorate(obj: Any) -> Any:
        registry.add_worker(obj)
        registry.add_job_type(type_code, worker_path(obj), **fields)
        return obj

    return decorate


def register_job_type(type_code: str, worker: str | Callable[..., Any], **fields: Any) -> Registration:
    """The registrar call, for types whose worker is registered elsewhere (or a class method)."""
    return registry.add_job_type(type_code, worker, **fields)
