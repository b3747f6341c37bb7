"""Shelving: waiting jobs behind a full bucket leave the claim's sight, so they cannot hide others.

A bucket limit (``limit_to(1, key="customer")``) can leave thousands of one customer's jobs waiting at
the front of the queue. A claim that read past them all each time would cost more with every job
waiting and, reading a bounded window, would never reach another customer's job behind them.

So when a claim, holding the type's row lock, finds jobs it cannot take because a required bucket
limit of theirs is full, it keeps the first of that bucket in sight (as many as the limit, to take
the slots it frees) and *shelves* the others: they stay ``waiting`` (nothing about them changes for
their users) but the claim's partial indexes no longer hold them. Each claim then reads at most a
limit's worth of jobs per full bucket before the jobs it can take.

Whenever a claim takes a job of a bucket with shelved jobs, it brings as many back into sight as it
took plus the room the bucket has left, first in claim order: the bucket's queue moves on in its order
and always keeps a job in sight. Both happen under the type's row lock, so no claim sees a bucket
half-shelved. Should the jobs left in sight go some other way (canceled, put on hold, deleted, its
type's criteria edited), housekeeping brings the next one back (``bring_back_stranded``).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from typing import Any

from django.db import transaction

from kojo.conf import settings
from kojo.models import Job, JobType
from kojo.readiness import Buckets, bucket_of, keys_of, required_limits
from kojo.states import JobState

# Jobs brought back into sight at once for one bucket, however much room it has: the rest follow as
# these are claimed.
MOST_AT_ONCE = 1000


def keys_id(keys: tuple[str, ...]) -> str:
    """The first 8 characters of the tags of every bucket of one limit (its params keys)."""
    return hashlib.blake2b(json.dumps(list(keys)).encode(), digest_size=4).hexdigest()


def tag(keys: tuple[str, ...], bucket: str) -> str:
    """A short fixed-size name for a bucket, stored on its jobs (params values can be long): which
    limit it belongs to, then which bucket of it."""
    which = hashlib.blake2b(json.dumps([list(keys), bucket]).encode(), digest_size=12)
    return keys_id(keys) + which.hexdigest()


def room(buckets: Buckets | None, params: dict[str, Any], bucket_tag: str) -> int | None:
    """Jobs the bucket ``bucket_tag`` (the bucket of ``params``) can still take; None when no limit of
    the type's criteria has that tag any more (edited since): then nothing keeps its jobs shelved."""
    if buckets is None:
        return None
    for limit in required_limits(buckets.criterion):
        keys = keys_of(limit)
        if keys and tag(keys, bucket := bucket_of(params, keys)) == bucket_tag:
            return buckets.room(keys, bucket)
    return None


class Shelf:
    """What one claim shelves and brings back: shelving is applied at the end of each of its passes,
    bringing back at its end."""

    def __init__(self, using: str):
        self.using = using
        self.in_sight: dict[tuple[int, str], int] = defaultdict(int)  # (type id, tag) -> jobs left
        self.to_shelve: dict[tuple[int, str], list[int]] = defaultdict(list)
        self.to_name: dict[str, list[int]] = defaultdict(list)  # tag -> jobs in sight to mark with it
        self.taken: dict[tuple[int, str], int] = defaultdict(int)
        self.wanted: dict[tuple[int, str], int] = defaultdict(int)  # jobs to bring back whatever was taken
        self.sample: dict[tuple[int, str], tuple[Buckets | None, dict[str, Any]]] = {}

    def passed_over(self, job: Job, buckets: Buckets) -> bool:
        """``job`` is not ready; return whether it is shelved.

        It is, behind the ``limit`` jobs its bucket keeps in sight, when a required limit of its
        bucket is full: only a job of that bucket ending can change that. A job in sight for a bucket
        that now has room, but kept waiting by something else (a check, another limit), lets the
        next ones of its bucket come back into sight instead: they may be ready."""
        own = job.bucket
        full = buckets.full_required(job.params)
        if own and (full is None or tag(*full[:2]) != own):
            # Its own bucket has room (or no limit names it any more): the next ones of that bucket
            # come back. If another limit is full for it, it is kept in sight or shelved for that one.
            left = room(buckets, job.params, own)
            key = (job.job_type_id, own)
            self.wanted[key] = max(self.wanted[key], MOST_AT_ONCE if left is None else max(1, left))
        if full is None:
            return False  # kept waiting by a check, or a limit inside "any": never shelved
        keys, bucket, limit = full
        bucket_tag = tag(keys, bucket)
        key = (job.job_type_id, bucket_tag)
        if self.in_sight[key] < limit:
            self.in_sight[key] += 1
            if own != bucket_tag:
                self.to_name[bucket_tag].append(job.pk)
            return False
        self.to_shelve[key].append(job.pk)
        return True

    def took(self, job: Job, buckets: Buckets | None) -> None:
        if job.bucket:
            key = (job.job_type_id, job.bucket)
            self.taken[key] += 1
            self.sample[key] = (buckets, job.params)

    def apply(self) -> None:
        """Shelve and name the jobs chosen so far, in the claim's transaction (its later passes do not
        see them again)."""
        jobs = Job.objects.using(self.using).filter(state=JobState.WAITING)
        for (_, bucket_tag), ids in self.to_shelve.items():
            jobs.filter(pk__in=ids).update(shelved=True, bucket=bucket_tag)
        for bucket_tag, ids in self.to_name.items():
            jobs.filter(pk__in=ids).update(bucket=bucket_tag)
        self.to_shelve.clear()
        self.to_name.clear()

    def bring_back(self) -> None:
        """For each bucket the claim took jobs of, bring back as many as it took plus the room the
        bucket has left (all of them, a thousand at a time, when no limit has that bucket any more);
        and what ``passed_over`` asked for."""
        wanted = dict(self.wanted)
        for key, taken in self.taken.items():
            buckets, params = self.sample[key]
            left = room(buckets, params, key[1])
            wanted[key] = max(wanted.get(key, 0), MOST_AT_ONCE if left is None else taken + left)
        for (type_id, bucket_tag), count in wanted.items():
            bring_back(type_id, bucket_tag, min(count, MOST_AT_ONCE), using=self.using)


def bring_back(type_id: int, bucket_tag: str, count: int, *, using: str) -> int:
    """Bring the first ``count`` shelved jobs of a bucket, in claim order, back into sight (passing
    over rows another transaction holds); return how many."""
    ids = list(
        Job.objects.using(using)
        .filter(shelved=True, state=JobState.WAITING, job_type_id=type_id, bucket=bucket_tag)
        .order_by("-importance", "start_after", "id")
        .select_for_update(skip_locked=True)
        .values_list("pk", flat=True)[:count]
    )
    return Job.objects.using(using).filter(pk__in=ids, shelved=True).update(shelved=False) if ids else 0


def bring_back_stranded(*, using: str | None = None) -> int:
    """Housekeeping: for each bucket with shelved jobs, bring back its first one when no job of it is
    left in sight (that job was canceled, held or deleted), and a thousand of them when no limit of
    its type has that bucket any more (the criteria were edited); return how many came back."""
    using = using or settings.DATABASE
    stranded = (
        Job.objects.using(using)
        .filter(shelved=True, state=JobState.WAITING)
        .values_list("job_type_id", "bucket")
        .distinct()
        .order_by()
    )
    criteria = dict(JobType.objects.using(using).values_list("pk", "readiness"))
    brought = 0
    for type_id, bucket_tag in list(stranded):
        limits = [keys_of(limit) for limit in required_limits(criteria.get(type_id))]
        if bucket_tag[:8] not in {keys_id(keys) for keys in limits if keys}:
            count = MOST_AT_ONCE
        elif Job.objects.using(using).filter(
            state=JobState.WAITING, shelved=False, job_type_id=type_id, bucket=bucket_tag
        ).exists():
            continue
        else:
            count = 1
        with transaction.atomic(using=using):
            brought += bring_back(type_id, bucket_tag, count, using=using)
    return brought
