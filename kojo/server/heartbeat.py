"""Who is alive, asked in the database: server rows with heartbeats, and rescue of the jobs of the dead.

A server's heartbeat is the lease on every job it runs. The arbiter renews only its own server row,
which no job code touches, so a job holding locks on its own row cannot hold up the renewal; it is
written and judged with the database's clock, so no node's clock matters. A working job is stale when
neither its server's row nor the job's own last sign of life (its claim, its latest progress report)
is younger than ``HEARTBEAT_TIMEOUT``: any server's housekeeper then ends that attempt through the
retry policy, in one conditional statement that checks staleness again as it acts, and moves the
job's fence on so that the run it took over can never write again. The server whose lease lapsed has
stopped that run by then (``kojo.server.lease``).
"""

from __future__ import annotations

import logging
import os
import socket

from django.db.models import Exists, OuterRef, Q

from kojo import clock
from kojo.conf import settings
from kojo.models import Job, Server
from kojo.registry import registry
from kojo.retries import end_attempt
from kojo.server.lease import bounded
from kojo.states import JobState, Outcome

logger = logging.getLogger(__name__)
# Stale jobs rescued per housekeeping pass.
RESCUE_BATCH = 100


def register_server(mode: str, concurrency: int, queues: list[str]) -> Server:
    server = Server.objects.create(
        host=socket.gethostname(),
        pid=os.getpid(),
        mode=mode,
        concurrency=concurrency,
        queues=queues,
        workers=list(registry.worker_paths()),
        started_at=clock.now(),
        heartbeat_at=clock.now(),
    )
    server.refresh_from_db(fields=["started_at", "heartbeat_at"])
    return server


def beat(server: Server, children: list[dict]) -> bool:
    """Renew the server's lease (its row only); False if the row is gone."""
    with bounded():
        renewed = Server.objects.filter(pk=server.pk).update(heartbeat_at=clock.now(), children=children)
    return bool(renewed)


def stale() -> Q:
    """Working jobs that no live server holds, by the database's clock."""
    cutoff = clock.seconds_ago(settings.HEARTBEAT_TIMEOUT)
    live_server = Server.objects.filter(pk=OuterRef("server_id"), heartbeat_at__gte=cutoff)
    return Q(state=JobState.WORKING, heartbeat_at__lt=cutoff) & ~Exists(live_server)


def rescue_orphans(*, actor: str = "") -> int:
    """End the attempt of every stale working job; return how many.

    The list read first only says where to look: each rescue is one conditional statement that
    re-checks staleness, and skips a row some transaction holds locked (tried again next pass).
    """
    rescued = 0
    stale_jobs = Job.objects.select_related("job_type", "server").filter(stale()).order_by("pk")
    for job in stale_jobs[:RESCUE_BATCH]:
        where = str(job.server) if job.server else (job.host or "an unknown server")
        reason = f"orphaned: no heartbeat from {where} for over {settings.HEARTBEAT_TIMEOUT:g} s"
        reason += " (process or server died, or lost its lease)"
        state = end_attempt(
            job, Outcome.ORPHANED, reason, actor=actor, when=stale(), skip_locked=True, revoke=True
        )
        if state is not None:
            rescued += 1
            logger.warning("job %s %s", job.pk, reason, extra={"job_id": job.pk, "action": "rescue_orphan"})
    return rescued


def forget_dead_servers() -> int:
    """Delete rows of servers silent for ten heartbeat timeouts (their jobs were rescued long before)."""
    cutoff = clock.seconds_ago(settings.HEARTBEAT_TIMEOUT * 10)
    # Bounded: unlinking their jobs waits on any job row a transaction holds.
    with bounded():
        count, _ = Server.objects.filter(heartbeat_at__lt=cutoff).delete()
    return count
