"""The housekeeper child: cron ticks, recurring jobs, orphan rescue, planner statistics, pruning of
expired jobs.

Every server runs one; the one holding the ``housekeeping`` mutex does the chores and the others stand
by, taking over when the holder dies (its lock is freed at once on the same host, by lease expiry from
elsewhere). Each chore is also safe on many servers at once (conditional updates and unique constraints
decide), so when the lock backend is unreachable every housekeeper simply does the work.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import time

from django.db import DatabaseError, connections

from kojo.conf import settings
from kojo.cron import schedule_due_ticks
from kojo.deadlines import hurry
from kojo.exceptions import LockError
from kojo.keeping import keep_instances
from kojo.locks import Mutex, mutex
from kojo.planner import refresh_statistics
from kojo.pruning import prune_expired, prune_rate_windows
from kojo.recurrence import schedule_due_recurrences
from kojo.redis_errors import Throttled
from kojo.server import exitcodes, lease
from kojo.server.forking import fork_child
from kojo.server.heartbeat import forget_dead_servers, rescue_orphans
from kojo.shelving import bring_back_stranded

logger = logging.getLogger(__name__)
throttled = Throttled(logger)
# Seconds between two looks at whether the job table needs analyzing (the first pass looks at once).
ANALYSIS_EVERY = 10.0


def spawn_housekeeper(*, server_pid: int, host: str) -> int:
    return fork_child(
        server_pid,
        "housekeeper",
        lambda: run_housekeeping(server_pid, actor=f"{host}:{os.getpid()}"),
        own_process_group=False,
        failure_code=exitcodes.BOOT_ERROR,
    )


def run_housekeeping(server_pid: int, *, actor: str) -> None:
    stopping = []
    # The pause between passes ends at once on SIGTERM (a plain sleep would be resumed after the
    # handler): a stopping server waits for its housekeeper, and an idle one must stop at once.
    woken_r, woken_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def stop(signum, frame) -> None:
        stopping.append(signum)
        os.write(woken_w, b"x")

    def pause(seconds: float) -> None:
        select.select([woken_r], [], [], max(0.0, seconds))

    signal.signal(signal.SIGTERM, stop)
    # No chore waits on a job's or a view's locks for long: each statement gives up and is tried again.
    lease.bounded_waits = True
    delay = settings.HOUSEKEEPING_INTERVAL
    last_prune = last_analysis = 0.0
    leadership = Leadership()
    while not stopping and os.getppid() == server_pid:
        started = time.monotonic()
        try:
            leading = leadership.held()
        except Exception:  # a lock store error (Redis read-only after a failover, out of memory...)
            logger.exception("housekeeping: cannot tell who leads; trying again")
            leading = False
        if not leading:
            pause(settings.HOUSEKEEPING_INTERVAL)
            continue
        chores = [
            lambda: schedule_due_ticks(actor=actor),
            lambda: schedule_due_recurrences(actor=actor),
            lambda: keep_instances(actor=actor),
            hurry,
            lambda: rescue_orphans(actor=actor),
            bring_back_stranded,
        ]
        if started - last_prune > 30 * settings.HOUSEKEEPING_INTERVAL:
            chores += [prune_expired, prune_rate_windows, forget_dead_servers]
            last_prune = started
        if started - last_analysis > ANALYSIS_EVERY:
            last_analysis = started
            chores.append(refresh_statistics)
        unavailable = [error for chore in chores if (error := do_chore(chore)) is not None]
        if unavailable and len(unavailable) == len(chores):
            logger.warning(
                "housekeeping: database unavailable (%s), retrying in %.1f s", unavailable[0], delay
            )
            delay = min(delay * 2, 10.0)
        else:
            delay = settings.HOUSEKEEPING_INTERVAL
        pause(delay - (time.monotonic() - started))
    leadership.resign()


def do_chore(chore) -> str | None:
    """Run one chore; one that fails (the database away, a lock it gave up on, a type row a hand edit
    broke) must not stop the others. Returns why the database refused, if it did."""
    try:
        chore()
    except DatabaseError as error:
        logger.info("housekeeping: a chore was refused (%s); it runs again next pass", str(error).strip())
        connections.close_all()
        return str(error).strip()
    except Exception:
        logger.exception("housekeeping chore failed")
    return None


class Leadership:
    """The fleet-wide housekeeping role, held as a mutex for as long as this housekeeper lives."""

    LOCK_NAME = "housekeeping"

    def __init__(self) -> None:
        self.lock: Mutex | None = None

    def held(self) -> bool:
        if self.lock is not None and self.lock.held:
            return True
        if self.lock is not None and self.lock.lost:
            logger.warning("housekeeping leadership lost; trying to take it again")
        self.lock = mutex(self.LOCK_NAME)
        try:
            taken = self.lock.acquire(blocking=False)
        except LockError as error:
            # Every chore is safe on several servers at once; leadership only saves work.
            said = "housekeeping without leadership: lock backend unavailable: %s"
            throttled.warning("leadership", said, error)
            self.lock = None
            return True
        if taken:
            logger.info("this housekeeper leads the fleet's housekeeping")
        return taken

    def resign(self) -> None:
        if self.lock is not None and self.lock.held:
            try:
                self.lock.release()
            except LockError:
                pass  # lost or unreachable: the lease ends it anyway
