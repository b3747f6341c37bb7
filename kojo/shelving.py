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

from django.db import transaction

from kojo.models import Job
from kojo.states import JobState

# Jobs brought back into sight at once for one bucket, however much room it has: the rest follow as
# these are claimed.
MOST_AT_ONCE = 1000


def tag(keys: tuple[str, ...], bucket: str) -> str:
    """A short fixed-size name for a bucket, stored on its jobs (params values can be long)."""
    return hashlib.blake2b(json.dumps([list(keys), bucket]).encode(), digest_size=16).hexdigest()


class Shelf:
    """What one claim shelves and brings back, applied at the end of each of its passes."""

    def __init__(self, using: str):
        self.using = using
        self.in_sight: dict[tuple[int, str], int] = defaultdict(int)  # (type id, tag) -> jobs left
        self.to_shelve: dict[tuple[int, str], list[int]] = defaultdict(list)
        self.to_name: dict[str, list[int]] = defaultdict(list)  # tag -> jobs in sight to mark with it
        self.taken: dict[tuple[int, str], int] = defaultdict(int)

    def over_limit(self, job: Job, bucket_tag: str, limit: int) -> bool:
        """``job`` cannot be taken for its full bucket; return whether it is shelved (False: it is one
        of the ``limit`` jobs its bucket keeps in sight, ready to take the slots it frees)."""
        key = (job.job_type_id, bucket_tag)
        if self.in_sight[key] < limit:
            self.in_sight[key] += 1
            if job.bucket != bucket_tag:
                self.to_name[bucket_tag].append(job.pk)
            return False
        self.to_shelve[key].append(job.pk)
        return True

    def took(self, job: Job) -> None:
        if job.bucket:
            self.taken[(job.job_type_id, job.bucket)] += 1

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

    def bring_back(self, room: dict[tuple[int, str], int]) -> None:
        """For each bucket the claim took jobs of, bring back into sight as many shelved jobs as were
        taken plus the bucket's ``room`` left."""
        for (type_id, bucket_tag), taken in self.taken.items():
            count = min(MOST_AT_ONCE, taken + room.get((type_id, bucket_tag), 0))
            bring_back(type_id, bucket_tag, count, using=self.using)


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


def bring_back_stranded(*, using: str = "default") -> int:
    """Housekeeping: for each bucket with shelved jobs and no job of it left in sight (that job was
    canceled, held or deleted, or its type's criteria changed), bring its first shelved job back."""
    stranded = (
        Job.objects.using(using)
        .filter(shelved=True, state=JobState.WAITING)
        .values_list("job_type_id", "bucket")
        .distinct()
        .order_by()
    )
    brought = 0
    for type_id, bucket_tag in list(stranded):
        in_sight = Job.objects.using(using).filter(
            state=JobState.WAITING, shelved=False, job_type_id=type_id, bucket=bucket_tag
        )
        if not in_sight.exists():
            with transaction.atomic(using=using):
                brought += bring_back(type_id, bucket_tag, 1, using=using)
    return brought
