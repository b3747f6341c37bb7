"""``kojo_status --server``: a liveness probe from the server's health file, and kojo_status's exit
codes when the database or Redis is away, from real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from django.conf import settings as django_settings
from django.db import connection

from kojo.management.commands import kojo_status
from tests.server.conftest import ROOT, wait_for


@pytest.fixture
def status_dir(tmp_path):
    return str(tmp_path / "status")


def status(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.server_settings", "PYTHONPATH": str(ROOT)}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "django", "kojo_status", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_probe_tells_a_running_server_from_a_stuck_one(start_server, status_dir):
    server = start_server(KOJO_TEST_SET_STATUS_DIR=status_dir)
    probe = {"KOJO_TEST_SET_STATUS_DIR": status_dir}
    wait_for(lambda: status("--server", str(server.pid), **probe).returncode == 0, message="the probe")
    alive = status("--server", "self", **probe)
    assert alive.returncode == 0 and f"server {server.pid}: alive" in alive.stdout, alive
    os.kill(server.pid, signal.SIGSTOP)  # the loop stops; the process lives
    try:
        time.sleep(4.0)  # past 3 of the loop's longest waits, as the tests configure them
        stuck = status("--server", str(server.pid), **probe)
        assert stuck.returncode == kojo_status.STUCK, stuck
        assert "stuck" in stuck.stdout + stuck.stderr and "Traceback" not in stuck.stderr
    finally:
        os.kill(server.pid, signal.SIGCONT)
    wait_for(lambda: status("--server", str(server.pid), **probe).returncode == 0, message="the loop again")
    assert status("--server", str(os.getpid()), **probe).returncode == kojo_status.NO_LIVE_SERVER


@pytest.mark.skipif(django_settings.KOJO_LOCK_BACKEND != "redis", reason="the SQLite try-out has no Redis")
def test_the_probe_reports_a_server_redis_refuses_as_degraded_not_dead(start_server, status_dir):
    refused = "redis://kojo-nobody:wrong-password@127.0.0.1:6379/0"
    server = start_server(KOJO_TEST_SET_STATUS_DIR=status_dir, KOJO_TEST_REDIS_URL=refused)
    probe = {"KOJO_TEST_SET_STATUS_DIR": status_dir}

    def degraded():
        result = status("--server", str(server.pid), **probe)
        return result.returncode == 0 and "degraded" in result.stdout and result

    result = wait_for(degraded, message="the probe to see the server degraded")
    assert "messaging: Redis refused kojo's credentials" in result.stdout


@pytest.mark.skipif(connection.vendor != "postgresql", reason="a database on a port nothing listens on")
def test_kojo_status_says_the_database_is_unavailable_without_a_traceback(db):
    result = status(KOJO_TEST_DB_PORT="1")  # nothing listens there
    assert result.returncode == kojo_status.DATABASE_UNAVAILABLE, result
    assert "database unavailable" in result.stderr and "Traceback" not in result.stderr
