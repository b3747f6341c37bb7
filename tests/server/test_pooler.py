"""Servers behind PgBouncer in transaction pooling (the py311-dj52-pgbouncer env, which runs every
server test that way): kojo leaves no setting of its own on the pooled sessions, which the pooler
hands to other clients next."""

from __future__ import annotations

import os
import threading

import psycopg
import pytest
from django.db import connection

import kojo
from kojo.models import Job
from kojo.states import JobState
from tests.server.conftest import wait_for

PORT = os.environ.get("KOJO_TEST_PGBOUNCER_PORT")

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not PORT, reason="servers go through PgBouncer only with KOJO_TEST_PGBOUNCER_PORT"),
]

# Client sessions held open at once, each in a transaction, so the pooler lends each its own server
# session: more than the kojo server has used, so every one of those is among them.
SAMPLED = 12


def pooled_settings() -> set[tuple[str, str]]:
    """lock_timeout and statement_timeout as the pooled server sessions hold them."""
    params = connection.settings_dict
    sessions = [
        psycopg.connect(dbname=params["NAME"], user=params["USER"], host=params["HOST"], port=PORT)
        for _ in range(SAMPLED)
    ]
    seen: set[tuple[str, str]] = set()
    try:
        # Not autocommit: each holds a transaction from its first statement, on a server session of its own.
        for session in sessions:
            lock_timeout = session.execute("SHOW lock_timeout").fetchone()[0]
            seen.add((lock_timeout, session.execute("SHOW statement_timeout").fetchone()[0]))
    finally:
        for session in sessions:
            session.close()
    return seen


def test_servers_leave_no_timeouts_on_pooled_sessions_for_other_clients(start_server, make_job_type):
    kind = make_job_type(worker="tests.kojo_jobs.noop")
    start_server("--mode", "static", "--concurrency", "2")
    start_server("--mode", "ondemand", "--concurrency", "2")
    jobs = [kojo.schedule(kind.type_code) for _ in range(40)]
    ids = [job.pk for job in jobs]

    def done() -> bool:
        return Job.objects.filter(pk__in=ids, state=JobState.COMPLETE_SUCCESS).count() == len(ids)

    wait_for(done, timeout=60, message="the jobs, through the pooler")
    threading.Event().wait(2)  # heartbeats and housekeeping passes meanwhile
    assert pooled_settings() == {("0", "0")}
