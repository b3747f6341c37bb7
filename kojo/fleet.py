"""The fleet at a glance: servers and what their children run, held locks, jobs per type and state,
and the last hour's throughput, failures and scheduling latency.

``snapshot()`` is the one reader behind the admin dashboard, ``manage.py kojo_status`` and the
Prometheus metrics, so all three always agree. Every query returns O(types × states) rows or the rows
of the last hour, through an index: job counts use (job_type, state); jobs finished in the window use
(state, state_changed_at); the changelog's window is found on its primary key (see ``window_start_id``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count
from django.utils import timezone

from kojo.conf import settings
from kojo.locks import BackendRefused, BackendUnavailable, Hold, holders
from kojo.models import Job, JobStateChange, JobType, Server
from kojo.states import TERMINAL, JobState, Outcome

logger = logging.getLogger(__name__)

# How far back throughput, failures and latency look.
WINDOW = timedelta(hours=1)
# Most recent starts of the window whose latency is measured; bounds the rows a busy fleet sends.
LATENCY_SAMPLE = 10_000
# Attempt endings that count as failures. Aborts (an operator's choice) and server stops are not.
FAILURE_OUTCOMES: tuple[str, ...] = (
    Outcome.FAILED,
    Outcome.PANICKED,
    Outcome.CRASHED,
    Outcome.TIMED_OUT,
    Outcome.ORPHANED,
)
STATES: tuple[str, ...] = tuple(JobState.values)


@dataclasses.dataclass(frozen=True)
class Child:
    """One child process of a server, and the job it runs (if any)."""

    pid: int
    kind: str
    job_id: int | None
    type_code: str | None
    job_state: str | None = None
    job_started_at: datetime | None = None
    progress: int | None = None


@dataclasses.dataclass(frozen=True)
class ServerView:
    id: int
    host: str
    pid: int
    mode: str
    concurrency: int
    queues: list[str]
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age: float  # seconds
    alive: bool  # heartbeat younger than HEARTBEAT_TIMEOUT
    stopping: bool
    children: list[Child]
    workers: list[str] | None = None  # the worker paths its code registers; None: a version that does not say

    def can_run(self, worker: str, queue: str) -> bool:
        """Whether this server claims jobs of a type with ``worker`` on ``queue`` (one of a version
        that does not list its workers may)."""
        serves = not self.queues or queue in self.queues
        return serves and (self.workers is None or worker in self.workers)

    @property
    def status(self) -> str:
        if not self.alive:
            return "stale"
        return "stopping" if self.stopping else "live"

    @property
    def busy(self) -> int:
        """Children running a job right now."""
        return sum(1 for child in self.children if child.job_id is not None)


@dataclasses.dataclass(frozen=True)
class Latency:
    """Seconds between a job's start_after and its claim, over the window's most recent starts."""

    samples: int
    p50: float | None
    p95: float | None
    max: float | None

    @classmethod
    def of(cls, values: list[float]) -> Latency:
        if not values:
            return cls(0, None, None, None)
        values = sorted(values)
        return cls(len(values), percentile(values, 50), percentile(values, 95), values[-1])


@dataclasses.dataclass(frozen=True)
class Snapshot:
    taken_at: datetime
    window: timedelta
    servers: list[ServerView]
    locks: list[Hold]  # empty when the backend could not be asked
    locks_error: str  # why the lock backend could not be asked; "" when it answered
    jobs: dict[str, dict[str, int]]  # type_code -> state -> jobs in the database (every state present)
    finished: dict[str, dict[str, int]]  # type_code -> terminal state -> jobs that reached it in the window
    failures: dict[str, dict[str, int]]  # type_code -> outcome -> failed attempts in the window
    latency: Latency
    # type_code -> why no live server claims its waiting jobs (no server for its queue, or none whose
    # code registers its worker: a rolling deploy half done); only types with waiting jobs
    unserved: dict[str, str] = dataclasses.field(default_factory=dict)
    # type_code -> jobs waiting or working that housekeeping projected to miss their deadline
    at_risk: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def live_servers(self) -> list[ServerView]:
        return [server for server in self.servers if server.alive]

    def total(self, state: str) -> int:
        """Jobs in ``state`` across every type."""
        return sum(states.get(state, 0) for states in self.jobs.values())

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form (datetimes in ISO 8601, durations in seconds)."""
        return {
            "taken_at": self.taken_at.isoformat(),
            "window_seconds": self.window.total_seconds(),
            "live_servers": len(self.live_servers),
            "servers": [
                {
                    **_record(server, skip="children"),
                    "status": server.status,
                    "children": [_record(child) for child in server.children],
                }
                for server in self.servers
            ],
            "locks": [
                {
                    "name": hold.name,
                    "limit": hold.limit,
                    "host": hold.host,
                    "pid": hold.pid,
                    "token": hold.token,
                    "since": hold.since.isoformat(),
                    "expires": hold.expires.isoformat() if hold.expires else None,
                }
                for hold in self.locks
            ],
            "locks_error": self.locks_error or None,
            "jobs": self.jobs,
            "finished_last_window": self.finished,
            "failures_last_window": self.failures,
            "scheduling_latency_seconds": dataclasses.asdict(self.latency),
            "unserved_types": self.unserved,
            "deadline_at_risk": self.at_risk,
        }


def _record(view: Any, skip: str = "") -> dict[str, Any]:
    """A dataclass's fields as JSON-ready values, datetimes in ISO 8601."""
    return {
        field.name: (value.isoformat() if isinstance(value, datetime) else value)
        for field in dataclasses.fields(view)
        if field.name != skip
        for value in [getattr(view, field.name)]
    }


def percentile(ordered: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def snapshot(*, now: datetime | None = None, window: timedelta = WINDOW) -> Snapshot:
    """Read the whole fleet view; a lock backend that cannot be reached is reported, not raised."""
    now = now or timezone.now()
    since = now - window
    types = list(JobType.objects.values_list("pk", "type_code", "worker", "queue"))
    type_codes = {pk: code for pk, code, _, _ in types}
    locks, locks_error = lock_holds()
    start_id = window_start_id(since)
    fleet, jobs = servers(now), job_counts(type_codes)
    return Snapshot(
        taken_at=now,
        window=window,
        servers=fleet,
        locks=locks,
        locks_error=locks_error,
        jobs=jobs,
        finished=finished_counts(type_codes, since),
        failures=failure_counts(type_codes, since, start_id),
        latency=scheduling_latency(since, start_id),
        unserved=unserved_types(
            types + own_queues(),
            [server for server in fleet if server.alive and server.mode != Server.FOREGROUND],
            jobs,
        ),
        at_risk=deadline_at_risk(type_codes),
    )


def deadline_at_risk(type_codes: dict[int, str]) -> dict[str, int]:
    """Jobs still to finish that were projected to miss their deadline, per type (kojo.deadlines)."""
    rows = (
        Job.objects.filter(deadline_at_risk=True, state__in=[JobState.WAITING, JobState.WORKING])
        .filter(finish_by__isnull=False)  # the partial index on deadlines still to meet
        .order_by()
        .values_list("job_type_id")
        .annotate(n=Count("pk"))
    )
    return {_code(type_codes, type_id): n for type_id, n in rows}


def own_queues() -> list[tuple[int, str, str, str]]:
    """Each type with waiting jobs given a queue of their own, once per such queue, as ``types`` lists
    them: those jobs are served by the servers of that queue, not of the type's."""
    return list(
        Job.objects.filter(state=JobState.WAITING)
        .exclude(queue="")
        .order_by()
        .values_list("job_type_id", "job_type__type_code", "job_type__worker", "queue")
        .distinct()
    )


def unserved_types(
    types: list[tuple[int, str, str, str]], live: list[ServerView], jobs: dict[str, dict[str, int]]
) -> dict[str, str]:
    """Types with waiting jobs that no live server claims, and why."""
    unserved = {}
    for _, code, worker, queue in types:
        if not jobs.get(code, {}).get(JobState.WAITING) or any(s.can_run(worker, queue) for s in live):
            continue
        if not live:
            unserved[code] = "no live server"
        elif not any(not server.queues or queue in server.queues for server in live):
            unserved[code] = f"no live server serves queue {queue!r}"
        else:
            unserved[code] = f"no live server serving queue {queue!r} registers its worker {worker!r}"
    return unserved


def servers(now: datetime) -> list[ServerView]:
    """Every server row, with its children and the jobs they run (one query for all those jobs)."""
    rows = list(Server.objects.order_by("host", "pid"))
    job_ids = {
        child.get("job_id") for row in rows for child in row.children or [] if child.get("job_id") is not None
    }
    jobs = {
        pk: (state, started_at, progress)
        for pk, state, started_at, progress in Job.objects.filter(pk__in=job_ids).values_list(
            "pk", "state", "started_at", "progress"
        )
    }
    timeout = settings.HEARTBEAT_TIMEOUT
    views = []
    for row in rows:
        children = []
        for child in row.children or []:
            job_id = child.get("job_id")
            state, started_at, progress = jobs.get(job_id, (None, None, None))
            children.append(
                Child(
                    pid=child.get("pid"),
                    kind=child.get("kind", "job"),
                    job_id=job_id,
                    type_code=child.get("type_code"),
                    job_state=state,
                    job_started_at=started_at,
                    progress=progress,
                )
            )
        age = max(0.0, (now - row.heartbeat_at).total_seconds())
        views.append(
            ServerView(
                id=row.pk,
                host=row.host,
                pid=row.pid,
                mode=row.mode,
                concurrency=row.concurrency,
                queues=list(row.queues or []),
                started_at=row.started_at,
                heartbeat_at=row.heartbeat_at,
                heartbeat_age=age,
                alive=age < timeout,
                stopping=row.stopping,
                children=sorted(children, key=lambda child: (child.kind, child.pid or 0)),
                workers=row.workers,
            )
        )
    return views


def lock_holds() -> tuple[list[Hold], str]:
    """Held locks, or an empty list and the reason the backend did not answer."""
    try:
        return holders(), ""
    except (BackendUnavailable, BackendRefused) as exc:
        logger.warning("fleet view: lock backend unavailable: %s", exc)
        return [], str(exc)


def job_counts(type_codes: dict[int, str]) -> dict[str, dict[str, int]]:
    """Jobs per type and state, every state of every type present (zeros included), via (job_type, state)."""
    counts = {code: dict.fromkeys(STATES, 0) for code in sorted(type_codes.values())}
    rows = Job.objects.order_by().values_list("job_type_id", "state").annotate(n=Count("pk"))
    for type_id, state, n in rows:
        counts.setdefault(_code(type_codes, type_id), dict.fromkeys(STATES, 0))[state] = n
    return counts


def finished_counts(type_codes: dict[int, str], since: datetime) -> dict[str, dict[str, int]]:
    """Jobs of each type that reached each terminal state since ``since``, via (state, state_changed_at).

    Jobs pruned within the window (a retention shorter than the window) are no longer counted.
    """
    terminal = [state for state in STATES if state in TERMINAL]
    counts = {code: dict.fromkeys(terminal, 0) for code in sorted(type_codes.values())}
    rows = (
        Job.objects.filter(state__in=terminal, state_changed_at__gte=since)
        .order_by()
        .values_list("job_type_id", "state")
        .annotate(n=Count("pk"))
    )
    for type_id, state, n in rows:
        counts.setdefault(_code(type_codes, type_id), dict.fromkeys(terminal, 0))[state] = n
    return counts


def _code(type_codes: dict[int, str], type_id: int) -> str:
    # A type created after its codes were read: name it by id rather than fail the whole view.
    return type_codes.get(type_id) or f"#{type_id}"


def window_start_id(since: datetime) -> int:
    """The id of the newest changelog row older than ``since``, so that the window is ``id > this``.

    The changelog has no index on ``at``, but ids grow with time: scanning the primary key backwards
    from the newest row stops at the window's edge, reading only the window's rows.
    """
    row = JobStateChange.objects.filter(at__lt=since).order_by("-pk").values_list("pk", flat=True).first()
    return row or 0


def failure_counts(type_codes: dict[int, str], since: datetime, start_id: int) -> dict[str, dict[str, int]]:
    """Attempts of each type that ended in a failure outcome in the window, retried ones included."""
    rows = (
        JobStateChange.objects.filter(pk__gt=start_id, at__gte=since, outcome__in=FAILURE_OUTCOMES)
        .order_by()
        .values_list("job__job_type_id", "outcome")
        .annotate(n=Count("pk"))
    )
    counts: dict[str, dict[str, int]] = {}
    for type_id, outcome, n in rows:
        counts.setdefault(_code(type_codes, type_id), {})[outcome] = n
    return dict(sorted(counts.items()))


def scheduling_latency(since: datetime, start_id: int) -> Latency:
    """How long due jobs waited for a claim, over the window's most recent LATENCY_SAMPLE starts.

    A start counts when it is still the job's latest (its ``started_at`` is the claim's time), so the
    ``start_after`` it is compared with is the one that claim honoured. The wait includes time spent
    behind dependencies, schedule limits and busy servers: all of it is latency to the user.
    """
    # Two queries rather than a join, so each reads through a primary key whatever the planner thinks
    # of the table sizes: the window's claims, newest first, then those claims' jobs.
    claims = (
        JobStateChange.objects.filter(pk__gt=start_id, at__gte=since, to_state=JobState.WORKING)
        .order_by("-pk")
        .values_list("job_id", "at")[:LATENCY_SAMPLE]
    )
    starts: dict[int, datetime] = {}
    for job_id, at in claims:
        starts.setdefault(job_id, at)  # newest first: keep each job's latest claim
    jobs = Job.objects.filter(pk__in=list(starts)).values_list("pk", "started_at", "start_after")
    return Latency.of(
        [
            (started - due).total_seconds()
            for pk, started, due in jobs
            if started == starts[pk] and due is not None and due <= started
        ]
    )
