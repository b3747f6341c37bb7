"""The API a job's code sees: ``job.params``, ``job.progress(50)``, ``job.complete_success()``...

Each request (complete success or failed, retry, hold) is applied at once through the state machine,
on the job process's connection: called inside ``transaction.atomic()`` it commits or rolls back with
the job's own writes and with any jobs it schedules, which makes the job its own outbox. The job counts
as ended only once that transaction commits: if it rolls back, so does the ending, and what the job
does next (an exception, say) is the attempt's outcome. A request can only end this run: once it has
been applied, later requests raise IllegalTransition.

Every write is conditional on the run's fence (``job.fence``), a number no other run of this job ever
holds. ``job.fenced()`` makes the job's own writes conditional on it too.
"""

from __future__ import annotations

import json
import logging
import re
import time
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction

from kojo import clock
from kojo.conf import settings
from kojo.exceptions import RunTakenOver, WaitingLimitReached
from kojo.models import Job
from kojo.scheduling import schedule, start_time
from kojo.states import JobState, Outcome
from kojo.transitions import transition

logger = logging.getLogger("kojo.job")


class JobLogger(logging.LoggerAdapter):
    """Prefixes every line with the job, as the process title does: ``job[42 send_mail]``."""

    def process(self, msg, kwargs):
        kwargs.setdefault("extra", {}).update(self.extra)
        return f"job[{self.extra['job_id']} {self.extra['type_code']}] {msg}", kwargs


class JobContext:
    def __init__(self, job: Job, *, actor: str = ""):
        self._job = job
        self.actor = actor
        self.id: int = job.pk
        self.params: dict[str, Any] = job.params
        self.type_code: str = job.job_type.type_code
        self.attempt: int = job.attempts
        # The run's token: only this run's writes carry it, and a run taken over has lost it.
        self.fence: int = job.fence
        self.logger = JobLogger(logger, {"job_id": job.pk, "type_code": self.type_code})
        self.ended: JobState | None = None
        self.abort_requested = False  # set by the job process's SIGTERM handler
        self._last_progress_write = 0.0
        self._last_abort_check = 0.0

    @property
    def job(self) -> Job:
        return self._job

    def _end(self, target: JobState, outcome: str, reason: str, **fields: Any) -> None:
        transition(
            self.id,
            target,
            expect=[JobState.WORKING],
            outcome=outcome,
            reason=reason,
            actor=self.actor,
            where={"fence": self.fence},
            **fields,
        )
        # Ended once the ending commits (at once outside a transaction); a rollback undoes it.
        transaction.on_commit(lambda: setattr(self, "ended", target), using=settings.DATABASE)

    def outcome_counts(self) -> dict[str, int]:
        """How this job's earlier attempts ended: {"crashed": 1, "timed_out": 2, ...} (one query)."""
        return self._job.outcome_counts()

    def complete_success(self, result: Any = None) -> None:
        """Finish well now, keeping ``result`` (JSON) on the job."""
        result = json_result(result)
        self._end(JobState.COMPLETE_SUCCESS, Outcome.SUCCEEDED, "completed", result=result, progress=100)

    def complete_failed(self, reason: str = "failed", result: Any = None) -> None:
        """Finish badly now, without another attempt."""
        self._end(JobState.COMPLETE_FAILED, Outcome.FAILED, reason, error=reason, result=json_result(result))

    def retry(
        self,
        *,
        at: datetime | None = None,
        delay: timedelta | float | str | None = None,
        reason: str = "retry requested",
    ) -> None:
        """Run again later (now if no time is given); this attempt ends here."""
        self._end(JobState.WAITING, Outcome.RETRY, reason, start_after=start_time(at, delay))

    def hold(self, reason: str = "held by the job") -> None:
        """Park the job until an operator releases it."""
        self._end(JobState.HOLD, Outcome.HELD, reason)

    def cancel_for_abort(self) -> None:
        """The job noticed an abort request and returned: record it as aborted."""
        by = Job.objects.filter(pk=self.id).values_list("abort_requested_by", flat=True).first()
        by = by or "an operator"
        self._end(JobState.CANCELED, Outcome.ABORTED, f"aborted by {by}")

    def schedule(self, type_code: str, params: dict[str, Any] | None = None, **options: Any) -> Job:
        """Schedule another job, on this job's connection and inside its open transaction, if any."""
        return schedule(type_code, params, **options)

    def schedule_self(self, params: dict[str, Any] | None = None, **options: Any) -> Job:
        """Schedule the next job of this job's own type (the seeds' "good citizen" that re-schedules
        itself). When the type's waiting allowance is taken by a sibling already waiting (a cron tick,
        a kept instance), that sibling is the next job: it is returned, and this job is not failed."""
        try:
            return schedule(self.type_code, self.params if params is None else params, **options)
        except WaitingLimitReached:
            sibling = (
                Job.objects.filter(job_type__type_code=self.type_code, state=JobState.WAITING)
                .exclude(pk=self.id)
                .order_by("start_after", "id")
                .first()
            )
            if sibling is None:
                raise
            self.logger.info("a sibling already waits (job %s): it is the next one", sibling.pk)
            return sibling

    def progress(self, percent: float) -> None:
        """Report progress (0-100); also tells the fleet the job is alive. Writes are rate-limited."""
        value = max(0, min(100, int(percent)))
        now = time.monotonic()
        if now - self._last_progress_write < settings.PROGRESS_MIN_INTERVAL and value < 100:
            return
        self._last_progress_write = now
        self._held().update(progress=value, heartbeat_at=clock.now())

    def should_abort(self) -> bool:
        """True once an operator asked to abort this job, or its server is stopping it."""
        if self.abort_requested:
            return True
        now = time.monotonic()
        if now - self._last_abort_check >= settings.POLL_INTERVAL:
            self._last_abort_check = now
            self.abort_requested = (
                Job.objects.filter(pk=self.id).exclude(abort_requested_by="").exists()
                or not self._held().exists()
            )
        return self.abort_requested

    def _held(self):
        return Job.objects.filter(pk=self.id, state=JobState.WORKING, fence=self.fence)

    @contextmanager
    def fenced(self, using: str | None = None):
        """A transaction in which this run still holds its job, and keeps holding it until commit::

            with job.fenced():
                Invoice.objects.filter(pk=invoice_id).update(sent=True)

        The job's row is locked first; if this run was taken over (rescued, ended, claimed
        again), ``RunTakenOver`` is raised and nothing in the block is written. No rescue can move the
        fence on before the block commits, so its writes are this run's, or nobody's.
        """
        using = using or settings.DATABASE
        with transaction.atomic(using=using):
            if not self._held().using(using).select_for_update().values_list("pk").first():
                raise RunTakenOver(f"job {self.id}: run {self.fence} no longer holds the job")
            yield

    def __repr__(self) -> str:
        return f"<JobContext job[{self.id} {self.type_code}] attempt {self.attempt}>"


# A NUL character as JSON writes it (\u0000, not an escaped backslash followed by "u0000").
ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def json_result(value: Any) -> Any:
    """Results are stored as JSON; anything else is a programming error worth a clear message."""
    if value is None:
        return None
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(f"a job's result must be JSON: {error}") from None
    if ESCAPED_NUL.search(text):
        raise TypeError("a job's result must not contain NUL characters (PostgreSQL cannot store them)")
    return json.loads(text)
