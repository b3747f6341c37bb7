"""A server's lease on the jobs it runs, and how this host keeps it honest.

The arbiter renews its server row with the database's clock; any housekeeper rescues the jobs of a
server whose row is older than ``HEARTBEAT_TIMEOUT`` by that same clock. A renewal sent at local
monotonic time ``t`` is stamped no earlier than ``t``, so the server knows its runs are safe from rescue
until ``t + HEARTBEAT_TIMEOUT``. It stops them well before: once the last confirmed renewal is older
than ``guard()``, every job process and pooled worker is killed, by the arbiter and, should the arbiter
itself be paused or stuck, by a watchdog thread in each of those processes reading the lease from
memory shared with the arbiter. A process whose lease lapsed is stopped, never trusted.

The arbiter and the housekeeper never run job code, so their database sessions can bound every wait
(``lock_timeout``, ``statement_timeout``): a job holding its own row lock cannot stall a renewal.
"""

from __future__ import annotations

import contextlib
import logging
import math
import mmap
import os
import signal
import struct
import threading
import time
from collections.abc import Iterator

from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created
from django.dispatch import receiver

from kojo.conf import settings

logger = logging.getLogger(__name__)

LAYOUT = struct.Struct("d")


def guard() -> float:
    """Seconds after a renewal was sent until this server's runs must be stopped: two thirds of the
    rescue deadline, so they are dead before anyone else may take them."""
    return settings.HEARTBEAT_TIMEOUT * 2 / 3


def wait_bound() -> float:
    """Longest the arbiter or housekeeper waits on one statement or lock, in seconds."""
    return max(1.0, settings.HEARTBEAT_TIMEOUT / 5)


class Lease:
    """Until when (local monotonic seconds) this server may run its jobs, in memory its forked
    children share."""

    def __init__(self) -> None:
        self.shared = mmap.mmap(-1, LAYOUT.size)  # anonymous and shared: inherited by every fork
        self.write(0.0)

    def write(self, until: float) -> None:
        self.shared.seek(0)
        self.shared.write(LAYOUT.pack(until))

    @property
    def until(self) -> float:
        return LAYOUT.unpack_from(self.shared, 0)[0]

    def renewed(self, sent_at: float) -> None:
        """A renewal sent at ``sent_at`` was confirmed."""
        self.write(max(self.until, sent_at + guard()))

    def lapsed(self) -> bool:
        return time.monotonic() >= self.until

    def end(self) -> None:
        """Nothing runs under the lease any more: it never lapses (a watchdog has nothing to stop)."""
        self.write(math.inf)

    def remaining(self) -> float:
        return self.until - time.monotonic()


def watch(lease: Lease, *, whole_group: bool = True) -> None:
    """In a job process or pooled worker: a daemon thread that kills this process group (or, for a
    process that shares its group with others, as kojo_run does with its shell, this process) the
    moment the server's lease lapses. It blocks every signal, which stay the main thread's to handle."""

    def run() -> None:
        period = min(0.25, guard() / 8)
        while True:
            time.sleep(period)
            if lease.lapsed():
                # No logging first: a stalled log pipe must not delay the kill. The arbiter says why.
                if whole_group:
                    os.killpg(os.getpgrp(), signal.SIGKILL)
                os.kill(os.getpid(), signal.SIGKILL)

    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        threading.Thread(target=run, name="kojo-lease-watchdog", daemon=True).start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


# Set in the arbiter and the housekeeper, cleared in the children that run job code.
bounded_waits = False


def pooled(connection: BaseDatabaseWrapper) -> bool:
    """Whether ``connection`` goes through a transaction pooler (PgBouncer's transaction mode), which
    Django's ``DISABLE_SERVER_SIDE_CURSORS`` says: its sessions are shared with other clients."""
    shared = bool(connection.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS"))
    return connection.vendor == "postgresql" and shared


@receiver(connection_created, dispatch_uid="kojo.server.lease.bound_waits")
def bound_waits(sender, connection, **kwargs) -> None:
    """Every new session of a process that must keep renewing gives up on a lock or a statement after
    ``wait_bound()`` rather than waiting on a job's or a view's transaction. Not through a transaction
    pooler: the setting would stay on a pooled session another client uses next (a web request's
    query cut off after a few seconds), and miss our own next transaction; ``bounded()`` sets it per
    transaction there."""
    if not bounded_waits or connection.vendor != "postgresql" or pooled(connection):
        return
    milliseconds = int(wait_bound() * 1000)
    with connection.cursor() as cursor:
        cursor.execute(f"SET lock_timeout = {milliseconds}; SET statement_timeout = {milliseconds}")


@contextlib.contextmanager
def bounded(using: str | None = None) -> Iterator[None]:
    """Around a statement that must not wait long (a lease renewal): through a transaction pooler, a
    transaction whose waits are bounded with ``SET LOCAL``; elsewhere the session's bounds hold."""
    using = using or settings.DATABASE
    connection = connections[using]
    if not bounded_waits or not pooled(connection):
        yield
        return
    milliseconds = int(wait_bound() * 1000)
    with transaction.atomic(using=using):
        with connection.cursor() as cursor:
            cursor.execute(
                f"SET LOCAL lock_timeout = {milliseconds}; SET LOCAL statement_timeout = {milliseconds}"
            )
        yield
