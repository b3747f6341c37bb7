"""A server whose database role may use kojo's tables but not read django_migrations (a
least-privilege runtime role; migrations run under another role) starts: the start-up migration
check cannot tell, and says so, instead of waiting forever."""

from __future__ import annotations

import pytest
from django.db import connection

from tests.server.conftest import wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL roles"),
]

ROLE = "kojo_test_runtime"


@pytest.fixture
def runtime_role():
    with connection.cursor() as cursor:
        cursor.execute(f"DROP ROLE IF EXISTS {ROLE}")
        cursor.execute(f"CREATE ROLE {ROLE} LOGIN")
        cursor.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {ROLE}")
        cursor.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {ROLE}")
        cursor.execute(f"REVOKE ALL ON django_migrations FROM {ROLE}")
    yield ROLE
    with connection.cursor() as cursor:
        cursor.execute(f"DROP OWNED BY {ROLE}")
        cursor.execute(f"DROP ROLE {ROLE}")


def test_a_role_without_django_migrations_rights_starts(start_server, runtime_role):
    # Straight to PostgreSQL, even in the PgBouncer env: that pooler knows only the usual users.
    server = start_server(PGUSER=runtime_role, KOJO_TEST_PGBOUNCER_PORT="")
    output = wait_for(
        lambda: ("started on" in (out := server.output()) or "start-up" in out) and out, timeout=30
    )
    assert "started on" in output, output[-600:]
