"""Fleet-wide rate limits: at most N starts of a type, or of one params bucket of it, in any window.

A type's ``rate_limit`` ("60/m", "5/s", "100/PT30S") bounds how many of its jobs start per window
across every server; ``rate_key`` names params keys (comma separated) whose values each get a window
of their own ("customer": 60 a minute per customer). The starts of each bucket are kept, by the
database's clock, in one row of ``kojo_rate_window`` that the claim reads and rewrites under the
type's row lock (kojo.claims locks it, as it does for a schedule limit): two servers can never both
take the last start of a window, and a claim that rolls back takes its starts back with it. A start
counts when its job is claimed, whatever then happens to the run.

A job passed over for its rate waits; it is claimed at the latest one poll interval after its window
has room again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from kojo import redis_errors
from kojo.durations import InvalidDuration, parse_duration

logger = logging.getLogger(__name__)
throttled = redis_errors.Throttled(logger)

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Starts one window may hold (each is kept until it leaves the window), and its longest length.
MAX_PER_WINDOW = 10_000
MAX_WINDOW_SECONDS = 86400
RATE = re.compile(r"^\s*(\d+)\s*/\s*(\S+)\s*$")
# Rows whose newest start left every window this long ago are deleted by housekeeping.
STALE_AFTER = timedelta(seconds=2 * MAX_WINDOW_SECONDS)


class InvalidRate(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Rate:
    count: int
    seconds: float

    def __str__(self) -> str:
        return f"{self.count} per {self.seconds:g} s"


def parse_rate(text: Any) -> Rate:
    """ "60/m" (or /s, /h, /d) or "100/PT30S" (an ISO 8601 window): at most 60 starts in any minute."""
    match = RATE.match(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidRate(
            f"{text!r} is not a rate: write starts per window, such as 60/m, 5/s, 1000/h, 10000/d or "
            "100/PT30S (an ISO 8601 window)"
        )
    count, unit = int(match.group(1)), match.group(2)
    if unit in UNITS:
        seconds = float(UNITS[unit])
    else:
        try:
            seconds = parse_duration(unit).total_seconds()
        except InvalidDuration as error:
            raise InvalidRate(f"{text!r}: its window is not s, m, h, d or a duration ({error})") from None
    if not 1 <= count <= MAX_PER_WINDOW:
        raise InvalidRate(
            f"{text!r}: allow from 1 to {MAX_PER_WINDOW} starts per window (a shorter window allows "
            "more: 100/s rather than 8640000/d)"
        )
    if not 0 < seconds <= MAX_WINDOW_SECONDS:
        raise InvalidRate(f"{text!r}: the window must be longer than 0 s and at most one day")
    return Rate(count, seconds)


def is_valid(job_type) -> bool:
    """Whether a stored type's rate parses; one that does not (written around the admin's checks)
    keeps its jobs waiting, logged, rather than starting them unlimited or failing every claim."""
    try:
        parse_rate(job_type.rate_limit)
    except InvalidRate as error:
        throttled.warning(f"rate {job_type.pk}", "type %s: %s; its jobs wait", job_type.type_code, error)
        return False
    return True


def parse_keys(text: str) -> tuple[str, ...]:
    """ "customer, region" -> ("customer", "region"); "" -> () (one window for the whole type)."""
    return tuple(key.strip() for key in text.split(",") if key.strip()) if text else ()


def bucket_of(params: dict[str, Any], keys: tuple[str, ...]) -> str:
    """The window's key for a job's params: a digest of their values (1 and "1" share one)."""
    if not keys:
        return ""
    values = repr(tuple(str(params.get(key)) if params.get(key) is not None else None for key in keys))
    return hashlib.sha256(values.encode()).hexdigest()[:32]


class Windows:
    """One rate-limited type's recent starts per bucket, read under the type's row lock, then kept up
    to date as the claim chooses more of its jobs; ``save`` writes the buckets that took starts."""

    def __init__(self, job_type, now: datetime, rows: dict[str, list[float]]):
        self.job_type = job_type
        self.rate = parse_rate(job_type.rate_limit)
        self.keys = parse_keys(job_type.rate_key)
        self.now = now.timestamp()
        cutoff = self.now - self.rate.seconds
        self.starts = {bucket: [at for at in starts if at > cutoff] for bucket, starts in rows.items()}
        self.taken: set[str] = set()

    def admits(self, params: dict[str, Any]) -> bool:
        return len(self.starts.get(bucket_of(params, self.keys), ())) < self.rate.count

    def take(self, params: dict[str, Any]) -> None:
        bucket = bucket_of(params, self.keys)
        self.starts.setdefault(bucket, []).append(self.now)
        self.taken.add(bucket)

    def whole_type_full(self) -> bool:
        return not self.keys and not self.admits({})


def read_windows(job_types: list, *, using: str) -> dict[int, Windows]:
    """The windows of ``job_types`` (locked by the caller), by the database's clock: two statements."""
    from kojo.clock import database_now
    from kojo.models import RateWindow

    if not job_types:
        return {}
    now = database_now(using)
    rows: dict[int, dict[str, list[float]]] = {job_type.pk: {} for job_type in job_types}
    windows = RateWindow.objects.using(using).filter(
        job_type_id__in=list(rows), last_start__gt=now - timedelta(seconds=MAX_WINDOW_SECONDS)
    )
    for type_id, bucket, starts in windows.values_list("job_type_id", "bucket", "starts"):
        rows[type_id][bucket] = starts
    return {job_type.pk: Windows(job_type, now, rows[job_type.pk]) for job_type in job_types}


def save_windows(windows: list[Windows], *, using: str) -> None:
    """Write each bucket that took starts: one statement for all of them."""
    from kojo.models import RateWindow

    changed = [
        RateWindow(
            job_type_id=window.job_type.pk,
            bucket=bucket,
            starts=window.starts[bucket],
            last_start=datetime.fromtimestamp(window.now, tz=UTC),
        )
        for window in windows
        for bucket in sorted(window.taken)
    ]
    if changed:
        RateWindow.objects.using(using).bulk_create(
            changed,
            update_conflicts=True,
            unique_fields=["job_type", "bucket"],
            update_fields=["starts", "last_start"],
        )


def next_start(job, now: datetime, *, using: str) -> tuple[int, float] | None:
    """For kojo.explain: (starts in the window, seconds until one more is possible) when the job's
    window is full, else None. Read without the lock: a snapshot."""
    from kojo.models import RateWindow

    job_type = job.job_type
    if not job_type.rate_limit or not is_valid(job_type):
        return None
    rate = parse_rate(job_type.rate_limit)
    row = (
        RateWindow.objects.using(using)
        .filter(job_type=job_type, bucket=bucket_of(job.params, parse_keys(job_type.rate_key)))
        .values_list("starts", flat=True)
        .first()
    )
    recent = sorted(at for at in row or () if at > now.timestamp() - rate.seconds)
    if len(recent) < rate.count:
        return None
    return len(recent), max(0.0, recent[-rate.count] + rate.seconds - now.timestamp())


def prune_stale(*, using: str) -> int:
    """Delete windows no start has entered for two days (buckets of customers long gone), judged by
    the database's clock."""
    from kojo.clock import seconds_ago
    from kojo.models import RateWindow

    stale = RateWindow.objects.using(using).filter(last_start__lt=seconds_ago(STALE_AFTER.total_seconds()))
    deleted, _ = stale.delete()
    return deleted
