"""Fencing tokens that never repeat, drawn from a PostgreSQL sequence.

Redis remembers the last token it gave for each lock name, but not durably: a replica promoted in a
failover may not have seen the latest ones, and a restarted Redis has forgotten them all, so a counter
kept there hands the same token out twice, and any value kept by a process between two acquires
(a block reserved ahead) can be below one another process has handed out since. So every acquire
draws its own value with one ``nextval()`` just before it asks Redis: a hold whose draw came after
another hold was granted carries a larger token, whatever Redis remembers. (A draw delayed before its
script runs can still land below a hold granted meanwhile that a failover then lost; a resource that
refuses tokens below the largest it has seen refuses it.) A draw whose hold is refused
(every slot taken) or whose reply is lost only leaves a gap.

The sequence steps by 1000 (migration 0008): earlier versions reserved blocks of that size, and
their values and these never meet.

Where the database is not PostgreSQL (the one-machine try-out), there is no source: the Redis lock
script keeps its own counter, as safe as Redis's memory.
"""

from __future__ import annotations

import contextlib

from django.db import DatabaseError, InterfaceError, ProgrammingError, connections, transaction
from django.db.transaction import TransactionManagementError

from kojo.conf import settings
from kojo.locks.base import BackendRefused, BackendUnavailable

SEQUENCE = "kojo_fencing_token"


def durable(using: str | None = None) -> bool:
    """Whether tokens come from the sequence (PostgreSQL) rather than from Redis's own counter."""
    return connections[using or settings.DATABASE].vendor == "postgresql"


def draw(using: str | None = None) -> int:
    """A fresh value of the sequence, above every value drawn before. Inside the caller's
    transaction it is drawn in a savepoint, so that a failed draw leaves that transaction usable
    (a sequence's values are handed out at once: the caller's rollback does not take one back)."""
    using = using or settings.DATABASE
    connection = connections[using]
    savepoint = transaction.atomic(using=using) if connection.in_atomic_block else contextlib.nullcontext()
    try:
        with savepoint, connection.cursor() as cursor:
            cursor.execute("SELECT nextval(%s)", [SEQUENCE])
            return cursor.fetchone()[0]
    except TransactionManagementError as exc:
        raise BackendRefused(
            "fencing tokens: the caller's transaction is broken (an earlier query in it failed); "
            "roll it back before taking a lock"
        ) from exc
    except ProgrammingError as exc:
        # The sequence is missing (migration 0008 not applied) or this role may not use it.
        raise BackendRefused(
            f"fencing tokens: cannot draw from the sequence {SEQUENCE} (run manage.py migrate, or "
            f"grant USAGE on it): {str(exc).strip()}"
        ) from exc
    except (DatabaseError, InterfaceError) as exc:
        if not connection.in_atomic_block:
            connection.close()  # a connection the database dropped: the next draw opens another
        sqlstate = getattr(exc.__cause__, "sqlstate", None)
        if sqlstate == "25P02":  # in_failed_sql_transaction
            raise BackendRefused(
                "fencing tokens: the caller's transaction is aborted; roll it back before taking a lock"
            ) from exc
        if sqlstate == "25006" and connection.in_atomic_block:  # read_only_sql_transaction
            raise BackendRefused(
                "fencing tokens: the caller's transaction is read-only, and a draw from the sequence is a "
                "write; take the lock outside it"
            ) from exc
        if sqlstate == "25006":  # a standby, or a role whose transactions default to read-only
            raise BackendUnavailable(
                "fencing tokens: the database session is read-only (a standby, or "
                f"default_transaction_read_only); kojo needs a primary: {exc}"
            ) from exc
        raise BackendUnavailable(f"fencing tokens: the database is unavailable: {exc}") from exc
