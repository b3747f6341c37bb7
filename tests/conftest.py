"""Shared fixtures. Tests use the real PostgreSQL (or SQLite) and the real Redis."""

from __future__ import annotations

import itertools
import os

import pytest

from kojo.models import JobType

_codes = itertools.count()


def added_types():
    """Job type rows besides those declared in code (which migrate creates in every test database)."""
    from kojo.registry import registry

    return JobType.objects.exclude(type_code__in=list(registry.job_types))


@pytest.fixture
def make_job_type(db):
    """Create a job type row running the tests' registered ``noop`` worker unless told otherwise."""

    def make(type_code: str | None = None, **fields) -> JobType:
        code = type_code or f"type_{next(_codes)}"
        fields.setdefault("worker", "tests.kojo_jobs.noop")
        fields.setdefault("name", code)
        return JobType.objects.create(type_code=code, **fields)

    return make


@pytest.fixture(scope="session", autouse=True)
def pooler_sessions_closed(request):
    """Through PgBouncer (KOJO_TEST_PGBOUNCER_PORT), the pooler keeps its server sessions on the test
    database open after the servers are gone: end them before the database is dropped."""
    if not os.environ.get("KOJO_TEST_PGBOUNCER_PORT"):
        yield
        return
    request.getfixturevalue("django_db_setup")
    yield
    from django.db import connection

    with request.getfixturevalue("django_db_blocker").unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
