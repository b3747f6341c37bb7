"""kojo on a second database: a server whose "default" database does not exist runs everything
through ``KOJO_DATABASE`` (the ORM's queries, its own transactions and the claim's raw SQL)."""

from __future__ import annotations

import signal

import pytest
from django.db import connection

import kojo
from kojo.models import Job
from kojo.states import JobState
from tests.server.conftest import wait_for
from tests.server.helpers import max_overlap

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="a second PostgreSQL database"),
]

SECOND_DATABASE = {"DJANGO_SETTINGS_MODULE": "tests.second_database_settings"}


def test_a_server_on_kojo_database_runs_limited_and_dependent_jobs_without_the_default_database(
    start_server, make_job_type
):
    plain = make_job_type(worker="tests.kojo_jobs.noop")
    limited = make_job_type(worker="tests.kojo_jobs.sleep", schedule_limit=1)
    first = kojo.schedule(plain.type_code)
    jobs = [first, *(kojo.schedule(limited.type_code, {"seconds": 0.05}) for _ in range(5))]
    jobs.append(kojo.schedule(plain.type_code, depends_on=[first]))
    server = start_server("--concurrency", "3", **SECOND_DATABASE)
    ids = [job.pk for job in jobs]
    done = Job.objects.filter(pk__in=ids, state=JobState.COMPLETE_SUCCESS)
    wait_for(lambda: done.count() == len(ids), timeout=30, message="every job, through KOJO_DATABASE")
    assert max_overlap(limited) == 1
    output = server.output()
    assert "kojo_no_such_database" not in output.split("started on", 1)[1], output[-2000:]
    server.signal(signal.SIGTERM)
    assert server.wait(30) == 0
