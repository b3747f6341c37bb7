"""Same-host locks on flock(2), for the one-machine try-out (SQLite, no Redis).

A lock of limit N is N slot files, ``<name>.0.slot`` .. ``<name>.<N-1>.slot`` under KOJO_LOCK_DIR; a
hold is an exclusive flock on one of them. The kernel drops a flock when its holder dies, so a dead
holder frees its slot instantly and there is no lease to expire or renew (``Hold.expires`` is None).
The holder writes its owner, token and start time into the slot file it locked, for holders(); the
fencing token comes from a ``<name>.token`` counter file updated under its own flock.

flock belongs to an open file description, not to a process: every acquire opens the slot file anew
so two holds in one process contend like two processes, and a forked child closes the descriptors it
inherited (they would otherwise keep its parent's locks alive after the parent died).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from kojo.exceptions import LockNotOwned
from kojo.locks.base import Hold, Owner, ensure_owned_here

logger = logging.getLogger(__name__)

# Every descriptor that carries a hold in this process, whatever backend instance took it.
_hold_fds: set[int] = set()


def default_lock_dir() -> Path:
    return Path(tempfile.gettempdir()) / "kojo-locks"


class LocalBackend:
    """Holds as flocks on slot files in one directory."""

    renews_leases = False

    def __init__(self, directory: str | os.PathLike[str] | None = None):
        self.directory = Path(directory) if directory else default_lock_dir()
        self._fds: dict[tuple[str, int], int] = {}  # (name, token) -> descriptor carrying the flock
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"<LocalBackend directory={str(self.directory)!r}>"

    def _stem(self, name: str) -> Path:
        # Readable yet collision-free: a sanitised prefix plus a digest of the exact name.
        readable = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:60]
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        return self.directory / f"{readable}.{digest}"

    def acquire(self, name: str, limit: int, owner: Owner, lease: float) -> Hold | None:
        stem = self._stem(name)
        for slot in range(limit):
            fd = self._open(f"{stem}.{slot}.slot")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            except BaseException:
                os.close(fd)
                raise
            try:
                hold = Hold(name, limit, owner, self._next_token(stem), datetime.now(UTC), None)
                record = json.dumps(
                    {
                        "name": name,
                        "limit": limit,
                        "owner": owner.as_dict(),
                        "token": hold.token,
                        "since": hold.since.timestamp(),
                        "slot": slot,
                    }
                ).encode()
                os.pwrite(fd, record, 0)
                if os.fstat(fd).st_size > len(record):  # left over by a holder that was killed
                    os.ftruncate(fd, len(record))
            except BaseException:
                os.close(fd)
                raise
            self._holds_of_this_process()[(name, hold.token)] = fd
            _hold_fds.add(fd)
            return hold
        return None

    def _open(self, path: str) -> int:
        # O_CLOEXEC: a program started with exec must not inherit (and so prolong) a hold.
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except FileNotFoundError:
            self.directory.mkdir(parents=True, exist_ok=True)
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)

    def _next_token(self, stem: Path) -> int:
        fd = self._open(f"{stem}.token")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held for a read and a write: microseconds
            text = os.pread(fd, 32, 0).strip()
            # Seeded from the clock in microseconds, so tokens keep increasing if the file is lost.
            token = int(text) + 1 if text.isdigit() else time.time_ns() // 1000
            os.pwrite(fd, b"%020d" % token, 0)  # fixed width: no truncation needed
            return token
        finally:
            os.close(fd)  # also drops the flock

    def _holds_of_this_process(self) -> dict[tuple[str, int], int]:
        if self._pid != os.getpid():  # a forked child: the descriptors were closed at the fork
            self._fds, self._pid = {}, os.getpid()
        return self._fds

    def _owned_fd(self, hold: Hold) -> int:
        ensure_owned_here(hold)
        fd = self._holds_of_this_process().get((hold.name, hold.token))
        if fd is None:
            raise LockNotOwned(f"lock {hold.name!r} token {hold.token} is not held by this process")
        return fd

    def release(self, hold: Hold) -> None:
        fd = self._owned_fd(hold)
        del self._fds[(hold.name, hold.token)]
        _hold_fds.discard(fd)
        try:
            os.ftruncate(fd, 0)  # forget the owner before unlocking, never after: the next holder writes
        finally:
            os.close(fd)

    def renew(self, hold: Hold, lease: float) -> Hold:
        self._owned_fd(hold)  # nothing expires here: renewing only confirms ownership
        return hold

    def reclaim_dead(self, name: str) -> int:
        return 0  # the kernel released the flocks of dead holders already

    def holders(self, name: str | None = None) -> list[Hold]:
        pattern = f"{self._stem(name).name}.*.slot" if name is not None else "*.slot"
        holds = []
        for path in self.directory.glob(pattern):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                with open(path, "rb") as slot_file:
                    record = json.loads(slot_file.read() or b"null")
                if record is None:
                    continue
                owner = Owner.from_dict(record["owner"])
                # A holder killed before it could clear its record left it behind; its flock is gone.
                if owner.is_dead_here():
                    continue
                since = datetime.fromtimestamp(record["since"], tz=UTC)
                holds.append(Hold(record["name"], record["limit"], owner, record["token"], since, None))
        return sorted(holds, key=lambda hold: (hold.name, hold.token))


def _after_fork_in_child() -> None:
    # Close the parent's hold descriptors without unlocking them: the flocks stay the parent's.
    for fd in _hold_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    _hold_fds.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
