"""What a Redis failure means, in words an operator can act on, and whether waiting may cure it.

Redis only makes kojo faster (wake-ups, events) and holds its locks: no Redis failure may fail a
caller whose job already committed, or stop a server, which goes on polling the database. But a
wrong password is not "unreachable": each kind of failure is named for what to fix.
"""

from __future__ import annotations

import logging
import time

import redis.exceptions as errors

# Failures that pass by themselves: Redis down or restarting, loading its data, a replica promoted
# (READONLY until clients follow), a cluster resharding; and, by the first word of the reply, out of
# memory, unable to persist, busy with a script, too few replicas.
TRANSIENT_REPLIES = ("OOM", "MISCONF", "BUSY", "NOREPLICAS", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN")
TRANSIENT = (
    errors.BusyLoadingError,
    errors.ReadOnlyError,
    errors.TryAgainError,
    errors.ClusterDownError,
    errors.TimeoutError,
    OSError,
)
# What a cluster client says when no node of the cluster answers: it is down, not refusing.
CLUSTER_UNREACHABLE = "Redis Cluster cannot be connected"
# Every failure a Redis call can raise: the callers that must survive anything catch these.
ANY = (errors.RedisError, errors.RedisClusterException, errors.ChildDeadlockedError, OSError)


def is_transient(error: BaseException) -> bool:
    if isinstance(error, errors.AuthenticationError | errors.AuthorizationError):
        return False  # a ConnectionError in redis-py, yet retrying never cures it
    if isinstance(error, errors.ResponseError) and str(error).split(" ", 1)[0] in TRANSIENT_REPLIES:
        return True
    if isinstance(error, errors.RedisClusterException) and CLUSTER_UNREACHABLE in str(error):
        return True
    return isinstance(error, (*TRANSIENT, errors.ConnectionError))


def describe(error: BaseException) -> str:
    """One sentence: what is wrong, and what to do when waiting will not help."""
    text = str(error).strip() or type(error).__name__
    if isinstance(error, errors.AuthenticationError | errors.AuthenticationWrongNumberOfArgsError):
        return f"Redis refused kojo's credentials (check the user and password of the cache): {text}"
    if isinstance(error, errors.NoPermissionError | errors.AuthorizationError):
        return (
            "the Redis user lacks a permission kojo needs (its commands, the keys and channels under "
            f"KOJO_KEY_PREFIX): {text}"
        )
    if isinstance(error, errors.ReadOnlyError):
        return f"Redis is read-only (a replica, or a failover under way): {text}"
    if isinstance(error, errors.BusyLoadingError):
        return f"Redis is loading its data: {text}"
    if isinstance(error, errors.ClusterCrossSlotError) or "CROSSSLOT" in text or "same key slot" in text:
        return (
            "Redis Cluster refused keys of different hash slots (an older kojo still running, or braces "
            f"in KOJO_KEY_PREFIX that make an empty hash tag): {text}"
        )
    if isinstance(error, errors.ConnectionError | errors.TimeoutError | OSError) or (
        isinstance(error, errors.RedisClusterException) and CLUSTER_UNREACHABLE in text
    ):
        return f"Redis is unreachable: {text}"
    return f"Redis refused a command: {text}"


class Throttled:
    """A warning said once, then at most once a ``period`` while it keeps happening, with how many
    times it happened meanwhile: a Redis that stays away must not write a line a second."""

    def __init__(self, logger: logging.Logger, period: float = 60.0):
        self.logger, self.period = logger, period
        self.next_at: dict[str, float] = {}
        self.unsaid: dict[str, int] = {}

    def warning(self, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now < self.next_at.get(kind, 0.0):
            self.unsaid[kind] = self.unsaid.get(kind, 0) + 1
            return
        if unsaid := self.unsaid.pop(kind, 0):
            message += f" ({unsaid} more times in the last {self.period:g} s)"
        self.next_at[kind] = now + self.period
        self.logger.warning(message, *args)

    def cleared(self, kind: str) -> bool:
        """Forget ``kind`` once it stopped happening; True if it had been said."""
        self.unsaid.pop(kind, None)
        return self.next_at.pop(kind, None) is not None
