"""The housekeeper child: cron ticks, orphan rescue, pruning of expired jobs.

Every server runs one. Each chore is safe to run on many servers at once (conditional updates and
unique constraints decide), so the fleet needs no leader; the housekeeping mutex, when the lock backend
is reachable, only saves duplicate work.
"""

from __future__ import annotations

import logging
import os
import signal
import time

from django.db import DatabaseError, connections

from kojo.conf import settings
from kojo.cron import schedule_due_ticks
from kojo.pruning import prune_expired
from kojo.server import exitcodes
from kojo.server.forking import fork_child
from kojo.server.heartbeat import forget_dead_servers, rescue_orphans

logger = logging.getLogger(__name__)


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
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    delay = settings.HOUSEKEEPING_INTERVAL
    last_prune = 0.0
    while not stopping and os.getppid() == server_pid:
        started = time.monotonic()
        try:
            schedule_due_ticks(actor=actor)
            rescue_orphans(actor=actor)
            if started - last_prune > 30 * settings.HOUSEKEEPING_INTERVAL:
                prune_expired()
                forget_dead_servers()
                last_prune = started
            delay = settings.HOUSEKEEPING_INTERVAL
        except DatabaseError as error:
            logger.warning(
                "housekeeping: database unavailable (%s), retrying in %.1f s", str(error).strip(), delay
            )
            connections.close_all()
            delay = min(delay * 2, 10.0)
        except Exception:
            # One bad chore (say, a type whose row a hand edit broke) must not stop the others.
            logger.exception("housekeeping pass failed")
        time.sleep(max(0.0, delay - (time.monotonic() - started)))
