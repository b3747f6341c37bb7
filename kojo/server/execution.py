"""Running one claimed job: call its worker and record how it ended.

Shared by the fork-per-job process and the pre-forked workers. Whatever happens in the job's code
ends in exactly one transition: the one the job asked for, an automatic success, or a failed attempt
that the retry policy turns into another attempt or the end.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import DatabaseError, connections

from kojo.models import Job
from kojo.registry import registry
from kojo.retries import end_attempt, is_retryable
from kojo.runtime import JobContext, json_result
from kojo.states import JobState, Outcome

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Seconds a job process keeps trying to record its job's ending while the database is away.
RECORD_PATIENCE = 60.0


def run_job(
    job: Job,
    *,
    actor: str,
    report_success: Callable[[Any], bool] | None = None,
    unblock: frozenset[int] = frozenset(),
    interruptible: bool = False,
) -> JobContext:
    """Run ``job`` in this process and record its ending.

    ``report_success`` takes a plain success (the worker returned, asking for nothing) to be recorded
    by the server with others in one statement: a fork-per-job process or a pooled worker sends it over
    the server's pipe. It returns False when it cannot, and the ending is written here and now.

    ``SystemExit`` and ``KeyboardInterrupt`` raised by the job's code are its exceptions like any
    other (recorded with their class and traceback; the process goes on), unless ``interruptible``:
    in the foreground (kojo_run) a ^C is the operator's, and propagates.
    """
    context = JobContext(job, actor=actor)

    def request_abort(signum, frame):
        context.abort_requested = True

    previous = signal.signal(signal.SIGTERM, request_abort)
    # Signals the caller held back (a pooled worker between jobs) reach the job only from here on.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, unblock)
    try:
        try:
            work = registry.resolve(job.job_type.worker)
            result = work(context)
        except KeyboardInterrupt:
            if interruptible:
                raise
            record_exception(context, job, actor=actor)
            return context
        except (Exception, SystemExit):
            record_exception(context, job, actor=actor)
            return context
        if context.ended is not None:
            return context
        if context.abort_requested and Job.objects.filter(pk=job.pk).exclude(abort_requested_by="").exists():
            with_db_retry(lambda: context.cancel_for_abort())
            return context
        if job.job_type.auto_complete_success:
            try:
                json_result(result)
            except TypeError as error:
                message = str(error)
                with_db_retry(lambda: context.complete_failed(message))
                return context
            if report_success is not None and report_success(result):
                context.ended = JobState.COMPLETE_SUCCESS
                return context
            with_db_retry(lambda: context.complete_success(result))
        else:
            with_db_retry(
                lambda: context.complete_failed(
                    "the worker returned without asking for an ending, and the type does not auto-complete"
                )
            )
    finally:
        signal.signal(signal.SIGTERM, previous)
    return context


def record_exception(context: JobContext, job: Job, *, actor: str) -> None:
    """The exception being handled, as the attempt's ending."""
    error = sys.exc_info()[1]
    detail = traceback.format_exc()
    if context.ended is not None:
        logger.error("job %s raised after it ended: %s", job.pk, error, exc_info=True)
        return
    reason = f"exception {type(error).__module__}.{type(error).__qualname__}: {error}"
    context.logger.warning("%s", reason)
    retry = is_retryable(job.job_type, error)
    error_text = reason
    if not retry:
        reason = f"{reason}; not a class listed in retry_on, so no further attempt"
    with_db_retry(
        lambda: end_attempt(
            job,
            Outcome.PANICKED,
            reason,
            error=error_text,
            traceback=detail,
            actor=actor,
            retry=retry,
        )
    )


def with_db_retry(action: Callable[[], T], patience: float = RECORD_PATIENCE) -> T:
    """Run a database write, reconnecting with backoff while the database is away."""
    deadline = time.monotonic() + patience
    delay = 0.1
    while True:
        try:
            return action()
        except DatabaseError as error:
            if time.monotonic() >= deadline:
                raise
            logger.warning("database unavailable (%s); retrying in %.1f s", str(error).strip(), delay)
            connections.close_all()
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
