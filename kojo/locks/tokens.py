"""Fencing tokens that never repeat, drawn from a PostgreSQL sequence a block at a time.

Redis remembers the last token it gave for each lock name, but not durably: a replica promoted in a
failover may not have seen the latest ones, and a restarted Redis has forgotten them all, so a counter
kept there hands the same token out twice. A sequence hands each value out once, whatever happens to
Redis. Each process draws a block of ``BLOCK`` values with one ``nextval()``; the acquire script takes
the first value of the block's rest above the last token it gave for that name, so tokens keep
increasing, and when another process's block is ahead of all of it, the acquirer draws a new block.
A value is only ever taken from its own process's block: no token is given twice, even by a Redis
that forgot or never saw the last one.

Where the database is not PostgreSQL (the one-machine try-out), there is no source: the Redis lock
script keeps its own counter, as safe as Redis's memory.
"""

from __future__ import annotations

import os
import threading

from django.db import DatabaseError, ProgrammingError, connections

from kojo.conf import settings
from kojo.locks.base import BackendRefused, BackendUnavailable

# Values per draw; the sequence's increment (migration 0008), so one nextval() reserves a block.
BLOCK = 1000
SEQUENCE = "kojo_fencing_token"


class TokenSource:
    """This process's block of the sequence. Forked children start with none of it: two processes
    offering the same value would defeat the point."""

    def __init__(self, using: str | None = None):
        self._using = using
        self._guard = threading.Lock()
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._guard = threading.Lock()
        self._next = self._end = 0

    @property
    def using(self) -> str:
        return self._using or settings.DATABASE

    @property
    def durable(self) -> bool:
        return connections[self.using].vendor == "postgresql"

    def offer(self) -> tuple[int, int] | tuple[()]:
        """The rest of this process's block, first and end (exclusive), for the acquire script to
        take a token from; ``()`` without a durable source. ``taken`` once one was taken."""
        if not self.durable:
            return ()
        with self._guard:
            if self._next >= self._end:
                self._draw()
            return self._next, self._end

    def taken(self, token: int) -> None:
        with self._guard:
            if self._next <= token < self._end:
                self._next = token + 1

    def overtaken(self) -> tuple[int, int]:
        """Redis gave a token of that name above this whole block: draw a new one, above every value
        drawn before it (so above that token, unless another process drew later still)."""
        with self._guard:
            self._draw()
            return self._next, self._end

    def _draw(self) -> None:
        try:
            with connections[self.using].cursor() as cursor:
                cursor.execute("SELECT nextval(%s)", [SEQUENCE])
                (first,) = cursor.fetchone()
        except ProgrammingError as exc:
            # The sequence is missing (migration 0008 not applied) or this role may not use it.
            raise BackendRefused(
                f"fencing tokens: cannot draw from the sequence {SEQUENCE} (run manage.py migrate, or "
                f"grant USAGE on it): {str(exc).strip()}"
            ) from exc
        except DatabaseError as exc:
            raise BackendUnavailable(f"fencing tokens: the database is unavailable: {exc}") from exc
        self._next, self._end = first, first + BLOCK


tokens = TokenSource()
