"""The only code that changes a job's state.

Each change is one conditional UPDATE (``WHERE id = %s AND state = <the state we saw>``) plus a
changelog row, in one transaction. The row is read with ``SELECT ... FOR UPDATE`` first so the
changelog knows the real source state and the error names it; the condition on the UPDATE is what
makes a lost race harmless on databases without row locks (SQLite).
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connections, transaction
from django.db.models import Case, JSONField, Q, Value, When
from django.utils import timezone

from kojo import clock, messaging
from kojo.conf import settings
from kojo.durations import parse_duration
from kojo.exceptions import IllegalTransition
from kojo.models import Job, JobStateChange
from kojo.signals import job_state_changed
from kojo.states import TERMINAL, JobState, Outcome, sources

logger = logging.getLogger(__name__)


def default_actor() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# Characters of an attempt's traceback its changelog row keeps (the end, where the error is).
TRACEBACK_KEPT = 16_000


def transition(
    job_id: int,
    to: JobState,
    *,
    expect: Iterable[JobState] | None = None,
    reason: str = "",
    outcome: str = "",
    actor: str = "",
    strict: bool = True,
    where: dict[str, Any] | None = None,
    when: Q | None = None,
    skip_locked: bool = False,
    using: str | None = None,
    **fields: Any,
) -> bool:
    """Move one job to ``to``; raise IllegalTransition (or return False when not ``strict``) if its
    current state is not one of ``expect`` (default: every state the transition table allows).

    ``where`` adds conditions, e.g. ``{"fence": 7}`` so that a run can only end itself, never a later
    run of its job after it was rescued and claimed again; ``when`` adds a condition as a ``Q`` (a
    rescue re-checks staleness with it). With ``skip_locked``, a row another transaction holds locked
    is left alone (as if the conditions failed) instead of waited for.
    """
    using = using or settings.DATABASE
    to = JobState(to)
    allowed = frozenset(JobState(state) for state in expect) if expect is not None else sources(to)
    allowed &= sources(to)
    conditions = Q(pk=job_id, **(where or {})) & (when or Q())
    # On PostgreSQL the change is stamped by the database's clock, read as the row is locked: after
    # whatever changed the row before (its claim), whichever node's clock is off.
    columns = ["state", "attempts", "job_type__type_code", "job_type__auto_delete_interval_duration"]
    columns += ["job_type__schedule_limit", "job_type__can_work_in_parallel", "job_type__readiness"]
    if connections[using].vendor == "postgresql":
        columns.append(clock.Ticking())
    with transaction.atomic(using=using):
        row = (
            Job.objects.using(using)
            .select_for_update(of=("self",), skip_locked=skip_locked)
            .filter(conditions)
            .values_list(*columns)
            .first()
        )
        current = row[0] if row else None
        if current is None or current not in allowed:
            if strict:
                raise IllegalTransition(job_id, current, to)
            return False
        _, attempts, type_code, retention, limit, parallel, readiness = row[:7]
        now = row[7] if len(row) > 7 else timezone.now()
        # Whatever the change, the job leaves its bucket's shelf (kojo.shelving).
        updates: dict[str, Any] = {"state": to, "state_changed_at": now, "shelved": False, "bucket": ""}
        updates.update(fields)
        if to in TERMINAL:
            updates.setdefault("finished_at", now)
            updates.setdefault("delete_after", now + parse_duration(retention))
        elif to == JobState.WAITING:
            updates.setdefault("finished_at", None)
            updates.setdefault("delete_after", None)
        changed = Job.objects.using(using).filter(conditions, state=current).update(**updates)
        if not changed:
            if strict:
                raise IllegalTransition(
                    job_id,
                    Job.objects.using(using).filter(pk=job_id).values_list("state", flat=True).first(),
                    to,
                )
            return False
        record(
            job_id,
            type_code,
            current,
            to,
            outcome=outcome,
            reason=reason,
            actor=actor,
            attempt=updates.get("attempts", attempts),
            at=now,
            traceback=fields.get("traceback", ""),
            # A run of a type whose working jobs are counted ended: a slot may be free, and every
            # server should look now rather than at its next poll.
            wake=current == JobState.WORKING and (bool(limit) or not parallel or readiness is not None),
            using=using,
        )
        if to in (JobState.COMPLETE_FAILED, JobState.CANCELED):
            cancel_dependents(job_id, to, using=using)
    logger.debug("job %s: %s -> %s %s", job_id, current, to, reason, extra={"job_id": job_id})
    return True


@dataclass(frozen=True)
class ReportedSuccess:
    """A job process's report that its job returned well, for its server to record."""

    job_id: int
    fence: int
    result: Any
    actor: str


def complete_reported(reports: list[ReportedSuccess], *, using: str | None = None) -> int:
    """Record many reported successes as one conditional UPDATE plus their changelog rows; return how
    many were recorded. A job no longer working in the reported run (aborted, timed out, rescued
    meanwhile: its fence moved on) is left as it is, exactly as ``transition(..., strict=False)`` would."""
    using = using or settings.DATABASE
    if not reports:
        return 0
    if connections[using].vendor == "postgresql":
        # One statement is atomic on its own: no BEGIN and COMMIT round trips around it.
        current = complete_reported_in_one_statement(reports, using=using)
    else:
        # No savepoint when called inside the claim's transaction: one more round trip for nothing.
        with transaction.atomic(using=using, savepoint=False):
            by_id = {report.job_id: report for report in reports}
            current = complete_reported_with_orm(by_id, timezone.now(), using=using)
    # Wake the fleet when a limited type's run ended: a slot is free (see transition()).
    wake = any(limited for _, _, limited in current)
    announce([succeeded(pk, type_code) for pk, type_code, _ in current], wake=wake, using=using)
    return len(current)


def complete_reported_with_orm(
    by_id: dict[int, ReportedSuccess], now: datetime, *, using: str
) -> list[tuple[int, str, bool]]:
    rows = (
        Job.objects.using(using)
        .select_for_update(of=("self",))
        .filter(pk__in=list(by_id), state=JobState.WORKING)
        .values_list(
            "pk",
            "attempts",
            "job_type__type_code",
            "job_type__auto_delete_interval_duration",
            "fence",
            "job_type__schedule_limit",
            "job_type__can_work_in_parallel",
            "job_type__readiness",
        )
    )
    rows = [row for row in rows if row[4] == by_id[row[0]].fence]
    limited = {row[0]: bool(row[5]) or not row[6] or row[7] is not None for row in rows}
    current = [row[:4] for row in rows]
    if not current:
        return []
    # A result of None is stored as SQL NULL, as transition() stores it, not as JSON null.
    results = [
        When(pk=pk, then=Value(by_id[pk].result, JSONField()))
        for pk, *_ in current
        if by_id[pk].result is not None
    ]
    retention = [When(pk=pk, then=Value(now + parse_duration(keep))) for pk, _, _, keep in current]
    Job.objects.using(using).filter(pk__in=[row[0] for row in current], state=JobState.WORKING).update(
        state=JobState.COMPLETE_SUCCESS,
        state_changed_at=now,
        finished_at=now,
        progress=100,
        result=Case(*results, default=None, output_field=JSONField()),
        delete_after=Case(*retention),
    )
    JobStateChange.objects.using(using).bulk_create(
        JobStateChange(
            job_id=pk,
            from_state=JobState.WORKING,
            to_state=JobState.COMPLETE_SUCCESS,
            outcome=Outcome.SUCCEEDED,
            reason="completed",
            actor=by_id[pk].actor,
            attempt=attempts,
            at=now,
        )
        for pk, attempts, _, _ in current
    )
    return [(pk, type_code, limited[pk]) for pk, _, type_code, _ in current]


# The same conditional UPDATE and changelog INSERT as the ORM path, as common table expressions of one
# statement (the claim's, or their own): PostgreSQL reads the type's ISO 8601 retention as an interval.
# ``done`` holds what changed.
COMPLETE_REPORTED_CTES = """
done_stamp AS MATERIALIZED (SELECT clock_timestamp() AS at),
reported AS (
    SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::jsonb[], %s::text[])
        AS r(id, fence, result, actor)
),
done AS (
    UPDATE kojo_job AS job
    SET state = %s, state_changed_at = done_stamp.at, finished_at = done_stamp.at, progress = 100,
        result = reported.result, delete_after = done_stamp.at
            + replace(upper(trim(job_type.auto_delete_interval_duration)), ',', '.')::interval
    FROM reported, kojo_job_type AS job_type, done_stamp
    WHERE job.id = reported.id AND job.fence = reported.fence AND job.state = %s
      AND job_type.id = job.job_type_id
    RETURNING job.id, job.attempts, job_type.type_code, reported.actor, done_stamp.at,
        job_type.schedule_limit > 0 OR NOT job_type.can_work_in_parallel OR job_type.readiness IS NOT NULL
            AS limited
),
done_logged AS (
    INSERT INTO kojo_job_state_change (job_id, from_state, to_state, outcome, reason, actor, attempt, at)
    SELECT id, %s, %s, %s, 'completed', actor, attempts, at FROM done
)"""


def complete_reported_ctes(reports: list[ReportedSuccess]) -> tuple[str, list[Any]]:
    """The SQL of COMPLETE_REPORTED_CTES (the same text for any number of reports) and its parameters;
    the successes are stamped by the database's clock as the statement reaches them."""
    params: list[Any] = [
        [report.job_id for report in reports],
        [report.fence for report in reports],
        [None if report.result is None else json.dumps(report.result) for report in reports],
        [report.actor for report in reports],
    ]
    params += [JobState.COMPLETE_SUCCESS, JobState.WORKING]
    params += [JobState.WORKING, JobState.COMPLETE_SUCCESS, Outcome.SUCCEEDED]
    return COMPLETE_REPORTED_CTES, params


def complete_reported_in_one_statement(
    reports: list[ReportedSuccess], *, using: str
) -> list[tuple[int, str, bool]]:
    ctes, params = complete_reported_ctes(reports)
    with connections[using].cursor() as cursor:
        cursor.execute(f"WITH {ctes} SELECT id, type_code, limited FROM done", params)
        return [(pk, type_code, limited) for pk, type_code, limited in cursor.fetchall()]


def succeeded(pk: int, type_code: str) -> dict[str, Any]:
    """The change a recorded reported success announces."""
    return change(pk, type_code, JobState.WORKING, JobState.COMPLETE_SUCCESS, Outcome.SUCCEEDED, "completed")


# Dependents canceled per statement when a failure cascades down a chain.
CANCEL_BATCH = 1000

# The dependency graph below a job, walked through the dependency table alone (one index lookup per
# step); the jobs' states are checked when they are canceled.
DOOMED_SQL = """
WITH RECURSIVE doomed(id, cause) AS (
    SELECT job_id, depends_on_id FROM kojo_job_dependency WHERE depends_on_id = %(head)s
  UNION
    SELECT dependency.job_id, dependency.depends_on_id
    FROM kojo_job_dependency AS dependency JOIN doomed ON dependency.depends_on_id = doomed.id
)
SELECT id, min(CASE WHEN cause = %(head)s THEN 0 ELSE cause END) FROM doomed GROUP BY id ORDER BY id
"""


INDEX_ONLY = ("enable_hashjoin", "enable_mergejoin", "enable_seqscan", "enable_bitmapscan")


def cancel_dependents(job_id: int, ended: JobState, *, using: str) -> None:
    """A job that ended without success takes the jobs waiting on it down too, and theirs in turn.

    The whole tree is found in one recursive query and canceled in batches of conditional UPDATEs,
    in the ending's transaction: no recursion in Python, so a chain of any length ends with its head.
    """
    connection = connections[using]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Each step of the walk is an index lookup; planned without fresh statistics (a chain
            # just inserted), PostgreSQL may scan whole tables at every one of 100,000 steps.
            cursor.execute(";".join(f"SET LOCAL {name} = off" for name in INDEX_ONLY))
        cursor.execute(DOOMED_SQL, {"head": job_id})
        doomed = cursor.fetchall()
        if connection.vendor == "postgresql":
            cursor.execute(";".join(f"RESET {name}" for name in INDEX_ONLY))
    for start in range(0, len(doomed), CANCEL_BATCH):
        batch = dict(doomed[start : start + CANCEL_BATCH])
        cancel_batch(batch, job_id, ended, using=using)


def cancel_batch(causes: dict[int, int], head: int, ended: JobState, *, using: str) -> None:
    """Cancel the jobs ``causes`` names (id -> the canceled dependency that dooms it, 0 for ``head``)."""
    waiting = [JobState.WAITING, JobState.HOLD]
    rows = list(
        Job.objects.using(using)
        .select_for_update(of=("self",))
        .filter(pk__in=list(causes), state__in=waiting)
        .values_list("pk", "state", "job_type__type_code", "job_type__auto_delete_interval_duration")
    )
    if not rows:
        return
    now = timezone.now()
    actor = default_actor()
    changes, entries = [], []
    by_retention: dict[str, list[int]] = {}
    for pk, state, type_code, retention in rows:
        by_retention.setdefault(retention, []).append(pk)
        cause = causes[pk]
        reason = f"dependency job {cause or head} ended {JobState.CANCELED if cause else ended}"
        changes.append(change(pk, type_code, state, JobState.CANCELED, "", reason))
        entries.append(
            JobStateChange(
                job_id=pk, from_state=state, to_state=JobState.CANCELED, reason=reason, actor=actor, at=now
            )
        )
    for retention, pks in by_retention.items():
        Job.objects.using(using).filter(pk__in=pks, state__in=waiting).update(
            state=JobState.CANCELED,
            state_changed_at=now,
            finished_at=now,
            delete_after=now + parse_duration(retention),
            shelved=False,
            bucket="",
        )
    JobStateChange.objects.using(using).bulk_create(entries)
    announce(changes, using=using)


def record(
    job_id: int,
    type_code: str,
    from_state: str,
    to_state: str,
    *,
    outcome: str = "",
    reason: str = "",
    actor: str = "",
    attempt: int = 0,
    at: datetime | None = None,
    traceback: str = "",
    announce_to: list[dict[str, Any]] | None = None,
    wake: bool = False,
    using: str | None = None,
) -> None:
    """Append a changelog row and announce the change once the transaction commits (or add it to
    ``announce_to``, for a caller that announces once its own savepoint is released)."""
    using = using or settings.DATABASE
    JobStateChange.objects.using(using).create(
        job_id=job_id,
        from_state=from_state,
        to_state=to_state,
        outcome=outcome,
        reason=reason,
        actor=actor or default_actor(),
        attempt=attempt,
        at=at or timezone.now(),
        traceback=traceback[-TRACEBACK_KEPT:],
    )
    changed = change(job_id, type_code, from_state, to_state, outcome, reason)
    if announce_to is not None:
        announce_to.append(changed)
    else:
        announce([changed], wake=wake, using=using)


def record_created(
    job_ids: list[int], *, type_code: str, reason: str = "scheduled", using: str | None = None
) -> None:
    """Changelog rows for jobs just created waiting, in one INSERT, announced together after commit."""
    using = using or settings.DATABASE
    now = timezone.now()
    actor = default_actor()
    waiting = JobState.WAITING
    JobStateChange.objects.using(using).bulk_create(
        JobStateChange(job_id=job_id, from_state="", to_state=waiting, reason=reason, actor=actor, at=now)
        for job_id in job_ids
    )
    announce([change(job_id, type_code, "", waiting, "", reason) for job_id in job_ids], using=using)


def change(job_id: int, type_code: str, from_state: str, to_state: str, outcome: str = "", reason: str = ""):
    """A state change as signals and messages carry it."""
    return {
        "job_id": job_id,
        "type_code": type_code,
        "from_state": str(from_state),
        "to_state": str(to_state),
        "outcome": str(outcome),
        "reason": reason,
    }


def announce(changes: list[dict[str, Any]], *, wake: bool = False, using: str | None = None) -> None:
    """Once the transaction commits: publish the changes to every node in one round trip, then send
    ``job_state_changed`` (and through it the named signals) for each.

    Changes announced one after another in one transaction are delivered together: a view that
    schedules ten jobs sends one message, not ten. They join the delivery registered last only when
    every savepoint still open now was open when that one was registered: a rollback to any of them
    discards both, as it would have discarded each (savepoints released since cannot be rolled back)."""
    using = using or settings.DATABASE
    if not changes:
        return
    connection = transaction.get_connection(using)
    if connection.in_atomic_block and connection.run_on_commit:
        savepoints, callback, _ = connection.run_on_commit[-1]
        if (
            isinstance(callback, Delivery)
            and not callback.done
            and set(connection.savepoint_ids) <= savepoints
        ):
            callback.changes.extend(changes)
            callback.wake = callback.wake or wake
            return
    transaction.on_commit(Delivery(list(changes), wake), using=using)


class Delivery:
    """An on_commit callback carrying the changes of one transaction (see ``announce``); ``wake``:
    a slot of a limited type may have been freed, so servers should claim now."""

    def __init__(self, changes: list[dict[str, Any]], wake: bool = False):
        self.changes = changes
        self.wake = wake
        self.done = False  # run already (a test's captured callbacks stay listed after they ran)

    def __call__(self) -> None:
        self.done = True
        deliver(self.changes, wake=self.wake)


def deliver(changes: list[dict[str, Any]], *, wake: bool = False) -> None:
    """Runs after the commit: a receiver that raises is logged with its job and stops nothing else
    (not the other receivers, not the server that made the change)."""
    try:
        messaging.publish_changes(changes, wake=wake)
    except Exception:  # publish_changes logs what Redis says; anything else must not reach the caller
        logger.exception("could not publish %s job changes; servers poll meanwhile", len(changes))
    for item in changes:
        for receiver, outcome in job_state_changed.send_robust(sender=Job, **item):
            if isinstance(outcome, Exception):
                log_receiver_error(receiver, outcome, item)


def log_receiver_error(receiver: Any, error: Exception, item: dict[str, Any]) -> None:
    logger.error(
        "job %s: signal receiver %s raised on %s -> %s: %r",
        item["job_id"],
        getattr(receiver, "__qualname__", receiver),
        item["from_state"] or "new",
        item["to_state"],
        error,
        exc_info=error,
        extra={"job_id": item["job_id"]},
    )
