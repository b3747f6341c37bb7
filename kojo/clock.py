"""The database's clock: the one clock every node of a fleet shares.

Liveness is written and judged with it, so a node whose own clock runs slow or fast can neither
have its live jobs rescued nor keep dead ones from rescue.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import connections
from django.db.models import DateTimeField, ExpressionWrapper, Func, Value
from django.db.models.functions import Now
from django.utils import timezone

from kojo.conf import settings


def now() -> Now:
    """The database's current time, as an expression to write or compare in a statement."""
    return Now()


class Ticking(Func):
    """PostgreSQL's ``clock_timestamp()``: the time as the statement gets there, not as its
    transaction began (``now()``), so that a row it read is already older. What ends a run is
    stamped with it: a job's times then follow one clock in order, enqueued <= started <= finished."""

    template = "CLOCK_TIMESTAMP()"
    output_field = DateTimeField()


def seconds_ago(seconds: float) -> ExpressionWrapper:
    """The database's time ``seconds`` ago, as an expression."""
    return ExpressionWrapper(Now() - Value(timedelta(seconds=seconds)), output_field=DateTimeField())


def database_now(using: str | None = None) -> datetime:
    """Ask the database what time it is (SQLite runs on this machine: its clock is ours)."""
    using = using or settings.DATABASE
    connection = connections[using]
    if connection.vendor != "postgresql":
        return timezone.now()
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement_timestamp()")
        return cursor.fetchone()[0]
