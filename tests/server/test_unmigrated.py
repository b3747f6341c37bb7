"""A database that answers but was never migrated: the server says so and exits, it does not wait."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from django.db import connection

from kojo.server import exitcodes

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="makes a PostgreSQL database"),
]


@pytest.fixture
def empty_database():
    name = f"unmigrated_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(host="127.0.0.1", port=5432, user="root", dbname="test", autocommit=True)
    admin.execute(f'CREATE DATABASE "test_{name}"')
    yield name
    admin.execute(f'DROP DATABASE IF EXISTS "test_{name}" WITH (FORCE)')
    admin.close()


def test_a_server_on_a_database_never_migrated_says_run_migrate_and_exits(start_server, empty_database):
    server = start_server(KOJO_TEST_DB_NAME=empty_database)
    assert server.wait(timeout=20) == exitcodes.NOT_MIGRATED
    output = server.output()
    assert "run `manage.py migrate`" in output and "0001_initial" in output, output
    assert "database unavailable" not in output, output


def test_a_reload_probe_refuses_a_database_that_lacks_migrations(start_server, empty_database):
    """SIGHUP's probe: new code whose migrations are not applied yet is refused, so the server goes on
    running its current code instead of draining into a start-up that would stop."""
    probe = start_server("--probe", KOJO_TEST_DB_NAME=empty_database)
    assert probe.wait(timeout=30) == 1
    assert "lacks kojo's migrations" in probe.output() and "run migrate first" in probe.output()
