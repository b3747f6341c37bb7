"""Shared fixtures. Tests use the real PostgreSQL (or SQLite) and the real Redis."""

from __future__ import annotations

import itertools

import pytest

from kojo.models import JobType

_codes = itertools.count()


@pytest.fixture
def make_job_type(db):
    """Create a job type row running the tests' registered ``noop`` worker unless told otherwise."""

    def make(type_code: str | None = None, **fields) -> JobType:
        code = type_code or f"type_{next(_codes)}"
        fields.setdefault("worker", "tests.kojo_jobs.noop")
        fields.setdefault("name", code)
        return JobType.objects.create(type_code=code, **fields)

    return make
