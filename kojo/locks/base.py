"""What every lock backend offers, and who owns a hold.

A hold belongs to one process on one machine. The process start time is part of that identity
because pids are reused: a hold recorded for (pid 4242, started at tick 9001) is dead once pid 4242 is
gone, is a zombie, or belongs to a process that started at another tick. Only a process that sees the
same pids can tell: one on the same machine, which is the kernel's boot id *and* the PID namespace,
never the host name (containers sharing a host name, or a host network, do not share their pids).
Holds of a machine that cannot be judged here are freed by lease expiry instead.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import socket
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from kojo.exceptions import LockError, LockNotOwned

logger = logging.getLogger(__name__)

_HAVE_PROC = os.path.exists("/proc/self/stat")


class BackendUnavailable(LockError):
    """The lock backend cannot be reached right now."""


class BackendRefused(LockError):
    """The lock backend answers but refuses kojo (credentials, permissions): waiting will not help."""


def process_start_time(pid: int) -> int | None:
    """Start time of live process `pid` in clock ticks after boot (field 22 of /proc/<pid>/stat).

    Returns None when the process does not exist or is a zombie, and 0 when the OS has no /proc
    (then only the pid is compared).
    """
    if not _HAVE_PROC:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # it exists, it just belongs to someone else
        return 0
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            stat = stat_file.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: fields 3 onwards follow the last ")".
    fields = stat[stat.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):  # field 3, state: a killed but unreaped process holds nothing
        return None
    return int(fields[19])


@functools.cache
def machine_identity() -> str:
    """What sets this process's view of pids apart from every other's: the kernel's boot id and the
    PID namespace. Without /proc (no PID namespaces either), the host name."""
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot_id}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return f"host:{socket.gethostname()}"


@dataclasses.dataclass(frozen=True)
class Owner:
    """The process that holds a lock: host name (for people), machine (for judging), pid and process
    start time."""

    host: str
    pid: int
    started: int  # clock ticks after boot; 0 when unknown
    machine: str = ""  # machine_identity() of the owner; empty in holds of older versions

    @classmethod
    def current(cls) -> Owner:
        """This process (recomputed after a fork, since a child is another owner)."""
        global _current_owner
        pid = os.getpid()
        if _current_owner is None or _current_owner.pid != pid:
            _current_owner = cls(socket.gethostname(), pid, process_start_time(pid) or 0, machine_identity())
        return _current_owner

    def is_dead_here(self) -> bool:
        """Whether this process can prove the owner is gone: it ran on this machine (same boot, same
        PID namespace) and its pid is gone or belongs to a later process. An owner elsewhere, or
        recorded without its machine, is never judged: its lease decides."""
        if not self.machine or self.machine != machine_identity():
            return False
        started = process_start_time(self.pid)
        return started is None or bool(self.started and started and started != self.started)

    def as_dict(self) -> dict[str, Any]:
        return {"host": self.host, "pid": self.pid, "started": self.started, "machine": self.machine}

    @functools.cached_property
    def as_json(self) -> str:
        """A canonical JSON form: the Redis scripts compare owners as strings."""
        return json.dumps(self.as_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Owner:
        return cls(str(data["host"]), int(data["pid"]), int(data["started"]), str(data.get("machine", "")))


_current_owner: Owner | None = None


def ensure_owned_here(hold: Hold) -> None:
    """Refuse to touch a hold that another process took (a forked child inherits its parent's holds)."""
    if hold.owner != Owner.current():
        raise LockNotOwned(
            f"lock {hold.name!r} (token {hold.token}) belongs to pid {hold.owner.pid} on {hold.owner.host}, "
            f"not to this process (pid {os.getpid()})"
        )


@dataclasses.dataclass(frozen=True)
class Hold:
    """One granted slot of a lock: who holds it, since when, until when, and its fencing token."""

    name: str
    limit: int
    owner: Owner
    token: int  # fencing token: larger than every token granted before for this name
    since: datetime
    expires: datetime | None  # lease end; None when the hold lasts exactly as long as its process

    @property
    def host(self) -> str:
        return self.owner.host

    @property
    def pid(self) -> int:
        return self.owner.pid


class LockBackend(Protocol):
    """Storage for holds. Every call is a single attempt; waiting and renewal timing live in kojo.locks."""

    renews_leases: bool  # True when holds expire unless their owner renews them

    def acquire(self, name: str, limit: int, owner: Owner, lease: float) -> Hold | None:
        """Take one of `limit` slots of `name` for `owner`, or return None when all are taken."""

    def release(self, hold: Hold) -> None:
        """Give a hold back; LockNotOwned if it is not this process's live hold."""

    def renew(self, hold: Hold, lease: float) -> Hold:
        """Extend a hold's lease by `lease` seconds from now; LockNotOwned if it was lost."""

    def reclaim_dead(self, name: str) -> int:
        """Free the holds of `name` whose owner ran on this host and is gone; return how many."""

    def holders(self, name: str | None = None) -> list[Hold]:
        """Current holds of `name`, or of every lock, for an operator view."""
