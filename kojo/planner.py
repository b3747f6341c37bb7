"""Fresh planner statistics for the job table, so that claims keep their plan when the queue changes fast.

PostgreSQL's autovacuum analyzes a table about a minute after many of its rows changed. A queue that
fills at once (a bulk enqueue, a backlog after an outage) may be drained long before that, each claim
planned with the row counts of the nearly empty table seen last: a scan of every waiting job and a
sort, where reading the first entries of the claim index would do. The leading housekeeper analyzes
the job table itself, within a second, once as many rows changed as autovacuum would wait for.
"""

from __future__ import annotations

import logging

from django.db import connections

from kojo.conf import settings
from kojo.models import Job

logger = logging.getLogger(__name__)

# Analyze once this many rows, or this share of the table, changed since the last analysis (the larger).
MIN_CHANGES = 1000
SHARE_CHANGED = 0.1


def refresh_statistics(*, using: str | None = None) -> bool:
    """Analyze the job table if enough of it changed since its last analysis; return whether it did."""
    using = using or settings.DATABASE
    connection = connections[using]
    if connection.vendor != "postgresql":
        return False
    table = Job._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT n_mod_since_analyze, n_live_tup FROM pg_stat_user_tables WHERE relid = %s::regclass",
            [table],
        )
        row = cursor.fetchone()
        if row is None or row[0] < max(MIN_CHANGES, SHARE_CHANGED * row[1]):
            return False
        cursor.execute(f"ANALYZE {connection.ops.quote_name(table)}")
    logger.info("analyzed %s: %s rows changed since its last analysis", table, row[0])
    return True
