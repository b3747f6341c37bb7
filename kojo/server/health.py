"""A server's own health, kept fresh in a small file for probes on its machine.

The arbiter rewrites ``server-<machine>-<pid>.json`` under KOJO_STATUS_DIR about once a second, whatever the
database and Redis do: a file that stops changing means the arbiter's loop is stuck, which a
supervisor (systemd, a Kubernetes liveness probe running ``manage.py kojo_status --server self``)
should cure by a restart. What the server cannot reach is written in it too, so the probe reports a
degraded server as degraded: restarting it would not bring the database back.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from kojo.conf import settings
from kojo.locks.base import machine_identity, process_start_time

# Seconds between two writes of the file.
EVERY = 1.0


def directory() -> Path:
    return Path(settings.STATUS_DIR or Path(tempfile.gettempdir()) / "kojo-status")


def stale_after() -> float:
    """Seconds after which a file that was not rewritten means a stuck loop: a few of the loop's
    longest waits (a poll, a heartbeat, a statement that gives up)."""
    from kojo.server.lease import wait_bound

    return 3 * max(EVERY, settings.POLL_INTERVAL, settings.HEARTBEAT_INTERVAL, wait_bound())


def file_name(pid: int) -> str:
    """Per machine and pid: containers sharing the directory may each run their server as pid 1."""
    machine = hashlib.blake2b(machine_identity().encode(), digest_size=4).hexdigest()
    return f"server-{machine}-{pid}.json"


class HealthFile:
    def __init__(self, pid: int):
        self.path = directory() / file_name(pid)
        self.pid = pid
        self.started = process_start_time(pid) or 0
        self.written_at = 0.0

    def update(self, **state: Any) -> None:
        """Write ``state`` (what is unavailable, what runs) if the last write is a second old."""
        now = time.monotonic()
        if now - self.written_at < EVERY:
            return
        self.written_at = now
        record = {"pid": self.pid, "started": self.started, "machine": machine_identity(), "at": time.time()}
        record.update(state)
        with contextlib.suppress(OSError):  # a full or read-only disk must not stop the server
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text(json.dumps(record))
            os.replace(temporary, self.path)

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()


def servers_here(pid: int | None = None) -> list[dict[str, Any]]:
    """The health records of the live servers on this machine (of ``pid`` only, when given)."""
    found = []
    for path in sorted(directory().glob("server-*.json")):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            record = json.loads(path.read_text())
            if record["machine"] != machine_identity() or (pid is not None and record["pid"] != pid):
                continue
            if process_start_time(record["pid"]) not in (record["started"], 0):
                continue  # killed before it could remove its file (its pid gone, or another's now)
            record["age"] = max(0.0, time.time() - record["at"])
            found.append(record)
    return found
