"""One job run in the foreground of this process, for a debugger: ``manage.py kojo_run <job id>``.

No fork: ``breakpoint()`` and a debugger attached to the command see the job's own code. The job is
claimed as a server's claim would take it (its type switched on, its dependencies met, its type's
limit and buckets counted under the type's row lock), except that its start time is not waited for.
It runs under a server row of its own kept alive by a thread, so a run paused at a breakpoint is
not taken for a dead one; should that lease lapse anyway (the database away), the process is
stopped, as any run whose lease lapsed is. Its ending is recorded like any run's.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from django.db import DatabaseError, connections, transaction

from kojo.claims import Admission, candidate_query, mark_working, new_token
from kojo.conf import settings
from kojo.exceptions import KojoError
from kojo.explain import explain
from kojo.models import Job, Server
from kojo.registry import registry
from kojo.retries import requeue_interrupted
from kojo.server.execution import run_job
from kojo.server.heartbeat import beat, register_server
from kojo.server.lease import Lease, watch

logger = logging.getLogger(__name__)


class NotRunnable(KojoError):
    """The job cannot be run here now; the message says why."""


def run_in_foreground(job_id: int, *, using: str | None = None) -> Job:
    """Claim job ``job_id``, run it in this process and record its ending; return it as it ended.
    NotRunnable when it cannot be claimed (another server holds it, it is not waiting, its type is
    at its limit...)."""
    using = using or settings.DATABASE
    lease = Lease()
    server = register_server(Server.FOREGROUND, 1, [])
    lease.renewed(time.monotonic())
    stop = threading.Event()
    keeper = threading.Thread(
        target=keep_alive, args=(server, lease, stop), name="kojo-run-heartbeat", daemon=True
    )
    keeper.start()
    watch(lease, whole_group=False)
    host, pid = socket.gethostname(), os.getpid()
    try:
        job = claim_one(job_id, server, host=host, pid=pid, using=using)
        logger.info(
            "job %s (%s): claimed, attempt %s; running it here", job.pk, job.job_type.type_code, job.attempts
        )
        try:
            run_job(job, actor=f"{host}:{pid}", interruptible=True)
        except BaseException:
            # ^C at a breakpoint, a debugger's quit: not the job's failure, its attempt is given back.
            requeue_interrupted(job, "interrupted in kojo_run", actor=f"{host}:{pid}", keep_place=True)
            raise
        return Job.objects.using(using).get(pk=job.pk)
    finally:
        lease.end()
        stop.set()
        keeper.join(timeout=settings.HEARTBEAT_INTERVAL + 1)
        Server.objects.using(using).filter(pk=server.pk).delete()


def claim_one(job_id: int, server: Server, *, host: str, pid: int, using: str) -> Job:
    with transaction.atomic(using=using):
        candidates = candidate_query(using, (), False, registry.worker_paths()).filter(pk=job_id)
        rows = list(candidates)
        admission = Admission(1, using=using)
        if rows:
            admission.consider(rows)
        if not admission.chosen:
            # Said inside the transaction, which rolls back: a bucket's shelving is not written.
            raise NotRunnable(why_not(job_id, using))
        token = new_token()
        (job,) = mark_working(admission, server_id=server.pk, host=host, pid=pid, token=token, using=using)
        admission.shelf.apply()
        admission.shelf.bring_back()  # as a claim does: the next ones of its bucket come into sight
        return job


def why_not(job_id: int, using: str) -> str:
    try:
        explanation = explain(job_id, using=using, run_here=True)
    except Job.DoesNotExist:
        return f"there is no job {job_id}"
    if explanation.blockers:
        return "; ".join(explanation.blockers)
    return "another server is claiming it at this very moment; try again"


def keep_alive(server: Server, lease: Lease, stop: threading.Event) -> None:
    """Renew the run's server row while it runs, on this thread's own connection."""
    try:
        while not stop.wait(settings.HEARTBEAT_INTERVAL):
            sent = time.monotonic()
            try:
                if beat(server, []):
                    lease.renewed(sent)
            except DatabaseError as error:
                logger.warning("kojo_run: heartbeat failed (%s); retrying", error)
                connections.close_all()
    finally:
        connections.close_all()
