import time

import pytest
from django.db import connection

import kojo
from kojo.planner import MIN_CHANGES, refresh_statistics

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's planner statistics"),
]


def analyzed_at():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT greatest(last_analyze, last_autoanalyze) FROM pg_stat_user_tables "
            "WHERE relid = 'kojo_job'::regclass"
        )
        return cursor.fetchone()[0]


def test_a_bulk_enqueue_gets_the_job_table_analyzed_once(make_job_type):
    kind = make_job_type()
    before = analyzed_at()
    kojo.schedule_many(kind.type_code, [{} for _ in range(MIN_CHANGES + 200)])
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
    # Counters reach the statistics views when the writing session reports them.
    deadline = time.monotonic() + 15
    while not refresh_statistics():
        assert time.monotonic() < deadline, "the changes never showed in pg_stat_user_tables"
        time.sleep(0.2)
    assert analyzed_at() != before
    assert refresh_statistics() is False  # nothing changed since

