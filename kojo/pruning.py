"""Deleting finished jobs once their type's retention (``auto_delete_interval_duration``) has passed,
and rate windows no job has entered for long."""

from __future__ import annotations

import logging

from django.db import transaction

from kojo import clock, rates
from kojo.conf import settings
from kojo.models import Job

logger = logging.getLogger(__name__)


def prune_expired(max_batches: int = 10) -> int:
    """Delete expired jobs in index-backed batches (so one pass never locks the table for long).

    Each batch locks its rows under the retention condition before deleting them, skipping rows
    another transaction holds: a job an operator is retrying right now is not expired by the time
    it is deleted, and is left alone (its retry commits, or the next pass finds it still expired).
    """
    deleted = 0
    for _ in range(max_batches):
        with transaction.atomic(using=settings.DATABASE):
            ids = list(
                Job.objects.select_for_update(skip_locked=True)
                .filter(delete_after__lte=clock.now())
                .order_by("delete_after")
                .values_list("pk", flat=True)[: settings.PRUNE_BATCH_SIZE]
            )
            if ids:
                Job.objects.filter(pk__in=ids).delete()
        deleted += len(ids)
        if len(ids) < settings.PRUNE_BATCH_SIZE:
            break
    if deleted:
        logger.info("pruned %s finished jobs", deleted)
    return deleted


def prune_rate_windows() -> int:
    deleted = rates.prune_stale(using=settings.DATABASE)
    if deleted:
        logger.info("pruned %s stale rate windows", deleted)
    return deleted
