"""The public scheduling API: create jobs from views, commands, or inside a running job.

The job row is written on the caller's connection, inside the caller's transaction: if the caller
rolls back, the job never existed. Bad input is refused before anything is written.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connections, transaction
from django.db.models import Field
from django.utils import timezone

from kojo import validators
from kojo.claims import column_names, from_row
from kojo.conf import settings
from kojo.durations import InvalidDuration, parse_duration
from kojo.exceptions import (
    InvalidParams,
    InvalidSchedule,
    JobTypeDisabled,
    JobTypeNotFound,
    WaitingLimitReached,
)
from kojo.models import IMPORTANCE_MAX, IMPORTANCE_MIN, Job, JobDependency, JobType
from kojo.registry import registry
from kojo.states import PENDING, JobState
from kojo.transitions import announce, change, default_actor, record, record_created, transition

logger = logging.getLogger(__name__)

# The largest id a job can have (a 64-bit primary key).
MAX_ID = 2**63 - 1
# A dependency in one of these states will never succeed: a job waiting on it could never run.
ENDED_WITHOUT_SUCCESS = (JobState.COMPLETE_FAILED, JobState.CANCELED)


def schedule(
    type_code: str,
    params: dict[str, Any] | None = None,
    *,
    at: datetime | None = None,
    delay: timedelta | float | str | None = None,
    importance: int | None = None,
    once: bool | str = False,
    once_key: str | None = None,
    max_attempts: int | None = None,
    timeout: str | None = None,
    retry_interval: str | None = None,
    retry_backoff: str | None = None,
    queue: str | None = None,
    finish_by: datetime | timedelta | float | str | None = None,
    depends_on: Iterable[Job | int] = (),
    using: str | None = None,
) -> Job:
    """Schedule a job of ``type_code`` to run now, ``at`` a time, or after ``delay``.

    With ``once=True`` (or an explicit ``once_key``), a job identical to one still pending (same type
    and params, or same key) is not created again: the pending job is returned instead. With
    ``once="replace"``, a pending job of that key whose params or options differ is replaced: it is
    canceled and the new one added in its place, in one transaction (jobs that depended on it depend
    on the new one); an identical one is returned; one already working cannot be replaced
    (InvalidSchedule).
    ``depends_on`` names jobs that must complete successfully first; if one fails or is canceled, this
    job is canceled with the reason recorded. ``max_attempts``, ``timeout`` and ``retry_interval`` (ISO
    8601 durations), ``retry_backoff`` and ``queue`` override the type's for this job: only servers
    serving that queue claim it. ``finish_by`` (a time, or a duration from now) is the job's deadline:
    housekeeping hurries it as it nears (kojo.deadlines).
    """
    using = using or settings.DATABASE
    params = clean_params(params)
    start_after = start_time(at, delay)
    if importance is not None:
        importance = clean_importance(importance)
    clean_max_attempts(max_attempts)
    overrides = clean_overrides(
        timeout=timeout, retry_interval=retry_interval, retry_backoff=retry_backoff, queue=queue
    )
    if finish_by is not None:
        overrides["finish_by"] = deadline(finish_by)
    dependencies = sorted({getattr(item, "pk", item) for item in depends_on})
    if not (once or once_key is not None or dependencies) and connections[using].vendor == "postgresql":
        jobs = schedule_in_one_statement(
            type_code, [params], start_after, importance, max_attempts, overrides, using=using
        )
        if jobs is not None:
            return jobs[0]
    job_type = enabled_job_type(type_code, using=using)
    if importance is None:
        importance = job_type.default_importance
    if once not in (False, True, REPLACE):
        raise InvalidSchedule(f"once takes True, False or {REPLACE!r}, not {once!r}")
    if once_key is None and once:
        once_key = params_key(params)
    if once_key is not None and (
        not isinstance(once_key, str) or not 0 < len(once_key) <= 128 or "\x00" in once_key
    ):
        raise InvalidSchedule("once_key must be text of 1 to 128 characters, without NUL characters")
    fields = {
        "job_type": job_type,
        "params": params,
        "importance": importance,
        "start_after": start_after,
        "max_attempts": max_attempts,
        "once_key": once_key,
        **overrides,
    }
    created: list[dict[str, Any]] = []  # announced once this savepoint is released: see announce()
    with transaction.atomic(using=using):
        if once != REPLACE:  # a replacement counts against the allowance only when it adds a job
            check_allowance(job_type, using=using)
        check_dependencies(dependencies, using=using)
        if once_key is None:
            job = create_job(fields, announce_to=created, using=using)
        elif once == REPLACE:
            job = replace_once(fields, timed=at is not None or delay is not None, using=using)
        else:
            job = create_once(fields, using=using)
        if dependencies and not job.dependencies.exists():
            JobDependency.objects.using(using).bulk_create(
                JobDependency(job=job, depends_on_id=dependency) for dependency in dependencies
            )
    announce(created, using=using)
    return job


# PostgreSQL's common case, jobs of an enabled type without a waiting allowance, as one statement and
# one round trip: the job rows and their changelog rows together (atomic on their own, so no
# savepoint inside the caller's transaction, and no BEGIN and COMMIT outside one). The type is read
# by the same statement, as it is when the jobs are inserted; any other case (no such type, disabled,
# an allowance to count under its lock) inserts nothing here and takes the general path.
SCHEDULE_IN_ONE_STATEMENT = """
WITH job AS (
    INSERT INTO kojo_job ({columns})
    SELECT {values} FROM kojo_job_type AS job_type{given}
    WHERE job_type.type_code = %s AND job_type.is_enabled AND job_type.schedule_limit_allowance = 0
    {order}
    RETURNING *
),
logged AS (
    INSERT INTO kojo_job_state_change (job_id, from_state, to_state, outcome, reason, actor, attempt, at)
    SELECT id, '', %s, '', 'scheduled', %s, 0, created_at FROM job
)
SELECT {job_columns}, {type_columns} FROM job JOIN kojo_job_type AS job_type ON job_type.id = job.job_type_id
ORDER BY job.id
"""
# Columns whose values do not come from a new Job's own, the same for every row.
FROM_THE_TYPE = {"job_type_id": "job_type.id", "importance": "COALESCE(%s, job_type.default_importance)"}
# schedule_many(): one params object per row, in the order given.
GIVEN = ", unnest(%s::jsonb[]) WITH ORDINALITY AS given(params, n)"


@functools.cache
def one_statement_sql(many: bool) -> tuple[str, tuple[Field, ...]]:
    """The statement, and the fields whose values (a new Job's) it takes as parameters, in order."""
    columns, values, taken = [], [], []
    for field in Job._meta.concrete_fields:
        if field.primary_key or (field.has_db_default() and not field.has_default()):
            continue  # the id, and the database's own stamp (created_at)
        expression = FROM_THE_TYPE.get(field.column, "%s")
        if many and field.column == "params":
            expression = "given.params"
        columns.append(f'"{field.column}"')
        values.append(expression)
        if "%s" in expression:
            taken.append(field)
    sql = SCHEDULE_IN_ONE_STATEMENT.format(
        columns=", ".join(columns),
        values=", ".join(values),
        given=GIVEN if many else "",
        order="ORDER BY given.n" if many else "",
        job_columns=column_names(Job, "job"),
        type_columns=column_names(JobType, "job_type"),
    )
    return sql, tuple(taken)


def schedule_in_one_statement(
    type_code: Any,
    params_list: list[dict[str, Any]],
    start_after: datetime,
    importance: int | None,
    max_attempts: int | None,
    overrides: dict[str, Any],
    *,
    many: bool = False,
    using: str,
) -> list[Job] | None:
    """The jobs, or None when the general path must decide (the statement inserted nothing)."""
    if not isinstance(type_code, str) or "\x00" in type_code:
        return None
    connection = connections[using]
    sql, taken = one_statement_sql(many)
    draft = Job(
        params=params_list[0],
        importance=importance,
        start_after=start_after,
        max_attempts=max_attempts,
        **overrides,
    )
    values = [field.get_db_prep_save(getattr(draft, field.attname), connection) for field in taken]
    if many:
        values.append([json.dumps(params) for params in params_list])
    # No savepoint (a round trip each way): inside the caller's transaction a failed statement marks
    # it for rollback, as a failure in an atomic block does, so it can never commit without the job.
    with transaction.mark_for_rollback_on_error(using), connection.cursor() as cursor:
        cursor.execute(sql, [*values, type_code, JobState.WAITING, default_actor()])
        rows = cursor.fetchall()
    if not rows:
        return None
    width = len(Job._meta.concrete_fields)
    job_type = from_row(JobType, rows[0][width:], using)
    jobs = []
    for row in rows:
        job = from_row(Job, row[:width], using)
        job.job_type = job_type
        jobs.append(job)
    announce([change(job.pk, type_code, "", JobState.WAITING, "", "scheduled") for job in jobs], using=using)
    return jobs


def schedule_many(
    type_code: str,
    params_list: Iterable[dict[str, Any] | None],
    *,
    at: datetime | None = None,
    delay: timedelta | float | str | None = None,
    importance: int | None = None,
    max_attempts: int | None = None,
    timeout: str | None = None,
    retry_interval: str | None = None,
    retry_backoff: str | None = None,
    queue: str | None = None,
    finish_by: datetime | timedelta | float | str | None = None,
    using: str | None = None,
) -> list[Job]:
    """Schedule one job of ``type_code`` per params object, in one transaction with one INSERT for the
    jobs and one for their changelog rows: for fan-outs and imports.

    Every params object is checked before anything is written, and one bad object refuses them all.
    For add-once jobs and dependencies, use ``schedule()``.
    """
    using = using or settings.DATABASE
    if isinstance(params_list, (dict, str, bytes)):
        raise InvalidParams("schedule_many takes a list of params objects, one per job")
    cleaned = [clean_params(params) for params in params_list]
    start_after = start_time(at, delay)
    if importance is not None:
        importance = clean_importance(importance)
    clean_max_attempts(max_attempts)
    overrides = clean_overrides(
        timeout=timeout, retry_interval=retry_interval, retry_backoff=retry_backoff, queue=queue
    )
    if finish_by is not None:
        overrides["finish_by"] = deadline(finish_by)
    if not cleaned:
        enabled_job_type(type_code, using=using)  # an unknown or disabled type is refused all the same
        return []
    if connections[using].vendor == "postgresql":
        jobs = schedule_in_one_statement(
            type_code, cleaned, start_after, importance, max_attempts, overrides, many=True, using=using
        )
        if jobs is not None:
            return jobs
    job_type = enabled_job_type(type_code, using=using)
    if importance is None:
        importance = job_type.default_importance
    jobs = [
        Job(
            job_type=job_type,
            params=params,
            importance=importance,
            start_after=start_after,
            max_attempts=max_attempts,
            **overrides,
        )
        for params in cleaned
    ]
    with transaction.atomic(using=using):
        check_allowance(job_type, adding=len(jobs), using=using)
        jobs = Job.objects.using(using).bulk_create(jobs)
        record_created([job.pk for job in jobs], type_code=job_type.type_code, using=using)
    return jobs


def clean_overrides(**values: Any) -> dict[str, Any]:
    """A job's own timeout, retry interval, backoff and queue, checked as the type's are; those given
    only."""
    checks = {
        "timeout": validators.validate_duration,
        "retry_interval": validators.validate_duration,
        "retry_backoff": validators.validate_backoff,
        "queue": validators.validate_queue,
    }
    given = {name: value for name, value in values.items() if value is not None}
    for name, value in given.items():
        longest = Job._meta.get_field(name).max_length
        if not isinstance(value, str) or len(value) > longest:
            what = "a queue name" if name == "queue" else "an ISO 8601 duration, or a backoff name"
            raise InvalidSchedule(
                f"{name} takes text of at most {longest} characters ({what}), not {value!r}"
            )
        try:
            checks[name](value)
        except ValidationError as error:
            raise InvalidSchedule(f"{name}: {'; '.join(error.messages)}") from None
    return given


def clean_max_attempts(max_attempts: Any) -> None:
    if max_attempts is not None and (
        not isinstance(max_attempts, int) or isinstance(max_attempts, bool) or not 1 <= max_attempts <= 1000
    ):
        raise InvalidSchedule(f"max_attempts must be a whole number from 1 to 1000, not {max_attempts!r}")


def check_dependencies(ids: list[int], *, using: str) -> None:
    """Dependencies must exist and must not have failed already (the job could never run)."""
    if any(not isinstance(pk, int) or isinstance(pk, bool) for pk in ids):
        raise InvalidSchedule(f"depends_on takes jobs or job ids, not {ids!r}")
    # An id beyond 64 bits names no job, and SQLite raises OverflowError rather than finding none.
    storable = [pk for pk in ids if abs(pk) <= MAX_ID]
    states = dependency_states(storable, using=using)
    missing = [pk for pk in ids if pk not in states]
    if missing:
        raise InvalidSchedule(f"depends_on names jobs that do not exist: {missing}")
    doomed = {pk: state for pk, state in states.items() if state in ENDED_WITHOUT_SUCCESS}
    if doomed:
        raise InvalidSchedule(f"depends_on names jobs that already ended without success: {doomed}")


def dependency_states(ids: list[int], *, using: str) -> dict[int, str]:
    """The dependencies' states, share-locked on PostgreSQL until the new job's transaction ends: a
    dependency cannot end meanwhile unseen, so it either ended before (and the new job is refused) or
    ends after the new job's dependency rows are visible (and cancels the new job if it fails). SQLite
    runs one writing transaction at a time, which gives the same order."""
    if connections[using].vendor != "postgresql" or not ids:
        return dict(Job.objects.using(using).filter(pk__in=ids).values_list("pk", "state"))
    with connections[using].cursor() as cursor:
        cursor.execute(
            f"SELECT id, state FROM {Job._meta.db_table} WHERE id = ANY(%s) ORDER BY id FOR SHARE", [ids]
        )
        return dict(cursor.fetchall())


def create_job(
    fields: dict[str, Any],
    *,
    actor: str = "",
    reason: str = "scheduled",
    announce_to: list[dict[str, Any]] | None = None,
    using: str | None = None,
) -> Job:
    using = using or settings.DATABASE
    job = Job.objects.using(using).create(**fields)
    type_code = job.job_type.type_code
    record(
        job.pk,
        type_code,
        "",
        JobState.WAITING,
        reason=reason,
        actor=actor,
        announce_to=announce_to,
        using=using,
    )
    return job


def create_once(fields: dict[str, Any], *, using: str) -> Job:
    """Insert under the add-once unique constraint; on conflict return the pending job that won."""
    for _ in range(3):
        try:
            with transaction.atomic(using=using):
                return create_job(fields, using=using)
        except IntegrityError:
            existing = (
                Job.objects.using(using)
                .filter(job_type=fields["job_type"], once_key=fields["once_key"], state__in=PENDING)
                .first()
            )
            if existing is not None:
                return existing
    raise InvalidSchedule(f"could not schedule add-once job {fields['once_key']!r}: it keeps conflicting")


REPLACE = "replace"
# What a replacing add-once compares: a pending job with all of these the same is the one asked for.
REPLACED_WHEN_CHANGED = ("params", "importance", "max_attempts", "timeout", "retry_interval")
REPLACED_WHEN_CHANGED += ("retry_backoff", "queue", "finish_by")


def replace_once(fields: dict[str, Any], *, timed: bool, using: str) -> Job:
    """``once="replace"``: the pending job of the key, the same one if nothing changed, else canceled
    and replaced. Its start time counts as changed when the caller gave one, or when it is not due yet
    and the caller asked for now. Callers replacing one key take turns (an advisory lock on it), and
    no job row is locked before it is replaced: a working job is never waited for. The new row is
    written without its key first, so that the old one's dependents can move to it before the old one
    is canceled (which would cancel them too); a round whose old job was claimed meanwhile is undone."""
    job_type, key = fields["job_type"], fields["once_key"]
    lock_once_key(job_type, key, using=using)
    for _ in range(3):
        existing = Job.objects.using(using).filter(job_type=job_type, once_key=key, state__in=PENDING).first()
        if existing is None:
            check_allowance(job_type, using=using)  # a job is added: counted as any
            try:
                with transaction.atomic(using=using):
                    return create_job(fields, using=using)
            except IntegrityError:
                continue  # added meanwhile by a plain add-once call: replace that one
        moved = existing.start_after != fields["start_after"] and (
            timed or existing.start_after > fields["start_after"]
        )
        same = all(
            getattr(existing, name) == fields.get(name, Job._meta.get_field(name).get_default())
            for name in REPLACED_WHEN_CHANGED
        )
        if not moved and same:
            return existing
        if existing.state != JobState.WAITING:
            raise InvalidSchedule(
                f"job {existing.pk} with add-once key {key!r} is {existing.state}: it cannot be replaced"
            )
        try:
            with transaction.atomic(using=using):
                job = create_job(
                    {**fields, "once_key": None},
                    reason=f"scheduled to replace job {existing.pk}",
                    using=using,
                )
                JobDependency.objects.using(using).filter(depends_on=existing).update(depends_on=job)
                if not transition(
                    existing.pk,
                    JobState.CANCELED,
                    using=using,
                    expect=[JobState.WAITING],
                    strict=False,
                    reason=f"replaced by job {job.pk} (add-once key {key!r})",
                ):
                    raise ReplacedMeanwhile
                Job.objects.using(using).filter(pk=job.pk).update(once_key=key)
        except ReplacedMeanwhile:
            continue  # claimed or ended since it was read: look again
        job.once_key = key
        return job
    raise InvalidSchedule(f"could not replace add-once job {key!r}: it keeps changing")


class ReplacedMeanwhile(Exception):
    """The job to replace left ``waiting`` between its reading and its cancellation."""


def lock_once_key(job_type: JobType, key: str, *, using: str) -> None:
    """An advisory lock on (type, add-once key) until the transaction ends (PostgreSQL; SQLite runs one
    writer at a time)."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"kojo-once:{job_type.pk}:{key}"]
        )


def enabled_job_type(type_code: str, *, using: str | None = None) -> JobType:
    using = using or settings.DATABASE
    if isinstance(type_code, str) and "\x00" in type_code:
        # No type code holds one (validate_type_code), and PostgreSQL refuses NUL in a query.
        raise JobTypeNotFound(f"no job type has the type code {type_code!r}")
    try:
        job_type = JobType.objects.using(using).get(type_code=type_code)
    except JobType.DoesNotExist:
        if not isinstance(type_code, str) or type_code not in registry.job_types:
            raise JobTypeNotFound(f"no job type has the type code {type_code!r}") from None
        # Declared in code since the last migrate or server start: its row is made now.
        registry.sync(using, only=type_code)
        job_type = JobType.objects.using(using).get(type_code=type_code)
    if not job_type.is_enabled:
        raise JobTypeDisabled(f"job type {type_code!r} is disabled: no new jobs may be scheduled for it")
    return job_type


# High half of the PostgreSQL advisory lock keys kojo takes ("kojo" in ASCII); the low half is the id.
ADVISORY_NAMESPACE = 0x6B6F6A6F << 32


def check_allowance(job_type: JobType, *, adding: int = 1, wait: bool = True, using: str) -> None:
    """Refuse jobs beyond schedule_limit_allowance, race-safe: callers scheduling jobs of one type
    queue on an advisory lock of their own until their transaction ends, and count after taking it.
    Claims never take that lock, so a view's long transaction never holds up a server (on SQLite,
    IMMEDIATE transactions serialise writers anyway). Housekeeping does not wait for it either
    (``wait=False``): AllowanceBusy, and the tick or occurrence is made on a later pass."""
    if job_type.schedule_limit_allowance:
        lock_allowance(job_type, wait=wait, using=using)
        count_against_allowance(job_type, adding=adding, using=using)


def lock_allowance(job_type: JobType, *, wait: bool = True, using: str) -> None:
    """Take the type's allowance lock until the transaction ends (PostgreSQL; a no-op elsewhere).
    Always before any job row lock, as ``schedule()`` does, so no two callers wait in a cycle."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        key = ADVISORY_NAMESPACE | (job_type.pk & 0xFFFFFFFF)
        if wait:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])
        else:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [key])
            if not cursor.fetchone()[0]:
                raise AllowanceBusy(f"another transaction is scheduling jobs of {job_type.type_code!r}")


def count_against_allowance(job_type: JobType, *, adding: int = 1, using: str) -> None:
    """Under the allowance lock: refuse when ``adding`` more waiting jobs would pass it."""
    waiting = Job.objects.using(using).filter(job_type=job_type, state=JobState.WAITING).count()
    if waiting + adding > job_type.schedule_limit_allowance:
        raise WaitingLimitReached(
            f"job type {job_type.type_code!r} already has {waiting} waiting jobs; {adding} more would "
            f"pass its schedule_limit_allowance of {job_type.schedule_limit_allowance}"
        )


class AllowanceBusy(Exception):
    """The waiting allowance of a type is being counted by another transaction right now."""


def clean_params(params: Any) -> dict[str, Any]:
    """Params must be a JSON object that survives a round trip; refuse anything else loudly."""
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise InvalidParams(f"params must be a dict (a JSON object), not {type(params).__name__}")
    try:
        text = json.dumps(params, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError) as error:
        raise InvalidParams(f"params are not JSON: {error}") from None
    keys = non_text_keys(params)
    if keys:
        # json.dumps would turn 1 into "1" silently, and {1: ..., "1": ...} would lose a value.
        raise InvalidParams(f"params keys must be text (JSON object keys are strings), not {keys[0]!r}")
    try:
        size = len(text.encode())
    except UnicodeEncodeError:
        raise InvalidParams("params contain text that is not valid Unicode (a lone surrogate)") from None
    if size > settings.PARAMS_MAX_BYTES:
        raise InvalidParams(
            f"params are {size} bytes of JSON; the limit is {settings.PARAMS_MAX_BYTES} "
            "(KOJO_PARAMS_MAX_BYTES). Store large data elsewhere and pass its key."
        )
    if ESCAPED_NUL.search(text):
        raise InvalidParams("params contain a NUL character, which databases cannot store in JSON")
    return json.loads(text)


# A \u0000 escape in JSON text, but not an escaped backslash followed by "u0000".
ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def non_text_keys(params: dict[str, Any]) -> list[Any]:
    """Object keys that are not strings, anywhere in params (looked for without recursion)."""
    found, pending = [], [params]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            found += [key for key in item if not isinstance(key, str)]
            pending += item.values()
        elif isinstance(item, list | tuple):
            pending += item
    return found


def params_key(params: dict[str, Any]) -> str:
    """The add-once identity of a params object: a digest of its canonical JSON."""
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def clean_importance(importance: Any) -> int:
    if not isinstance(importance, int) or isinstance(importance, bool):
        raise InvalidSchedule(f"importance must be a whole number, not {importance!r}")
    if not IMPORTANCE_MIN <= importance <= IMPORTANCE_MAX:
        raise InvalidSchedule(
            f"importance must be from {IMPORTANCE_MIN} to {IMPORTANCE_MAX}, not {importance}"
        )
    return importance


def deadline(finish_by: datetime | timedelta | float | str) -> datetime:
    """A job's ``finish_by``: an aware time, or a duration from now as ``delay`` takes one."""
    if isinstance(finish_by, datetime):
        if timezone.is_naive(finish_by):
            raise InvalidSchedule("finish_by must be an aware datetime (with a time zone), or a duration")
        return finish_by
    try:
        return start_time(None, finish_by)
    except InvalidSchedule as error:
        raise InvalidSchedule(f"finish_by: {str(error).replace('delay', 'a duration')}") from None


def start_time(at: datetime | None, delay: timedelta | float | str | None) -> datetime:
    now = timezone.now()
    if at is not None and delay is not None:
        raise InvalidSchedule("give either at or delay, not both")
    if at is not None:
        if not isinstance(at, datetime):
            raise InvalidSchedule(f"at must be a datetime, not {type(at).__name__}")
        if timezone.is_naive(at):
            raise InvalidSchedule("at must be an aware datetime (with a time zone); kojo stores times in UTC")
        return at
    if delay is None:
        return now
    if isinstance(delay, str):
        try:
            delay = parse_duration(delay)
        except InvalidDuration as error:
            raise InvalidSchedule(str(error)) from None
    elif isinstance(delay, int | float) and not isinstance(delay, bool):
        try:
            delay = timedelta(seconds=delay)
        except (ValueError, OverflowError):
            raise InvalidSchedule(f"delay {delay!r} is not a usable number of seconds") from None
    if not isinstance(delay, timedelta):
        raise InvalidSchedule(f"delay must be a timedelta, seconds or an ISO 8601 duration, not {delay!r}")
    if delay < timedelta(0):
        raise InvalidSchedule("delay cannot be negative")
    try:
        return now + delay
    except OverflowError:
        raise InvalidSchedule(f"delay {delay} is too long") from None
