"""Deleting finished jobs once their type's retention (``auto_delete_interval_duration``) has passed."""

from __future__ import annotations

import logging

from django.utils import timezone

from kojo.conf import settings
from kojo.models import Job

logger = logging.getLogger(__name__)


def prune_expired(max_batches: int = 10) -> int:
    """Delete expired jobs in index-backed batches (so one pass never locks the table for long)."""
    deleted = 0
    for _ in range(max_batches):
        ids = list(
            Job.objects.filter(delete_after__lte=timezone.now())
            .order_by("delete_after")
            .values_list("pk", flat=True)[: settings.PRUNE_BATCH_SIZE]
        )
        if not ids:
            break
        count, _ = Job.objects.filter(pk__in=ids, delete_after__lte=timezone.now()).delete()
        deleted += len(ids) if count else 0
        if len(ids) < settings.PRUNE_BATCH_SIZE:
            break
    if deleted:
        logger.info("pruned %s finished jobs", deleted)
    return deleted
