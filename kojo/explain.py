"""Why a job is not running: the claim's own rules, asked of one job, first blocker first.

``explain(job)`` goes through what a claim checks, in the order it checks it (kojo.claims): the job's
state, its type switched on, its start time by the database's clock, its dependencies, its type's
limit and rate, the buckets and checks of its readiness criteria, and then whether any live server serves its
queue and can run its worker. Read without locks, so it is a snapshot: the next claim may already
see otherwise. ``manage.py kojo_explain`` prints it, and the job's admin page shows it.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

from django.db.models import Q

from kojo import rates, readiness
from kojo.claims import is_limited
from kojo.clock import database_now
from kojo.conf import settings
from kojo.models import Job, JobDependency, JobStateChange, Server
from kojo.readiness import Buckets, bucket_of, keys_of
from kojo.registry import registry
from kojo.states import JobState

# Working job ids named at most in one line.
NAMED = 10


@dataclasses.dataclass(frozen=True)
class Explanation:
    job_id: int
    state: str
    blockers: list[str]  # first blocker first; empty when nothing keeps it from being claimed
    notes: list[str]  # what else is worth knowing (its place in line, its last change)

    @property
    def runnable(self) -> bool:
        return not self.blockers

    def lines(self) -> list[str]:
        if self.blockers:
            head = [f"job {self.job_id} ({self.state}) is not running: {self.blockers[0]}"]
            head += [f"  then: {blocker}" for blocker in self.blockers[1:]]
        else:
            head = [f"job {self.job_id} ({self.state}): nothing keeps it from being claimed"]
        return head + [f"  {note}" for note in self.notes]


def explain(job_id: int, *, using: str | None = None, run_here: bool = False) -> Explanation:
    """Job.DoesNotExist when there is no such job. ``run_here``: asked for a run in this process now
    (kojo_run), whatever its start time and whichever servers are up, by this process's code."""
    using = using or settings.DATABASE
    job = Job.objects.using(using).select_related("job_type", "server").get(pk=job_id)
    now = database_now(using)
    history = deadline(job, now) + outcomes(job, using)
    if job.state != JobState.WAITING:
        return Explanation(job.pk, job.state, [not_waiting(job, now, using)], history)
    blockers = []
    job_type = job.job_type
    if not job_type.is_enabled:
        blockers.append(f"its type {job_type.type_code!r} is disabled")
    if job.start_after > now and not run_here:
        blockers.append(f"not due until {job.start_after.isoformat()} (in {seconds(job.start_after - now)})")
    blockers += unmet_dependencies(job, using)
    if job.shelved:
        blockers.append(
            f"shelved: its bucket {job.bucket} was full; a job of that bucket ending brings it back"
        )
    blockers += limits(job, using)
    if not run_here:
        blockers += servers(job, now, using)
    elif job_type.worker not in registry.workers:
        blockers.append(f"its worker {job_type.worker!r} is not registered in this process's code")
    if blockers or run_here:
        return Explanation(job.pk, job.state, blockers, history)
    return Explanation(job.pk, job.state, blockers, place_in_line(job, now, using) + history)


def deadline(job: Job, now) -> list[str]:
    if job.finish_by is None:
        return []
    left = job.finish_by - now
    when = f"in {seconds(left)}" if left > timedelta(0) else f"passed {seconds(-left)} ago"
    risk = "; projected to miss it" if job.deadline_at_risk else ""
    return [f"deadline {job.finish_by.isoformat()} ({when}){risk}"]


def outcomes(job: Job, using: str) -> list[str]:
    """How its earlier attempts ended, counted per outcome; nothing for a job that never ran."""
    counts = job.outcome_counts(using)
    if not counts:
        return []
    return ["attempts so far: " + ", ".join(f"{outcome} {n}" for outcome, n in counts.items())]


def seconds(delta: timedelta) -> str:
    return f"{max(0.0, delta.total_seconds()):.1f} s"


def not_waiting(job: Job, now, using: str) -> str:
    if job.state == JobState.WORKING:
        where = str(job.server) if job.server else f"pid {job.pid} on {job.host}"
        since = f" for {seconds(now - job.started_at)}" if job.started_at else ""
        return f"it is working (attempt {job.attempts}) on {where}{since}"
    last = JobStateChange.objects.using(using).filter(job=job).order_by("-id").first()
    why = f": {last.reason}" if last and last.reason else ""
    by = f" by {last.actor}" if last and last.actor else ""
    if job.state == JobState.HOLD:
        return f"it is held{by}{why}; an operator's release makes it waiting again"
    return f"it has finished ({job.get_state_display()}){by}{why}; only a retry makes it waiting again"


def unmet_dependencies(job: Job, using: str) -> list[str]:
    found = []
    dependencies = (
        JobDependency.objects.using(using)
        .filter(job=job)
        .exclude(depends_on__state=JobState.COMPLETE_SUCCESS)
        .values_list("depends_on_id", "depends_on__state")
        .order_by("depends_on_id")
    )
    for depends_on, state in dependencies:
        if state in (JobState.COMPLETE_FAILED, JobState.CANCELED):
            found.append(
                f"dependency {depends_on} is {state}: this job runs only once it is retried and succeeds"
            )
        else:
            found.append(f"dependency {depends_on} is {state}")
    return found


def limits(job: Job, using: str) -> list[str]:
    """The type's own limit, then the first unmet part of its readiness criteria."""
    job_type = job.job_type
    working = Job.objects.using(using).filter(job_type=job_type, state=JobState.WORKING)
    found = []
    limit = 1 if not job_type.can_work_in_parallel else job_type.schedule_limit
    if is_limited(job_type) and limit:
        ids = list(working.order_by("id").values_list("id", flat=True)[: max(limit, NAMED) + 1])
        count = working.count()
        if count >= limit:
            kind = "a singleton" if not job_type.can_work_in_parallel else "at its limit"
            found.append(f"its type {job_type.type_code!r} is {kind}: {count}/{limit} working ({named(ids)})")
    full = rates.next_start(job, database_now(using), using=using)
    if full is not None:
        keys = rates.parse_keys(job_type.rate_key)
        bucket = f" for {', '.join(f'{key}={job.params.get(key)!r}' for key in keys)}" if keys else ""
        found.append(
            f"its type's rate {job_type.rate_limit} is used up{bucket}: {full[0]} started in the last "
            f"{rates.parse_rate(job_type.rate_limit).seconds:g} s; one more may start in {full[1]:.1f} s"
        )
    if job_type.readiness:
        with_params = list(working.values_list("id", "params"))
        buckets = Buckets(job_type.readiness, [params for _, params in with_params])
        unmet = first_unmet(job_type.readiness, job.params, buckets, with_params)
        if unmet:
            found.append(unmet)
    return found


def first_unmet(criterion: Any, params: dict, buckets: Buckets, working: list[tuple[int, dict]]) -> str:
    """Why ``criterion`` does not hold for ``params`` (as readiness.is_ready evaluates it), or ""."""
    if isinstance(criterion, list) or "all" in criterion:
        for item in criterion if isinstance(criterion, list) else criterion["all"]:
            if why := first_unmet(item, params, buckets, working):
                return why
        return ""
    if "any" in criterion:
        reasons = [first_unmet(item, params, buckets, working) for item in criterion["any"]]
        return "" if not all(reasons) else "none of its alternatives holds: " + "; or ".join(reasons)
    if "limit" in criterion:
        keys, limit = keys_of(criterion), criterion["limit"]
        bucket = bucket_of(params, keys)
        count = buckets.counts[keys][bucket]
        if count < limit:
            return ""
        ids = [pk for pk, other in working if bucket_of(other, keys) == bucket]
        where = ", ".join(f"{key}={params.get(key)!r}" for key in keys)
        scope = f"bucket {where}" if keys else "its readiness limit"
        return f"{scope} is at {count}/{limit} working ({named(ids)})"
    name = criterion["check"]
    function = readiness.checks.get(name)
    if function is None:
        return f"readiness check {name} is not registered in this process"
    try:
        ready = function(params)
    except Exception as error:  # the claim treats a raising check as "not ready"; say what it raised
        return f"readiness check {name} raised {type(error).__name__}: {error}"
    return "" if ready else f"readiness check {name} returned {ready!r}"


def named(ids: list[int]) -> str:
    shown = ", ".join(map(str, ids[:NAMED]))
    return f"jobs {shown}{', …' if len(ids) > NAMED else ''}" if ids else "none listed"


def servers(job: Job, now, using: str) -> list[str]:
    """No live server, none serving the job's queue, or none able to run its worker."""
    live = list(
        Server.objects.using(using)
        .filter(heartbeat_at__gt=now - timedelta(seconds=settings.HEARTBEAT_TIMEOUT), stopping=False)
        .exclude(mode=Server.FOREGROUND)  # a kojo_run of one job claims nothing else
    )
    queue = job.effective_queue
    if not live:
        return ["no live server: start `manage.py kojo_server`"]
    serving = [server for server in live if not server.queues or queue in server.queues]
    if not serving:
        return [f"queue {queue!r} is served by no live server (they serve {served(live)})"]
    worker = job.job_type.worker
    # A server of a version that does not list its workers (None) may be able to.
    if not any(server.workers is None or worker in server.workers for server in serving):
        return [
            f"no live server serving queue {queue!r} has its worker {worker!r} (deploy the code that "
            "registers it, then restart the servers or send them SIGHUP)"
        ]
    return []


def served(live: list[Server]) -> str:
    return ", ".join(sorted({queue for server in live for queue in server.queues or []}))


def place_in_line(job: Job, now, using: str) -> list[str]:
    """How many due jobs a claim takes before this one (higher importance, or as important and older)."""
    ahead = (
        Job.objects.using(using)
        .filter(state=JobState.WAITING, shelved=False, start_after__lte=now, job_type__is_enabled=True)
        .filter(Q(queue=job.effective_queue) | Q(queue="", job_type__queue=job.effective_queue))
        .filter(
            Q(importance__gt=job.importance)
            | Q(importance=job.importance, start_after__lt=job.start_after)
            | Q(importance=job.importance, start_after=job.start_after, pk__lt=job.pk)
        )
        .count()
    )
    return [f"{ahead} due job(s) of queue {job.effective_queue!r} come before it in claim order"]
