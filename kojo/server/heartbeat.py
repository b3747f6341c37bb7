"""Who is alive, asked in the database: server rows with heartbeats, and rescue of the jobs of the dead.

The arbiter renews its server row and the ``heartbeat_at`` of every job it runs in one pass; a job's
progress reports renew it too. A working job whose heartbeat is older than ``HEARTBEAT_TIMEOUT`` has
lost its server (SIGKILL, power loss): any server's housekeeper ends that attempt through the retry
policy. A live job is never rescued because its arbiter keeps renewing it.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from kojo.conf import settings
from kojo.models import Job, Server
from kojo.retries import end_attempt
from kojo.states import JobState, Outcome

logger = logging.getLogger(__name__)


def register_server(mode: str, concurrency: int, queues: list[str]) -> Server:
    return Server.objects.create(
        host=socket.gethostname(), pid=os.getpid(), mode=mode, concurrency=concurrency, queues=queues
    )


def beat(server: Server, children: list[dict], finished: list[int] | tuple = ()) -> bool:
    """Renew the server's row and the jobs its live children run; False if the row is gone.

    Only jobs with a live process here are renewed (running, or claimed ahead by a live worker), and
    the ``finished`` ones whose reported success this server has yet to record: a job whose process died
    while its ending could not be recorded goes stale and is rescued like any orphan.
    """
    now = timezone.now()
    alive = Server.objects.filter(pk=server.pk).update(heartbeat_at=now, children=children)
    running = [child["job_id"] for child in children if child.get("job_id") is not None]
    running += finished
    # A live pooled worker also holds the jobs it claimed ahead (its pid is on them), unstarted yet.
    workers = [child["pid"] for child in children if child.get("kind") == "worker"]
    held = Q(pk__in=running) | Q(server_id=server.pk, pid__in=workers)
    if running or workers:
        Job.objects.filter(held, state=JobState.WORKING).update(heartbeat_at=now)
    return bool(alive)


def rescue_orphans(*, actor: str = "") -> int:
    """End the attempt of every working job whose heartbeat went stale; return how many."""
    deadline = timezone.now() - timedelta(seconds=settings.HEARTBEAT_TIMEOUT)
    rescued = 0
    stale = Job.objects.select_related("job_type", "server").filter(
        state=JobState.WORKING, heartbeat_at__lt=deadline
    )
    for job in stale[:100]:
        where = str(job.server) if job.server else (job.host or "an unknown server")
        age = (timezone.now() - job.heartbeat_at).total_seconds()
        reason = f"orphaned: no heartbeat from {where} for {age:.1f} s (process or server died)"
        if end_attempt(job, Outcome.ORPHANED, reason, actor=actor) is not None:
            rescued += 1
            logger.warning("job %s %s", job.pk, reason, extra={"job_id": job.pk, "action": "rescue_orphan"})
    return rescued


def forget_dead_servers() -> int:
    """Delete rows of servers silent for ten heartbeat timeouts (their jobs were rescued long before)."""
    deadline = timezone.now() - timedelta(seconds=settings.HEARTBEAT_TIMEOUT * 10)
    count, _ = Server.objects.filter(heartbeat_at__lt=deadline).delete()
    return count
