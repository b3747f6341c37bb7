"""kojo's errors. Each class's docstring is its default message."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured


class KojoError(Exception):
    """A kojo error."""

    def __init__(self, message: str | None = None):
        super().__init__(message or (self.__doc__ or "").strip())


class KojoConfigurationError(KojoError, ImproperlyConfigured):
    """kojo is not configured correctly."""


class IllegalTransition(KojoError):
    """The job is not in a state that allows this change."""

    def __init__(self, job_id: int, current: str | None, target: str):
        self.job_id, self.current, self.target = job_id, current, target
        where = "does not exist" if current is None else f"is {current}"
        super().__init__(f"job {job_id} {where}; it cannot become {target}")


class JobTypeNotFound(KojoError):
    """No job type has this type code."""


class JobTypeDisabled(KojoError):
    """The job type is disabled: no new jobs may be scheduled for it."""


class InvalidParams(KojoError, ValueError):
    """Job params must be a JSON object (a dict of JSON values)."""


class InvalidSchedule(KojoError, ValueError):
    """The requested start time is not valid."""


class DependencyFailed(KojoError):
    """The job depends on jobs that ended without success: back in the queue, it could never run."""


class WaitingLimitReached(KojoError):
    """The job type already has as many waiting jobs as its schedule_limit_allowance allows."""


class RunTakenOver(KojoError):
    """This run no longer holds its job: it was rescued, ended or claimed again (its fence moved on)."""


class UnknownWorker(KojoError, LookupError):
    """The worker is not a registered kojo worker."""


class JobNotFound(KojoError, LookupError):
    """No job has this id."""


class WaitTimeout(KojoError, TimeoutError):
    """The jobs did not finish in time."""


class JobFailed(KojoError):
    """A job waited for ended without success."""

    def __init__(self, jobs):
        self.jobs = list(jobs)
        described = ", ".join(
            f"job {job.pk} {job.state}: {job.error or 'no error recorded'}" for job in self.jobs
        )
        super().__init__(described)


class LockError(KojoError):
    """A lock operation failed."""


class LockNotOwned(LockError):
    """This lock is not held by this owner: it cannot be released or renewed."""


class LockTimeout(LockError):
    """The lock could not be acquired in time."""
