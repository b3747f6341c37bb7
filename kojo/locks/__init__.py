"""Mutexes and semaphores that know which process holds them.

``mutex("name")`` and ``semaphore("name", 3)`` work across processes and, with the Redis backend,
across hosts. Each hold records its owner (host, pid, process start time). On Redis it also has a
lease, which a background thread renews at a third of its length while the owner lives; a dead
holder is freed as soon as a process on its host notices, or when its lease runs out. Each hold gets
a fencing token larger than every earlier one for that name: hand it to the resource you protect so
it can refuse a holder that lost its lock without noticing (paused, cut off from Redis).

KOJO_LOCK_BACKEND picks the backend: "redis" (kojo.locks.redis), "postgres" (kojo.locks.postgres) or
"local" (kojo.locks.local).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from types import TracebackType

from django.db import connections

from kojo.conf import settings
from kojo.exceptions import KojoConfigurationError, LockError, LockNotOwned, LockTimeout
from kojo.locks.base import BackendRefused, BackendUnavailable, Hold, LockBackend, Owner
from kojo.locks.local import LocalBackend
from kojo.locks.postgres import PostgresBackend
from kojo.locks.redis import RedisBackend

__all__ = [
    "BackendRefused",
    "BackendUnavailable",
    "Hold",
    "LockBackend",
    "Mutex",
    "Owner",
    "Semaphore",
    "get_backend",
    "holders",
    "mutex",
    "semaphore",
]

logger = logging.getLogger(__name__)

# Seconds between attempts of a blocking acquire: short at first for a quick hand-over, then doubling
# up to a cap so that many waiters do not hammer the backend; a longer cap while it is unreachable.
FIRST_PAUSE = 0.002
MAX_PAUSE = 0.05
MAX_UNREACHABLE_PAUSE = 0.5
# Seconds between renewal attempts while the backend is unreachable and the lease still runs.
RENEW_RETRY = 0.1
# Seconds the lease keeper thread lingers without leases before it exits.
KEEPER_IDLE_EXIT = 5.0

_backends: dict[tuple[str, ...], LockBackend] = {}


def get_backend() -> LockBackend:
    """The backend KOJO_LOCK_BACKEND names: one instance per configuration, rebuilt in a forked child."""
    kind = settings.LOCK_BACKEND
    if kind == "redis":
        key: tuple[str, ...] = (kind, settings.REDIS_CACHE, settings.KEY_PREFIX)
    elif kind == "local":
        key = (kind, settings.LOCK_DIR)
    elif kind == "postgres":
        key = (kind, settings.DATABASE)
        if connections[settings.DATABASE].vendor != "postgresql":
            raise KojoConfigurationError("KOJO_LOCK_BACKEND = 'postgres' needs a PostgreSQL database")
    else:
        raise KojoConfigurationError(
            f"KOJO_LOCK_BACKEND must be 'redis', 'postgres' or 'local', not {kind!r}"
        )
    backend = _backends.get(key)
    if backend is None:
        backends = {"redis": RedisBackend, "local": LocalBackend, "postgres": PostgresBackend}
        backend = _backends[key] = backends[kind](*key[1:])
    return backend


def holders(name: str | None = None) -> list[Hold]:
    """Current holds, of `name` or of every lock: owner host, pid and start time, since, lease end, token."""
    return get_backend().holders(name)


def mutex(name: str, *, lease: float | None = None, timeout: float | None = None) -> Mutex:
    """A lock one process at a time may hold. `timeout` is how long ``with`` waits (None: forever)."""
    return Mutex(name, lease=lease, timeout=timeout)


def semaphore(
    name: str, limit: int, *, lease: float | None = None, timeout: float | None = None
) -> Semaphore:
    """A lock up to `limit` processes may hold at once. `timeout` is how long ``with`` waits."""
    return Semaphore(name, limit, lease=lease, timeout=timeout)


class Semaphore:
    """Up to `limit` concurrent holders of the lock `name`. One object takes at most one slot at a time."""

    def __init__(self, name: str, limit: int, *, lease: float | None = None, timeout: float | None = None):
        if not isinstance(name, str) or not name:
            raise ValueError("a lock name is a non-empty string")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"a lock limit is a positive integer, not {limit!r}")
        if lease is not None and lease <= 0:
            raise ValueError(f"a lease is a positive number of seconds, not {lease!r}")
        self.name = name
        self.limit = limit
        self.timeout = timeout
        self._lease = lease
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._guard = threading.Lock()  # serialises acquire/release/renew with the lease keeper thread
        self._hold: Hold | None = None
        self._backend: LockBackend | None = None
        self._lost = False
        self._lease_seconds = 0.0
        self._lease_deadline = 0.0  # time.monotonic() when the lease ends unless renewed
        self._renew_due = 0.0  # time.monotonic() when the keeper renews next
        self._renew_failures = 0  # in a row, to log the first one loudly and the rest quietly

    def _adopt(self) -> None:
        # A forked child has a copy of this object, but none of its parent's hold (nor a usable guard).
        if self._pid != os.getpid():
            self._reset()

    def __repr__(self) -> str:
        state = f"token={self._hold.token}" if self._hold else "not held"
        if self.lost:
            state += " LOST"
        return f"<{type(self).__name__} {self.name!r} limit={self.limit} {state}>"

    @property
    def lease(self) -> float:
        """Seconds a hold lasts unless renewed (KOJO_LOCK_LEASE unless given)."""
        return float(self._lease if self._lease is not None else settings.LOCK_LEASE)

    @property
    def hold(self) -> Hold | None:
        self._adopt()
        return self._hold

    @property
    def token(self) -> int | None:
        """The fencing token of the current hold; None when not held."""
        hold = self.hold
        return hold.token if hold else None

    @property
    def lost(self) -> bool:
        """True once a hold ended without release(): lease ran out, or the backend forgot it."""
        self._adopt()
        if self._hold is None:
            return False
        leased = self._backend is not None and self._backend.renews_leases
        return self._lost or (leased and time.monotonic() >= self._lease_deadline)

    @property
    def held(self) -> bool:
        return self.hold is not None and not self.lost

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take a slot; unless `blocking` is False, wait up to `timeout` seconds (None: forever).

        Returns whether the slot was taken. Raises BackendUnavailable when the backend could not be
        reached on the last attempt.
        """
        self._adopt()
        if self._hold is not None:
            raise LockError(f"{self!r} is already held; use one object per hold")
        if not blocking and timeout is not None:
            raise ValueError("a non-blocking acquire takes no timeout")
        backend, owner, lease = get_backend(), Owner.current(), self.lease
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        pause, warned = FIRST_PAUSE, False
        while True:
            attempt_started = time.monotonic()
            try:
                hold = backend.acquire(self.name, self.limit, owner, lease)
            except BackendUnavailable as exc:
                now = time.monotonic()
                if not blocking or (deadline is not None and now >= deadline):
                    raise
                if not warned:
                    logger.warning("Lock %s: backend unavailable, retrying until timeout: %s", self.name, exc)
                    warned = True
                hold, cap = None, MAX_UNREACHABLE_PAUSE
                pause = max(pause, RENEW_RETRY)
            else:
                cap = MAX_PAUSE
            if hold is not None:
                self._start_holding(hold, backend, lease, attempt_started)
                return True
            now = time.monotonic()
            if not blocking or (deadline is not None and now >= deadline):
                return False
            nap = pause * random.uniform(0.5, 1.0)  # jitter keeps waiters from waking in lockstep
            time.sleep(nap if deadline is None else min(nap, deadline - now))
            pause = min(pause * 2, cap)

    def _start_holding(self, hold: Hold, backend: LockBackend, lease: float, attempt_started: float) -> None:
        with self._guard:
            self._hold, self._backend, self._lost = hold, backend, False
            self._lease_seconds = lease
            # Counted from before the request, so our idea of the lease end is never later than Redis's.
            self._lease_deadline = attempt_started + lease
            self._renew_due = attempt_started + lease / 3
            if backend.renews_leases:
                _keeper.watch(self)

    def release(self) -> None:
        """Give the slot back. LockNotOwned if this object does not hold it or lost it meanwhile."""
        self._adopt()
        lost = self.lost
        with self._guard:
            hold, backend = self._hold, self._backend
            self._hold, self._backend, self._lost = None, None, False
            _keeper.forget(self)
        if hold is None or backend is None:
            raise LockNotOwned(f"{self!r} is not held by this process")
        if lost:
            raise LockNotOwned(f"lock {self.name!r} (token {hold.token}) was lost before its release")
        try:
            backend.release(hold)
        except (BackendUnavailable, BackendRefused) as exc:
            logger.warning(
                "Lock %s token %s: backend unavailable at release; the hold ends with its lease: %s",
                self.name,
                hold.token,
                exc,
            )

    def renew(self) -> None:
        """Extend the lease now (a background thread does it anyway). LockNotOwned if the hold was lost."""
        self._adopt()
        with self._guard:
            self._renew_locked()

    def _renew_locked(self) -> None:
        hold, backend = self._hold, self._backend
        if hold is None or backend is None:
            raise LockNotOwned(f"{self!r} is not held by this process")
        started = time.monotonic()
        if self._lost or (backend.renews_leases and started >= self._lease_deadline):
            if not self._lost:
                self._lost = True
                logger.error("Lock %s token %s lost: its lease ran out unrenewed", self.name, hold.token)
            raise LockNotOwned(f"lock {self.name!r} (token {hold.token}) was lost: its lease ran out")
        try:
            self._hold = backend.renew(hold, self._lease_seconds)
        except LockNotOwned as exc:
            self._lost = True
            logger.warning("Lock %s token %s lost: %s", self.name, hold.token, exc)
            raise
        self._lease_deadline = started + self._lease_seconds
        self._renew_due = started + self._lease_seconds / 3
        self._renew_failures = 0

    def _renew_for_keeper(self) -> None:
        """Called by the lease keeper thread when a renewal is due."""
        with self._guard:
            if self._pid != os.getpid() or self._hold is None or self._lost:
                _keeper.forget(self)
                return
            if time.monotonic() < self._renew_due:
                return  # renewed explicitly meanwhile
            try:
                self._renew_locked()
            except LockNotOwned:
                _keeper.forget(self)
            except Exception as exc:  # unreachable backend, or a bug: retry soon while the lease runs
                self._renew_due = time.monotonic() + RENEW_RETRY
                self._renew_failures += 1
                # The first failure in a row is said (with its traceback when it is not the backend's
                # own error), the rest quietly: they come ten times a second until the lease ends.
                said = "Lock %s token %s: renewal failed, retrying: %s"
                if self._renew_failures > 1:
                    logger.debug(said, self.name, self._hold.token, exc)
                elif isinstance(exc, BackendUnavailable | BackendRefused):
                    logger.warning(said, self.name, self._hold.token, exc)
                else:
                    logger.exception("Lock %s token %s: renewal failed", self.name, self._hold.token)

    def __enter__(self) -> Semaphore:
        if not self.acquire(timeout=self.timeout):
            raise LockTimeout(f"lock {self.name!r} was not acquired within {self.timeout} s")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.release()
        except LockNotOwned:
            if exc_type is None:
                raise  # the block ran without the lock at the end: the caller must know
            logger.warning("Lock %s was lost in a with-block that raised %s", self.name, exc_type.__name__)


class Mutex(Semaphore):
    """A lock one process at a time may hold: a semaphore of limit 1."""

    def __init__(self, name: str, *, lease: float | None = None, timeout: float | None = None):
        super().__init__(name, 1, lease=lease, timeout=timeout)


class _LeaseKeeper:
    """One daemon thread per process renewing every held lease at a third of its length."""

    def __init__(self) -> None:
        self._locks: set[Semaphore] = set()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, lock: Semaphore) -> None:
        with self._changed:
            self._locks.add(lock)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="kojo-lock-leases", daemon=True)
                self._thread.start()
            self._changed.notify()

    def forget(self, lock: Semaphore) -> None:
        with self._changed:
            self._locks.discard(lock)

    def _run(self) -> None:
        while True:
            with self._changed:
                due = self._wait_for_due()
                if due is None:
                    self._thread = None
                    return
            # Renew outside the condition: renewals take the lock's guard, and holders of a guard
            # call watch()/forget(); the order is always guard, then condition.
            for lock in due:
                lock._renew_for_keeper()

    def _wait_for_due(self) -> list[Semaphore] | None:
        """Sleep until some lease needs renewing; None once idle long enough to exit."""
        idle_until = None
        while True:
            now = time.monotonic()
            if not self._locks:
                idle_until = idle_until or now + KEEPER_IDLE_EXIT
                if now >= idle_until:
                    return None
                self._changed.wait(idle_until - now)
                continue
            idle_until = None
            next_due = min(lock._renew_due for lock in self._locks)
            if next_due <= now:
                return [lock for lock in self._locks if lock._renew_due <= now]
            self._changed.wait(next_due - now)


_keeper = _LeaseKeeper()


def _after_fork_in_child() -> None:
    # The child must not reuse its parent's backends (connections, flock descriptors) nor its keeper,
    # whose thread did not survive the fork and whose condition may have been locked mid-fork.
    global _keeper
    _backends.clear()
    _keeper = _LeaseKeeper()


os.register_at_fork(after_in_child=_after_fork_in_child)
