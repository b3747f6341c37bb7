"""What happens besides state changes: a pooled worker starts or stops, a claim postpones a due job.

Each is a Django signal sent in the process where it happens (kojo.signals: ``worker_started``,
``worker_stopped``, ``job_postponed``) and, with the Redis backend, an event that ``kojo.listen(...,
lifecycle=True)`` and ``kojo_events --lifecycle`` hand out on every node: ``{"event":
"job_postponed", "job_id": ..., "type_code": ..., "reason": "rate-limited", ...}``.

A due job a claim passes over is postponed: ``limited`` (its type's limit or one of its buckets is
full), ``not ready`` (a readiness check says no) or ``rate-limited``. Claims look at such a job again
and again, so each process says so at most once a POSTPONED_EVERY seconds per job and reason.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.dispatch import Signal

from kojo import messaging, signals

logger = logging.getLogger(__name__)

LIMITED, NOT_READY, RATE_LIMITED = "limited", "not ready", "rate-limited"
POSTPONED_EVERY = 60.0
# Postponements remembered at most, per process, before the oldest are forgotten.
REMEMBERED = 10_000
last_said: dict[tuple[int, str], float] = {}


def send(signal: Signal, event: str, sender: Any, **fields: Any) -> None:
    """Send ``signal`` (a receiver that raises is logged and stops nothing) and publish the event."""
    for receiver, outcome in signal.send_robust(sender=sender, **fields):
        if isinstance(outcome, Exception):
            logger.error("a %s receiver %r raised: %r", event, receiver, outcome, exc_info=outcome)
    messaging.publish_events([{"event": event, **fields}])


def postponed(jobs: list[tuple[Any, str]], *, sender: Any = None) -> None:
    """Tell of the due jobs a committed claim passed over, each (job, reason), throttled per process:
    one message for all of them."""
    if not jobs:
        return
    now = time.monotonic()
    told = []
    for job, reason in jobs:
        key = (job.pk, reason)
        if now - last_said.get(key, -POSTPONED_EVERY) < POSTPONED_EVERY:
            continue
        last_said[key] = now
        fields = {"job_id": job.pk, "type_code": job.job_type.type_code, "reason": reason}
        for receiver, outcome in signals.job_postponed.send_robust(sender=sender, **fields):
            if isinstance(outcome, Exception):
                logger.error("a job_postponed receiver %r raised: %r", receiver, outcome, exc_info=outcome)
        told.append({"event": "job_postponed", **fields})
    if len(last_said) > REMEMBERED:
        forget(now)
    messaging.publish_events(told)


def forget(now: float) -> None:
    """Drop the postponements said long enough ago to be said again anyway; all, if that is not
    enough (a backlog larger than REMEMBERED kept waiting is told about again)."""
    for key, at in list(last_said.items()):
        if now - at >= POSTPONED_EVERY:
            del last_said[key]
    if len(last_said) > REMEMBERED:
        last_said.clear()
