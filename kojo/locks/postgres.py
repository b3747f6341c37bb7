"""Fleet-wide locks in PostgreSQL, for ``KOJO_LOCK_BACKEND = "postgres"``: no Redis to fail over.

Each hold is a row of ``kojo_lock_hold`` (kojo.models.LockHold) with a lease judged by the database's
clock and a fencing token from the sequence ``kojo_fencing_token``, so tokens never repeat and a
failover of the database (synchronous replication) keeps both. The rows of one name are changed only
under a transaction-scoped advisory lock on that name, so two acquirers cannot both take its last
slot. Dead holders are freed as on Redis: by a process on their machine that sees them gone, or when
their lease runs out.

The backend keeps a connection of its own (kojo.locks.connection), in autocommit, beside Django's:
a hold taken inside the caller's transaction would be invisible to everyone else until it commits,
and undone if it rolls back. Renewals and releases take the name's advisory lock too. Every call runs
in a transaction whose waits are bounded (WAIT_BOUND_MS): a holder of a name's advisory lock paused
mid-transaction (SIGSTOP, a long GC) makes the others fail fast as unavailable, and loses its session
once it sat idle in that transaction for IDLE_BOUND_MS, which frees the lock.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import psycopg

from kojo.conf import settings
from kojo.exceptions import LockNotOwned
from kojo.locks.base import BackendRefused, BackendUnavailable, Hold, Owner, ensure_owned_here
from kojo.locks.connection import OwnConnection

logger = logging.getLogger(__name__)

TABLE = "kojo_lock_hold"
# The longest any lock call waits on a lock or a statement; far above what one takes (a few statements
# under a name's advisory lock), far below a lease.
WAIT_BOUND_MS = 5000
IDLE_BOUND_MS = 10000
BOUNDS = (
    "SET LOCAL lock_timeout = %(wait)d; SET LOCAL statement_timeout = %(wait)d; "
    "SET LOCAL idle_in_transaction_session_timeout = %(idle)d"
)
ACQUIRE_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('kojo-lock:' || %s, 0))"
# Leases that ran out are forgotten first; the rest are the holds that count.
LIVE_HOLDS = f"""
WITH expired AS (DELETE FROM {TABLE} WHERE name = %s AND expires <= clock_timestamp())
SELECT token, owner FROM {TABLE} WHERE name = %s AND expires > clock_timestamp()
"""
INSERT_HOLD = f"""
INSERT INTO {TABLE} (name, token, "limit", owner, since, expires)
VALUES (%s, nextval('kojo_fencing_token'), %s, %s::jsonb, clock_timestamp(),
        clock_timestamp() + %s * interval '1 millisecond')
RETURNING token, since, expires
"""
RELEASE = f"""
DELETE FROM {TABLE} WHERE name = %s AND token = %s AND owner = %s::jsonb
RETURNING expires > clock_timestamp()
"""
RENEW = f"""
UPDATE {TABLE} SET expires = clock_timestamp() + %s * interval '1 millisecond'
WHERE name = %s AND token = %s AND owner = %s::jsonb AND expires > clock_timestamp()
RETURNING expires
"""


def failure(error: psycopg.Error) -> BackendUnavailable | BackendRefused:
    """BackendRefused when waiting will not help (credentials, rights, no table: not migrated)."""
    refused = (
        psycopg.errors.InsufficientPrivilege,
        psycopg.errors.InvalidPassword,
        psycopg.errors.InvalidAuthorizationSpecification,
        psycopg.errors.UndefinedTable,
    )
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, refused):
        return BackendRefused(f"PostgreSQL refuses kojo's locks: {message}")
    return BackendUnavailable(f"PostgreSQL is unavailable for locks: {message}")


class PostgresBackend:
    """Holds kept in PostgreSQL; see the module docstring."""

    renews_leases = True

    def __init__(self, using: str | None = None):
        self.using = using or settings.DATABASE
        self._own = OwnConnection(self.using, "kojo locks")

    def __repr__(self) -> str:
        return f"<PostgresBackend database={self.using!r}>"

    def close(self) -> None:
        """Close this process's connection (the next call opens another)."""
        self._own.close()

    def _run(self, work):
        """``work(connection)`` on the backend's own connection, in one transaction with bounded
        waits, psycopg's errors told apart."""

        def bounded(connection: psycopg.Connection):
            with connection.transaction():
                connection.execute(BOUNDS % {"wait": WAIT_BOUND_MS, "idle": IDLE_BOUND_MS})
                return work(connection)

        try:
            return self._own.run(bounded)
        except psycopg.Error as error:
            raise failure(error) from error

    def _under_name_lock(self, name: str, sql: str, args: list) -> tuple | None:
        """One statement on a name's holds under the name's advisory lock, as an acquire is: a
        renewal judged while an acquirer deletes expired holds would leave two."""

        def work(connection: psycopg.Connection):
            connection.execute(ACQUIRE_LOCK, [name])
            return connection.execute(sql, args).fetchone()

        return self._run(work)

    def acquire(self, name: str, limit: int, owner: Owner, lease: float) -> Hold | None:
        taken = self._try(name, limit, owner, lease)
        if isinstance(taken, Hold):
            return taken
        # Contention: free the slots of holders that died on this machine, then try once more.
        if not self._drop_dead(name, taken):
            return None
        taken = self._try(name, limit, owner, lease)
        return taken if isinstance(taken, Hold) else None

    def _try(self, name: str, limit: int, owner: Owner, lease: float) -> Hold | list[tuple[int, Owner]]:
        """A hold, or the live holds (token, owner) when every slot is taken."""

        def work(connection: psycopg.Connection):
            connection.execute(ACQUIRE_LOCK, [name])
            holds = connection.execute(LIVE_HOLDS, [name, name]).fetchall()
            if len(holds) >= limit:
                return [(token, Owner.from_dict(record)) for token, record in holds]
            return connection.execute(
                INSERT_HOLD, [name, limit, owner.as_json, max(1, round(lease * 1000))]
            ).fetchone()

        taken = self._run(work)
        if isinstance(taken, list):
            return taken
        token, since, expires = taken
        return Hold(name, limit, owner, token, since, expires)

    def release(self, hold: Hold) -> None:
        ensure_owned_here(hold)
        row = self._under_name_lock(hold.name, RELEASE, [hold.name, hold.token, hold.owner.as_json])
        if row is None:
            self._not_owned(hold)
        if not row[0]:
            raise LockNotOwned(f"lock {hold.name!r} token {hold.token} was lost: its lease ran out")

    def renew(self, hold: Hold, lease: float) -> Hold:
        ensure_owned_here(hold)
        args = [max(1, round(lease * 1000)), hold.name, hold.token, hold.owner.as_json]
        row = self._under_name_lock(hold.name, RENEW, args)
        if row is None:
            self._not_owned(hold)
        return Hold(hold.name, hold.limit, hold.owner, hold.token, hold.since, row[0])

    def _not_owned(self, hold: Hold) -> None:
        found = self._run(
            lambda connection: connection.execute(
                f"SELECT owner FROM {TABLE} WHERE name = %s AND token = %s", [hold.name, hold.token]
            ).fetchone()
        )
        if found is not None and Owner.from_dict(found[0]) != hold.owner:
            raise LockNotOwned(f"lock {hold.name!r} token {hold.token} belongs to another owner")
        raise LockNotOwned(f"lock {hold.name!r} token {hold.token} was lost: its lease ran out")

    def reclaim_dead(self, name: str) -> int:
        holds = self._run(
            lambda connection: connection.execute(
                f"SELECT token, owner FROM {TABLE} WHERE name = %s", [name]
            ).fetchall()
        )
        return self._drop_dead(name, [(token, Owner.from_dict(record)) for token, record in holds])

    def _drop_dead(self, name: str, holds: list[tuple[int, Owner]]) -> int:
        """Delete the holds among ``holds`` whose owner this process can prove gone; by token and
        owner, so a slot granted again meanwhile is never touched."""
        dead = [(token, owner) for token, owner in holds if owner.is_dead_here()]
        if not dead:
            return 0
        for token, owner in dead:
            logger.info("Freeing lock %s token %s: holder pid %s has died", name, token, owner.pid)

        def work(connection: psycopg.Connection) -> int:
            deleted = 0
            for token, owner in dead:
                cursor = connection.execute(
                    f"DELETE FROM {TABLE} WHERE name = %s AND token = %s AND owner = %s::jsonb",
                    [name, token, json.dumps(owner.as_dict())],
                )
                deleted += cursor.rowcount
            return deleted

        return self._run(work)

    def holders(self, name: str | None = None) -> list[Hold]:
        sql = f'SELECT name, "limit", owner, token, since, expires FROM {TABLE}'
        sql += " WHERE expires > clock_timestamp()"
        args: list[Any] = []
        if name is not None:
            sql += " AND name = %s"
            args.append(name)
        sql += " ORDER BY name, token"
        rows = self._run(lambda connection: connection.execute(sql, args).fetchall())
        return [
            Hold(lock_name, limit, Owner.from_dict(owner), token, since, expires)
            for lock_name, limit, owner, token, since, expires in rows
        ]
