"""Redis through Sentinel, failed over twice while two servers run jobs that take a kojo mutex: no job
is lost and no fencing token is handed out twice (kojo.locks.tokens), though for a moment the lock
may have two holders (a Redis lock is a lease; the README says what survives a failover)."""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid

import pytest
import redis
from django.db import connection

import kojo
from kojo.models import Job
from kojo.states import JobState
from tests.server.conftest import wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="durable fencing tokens need PostgreSQL"),
]

PRIMARY, REPLICA, SENTINEL = 6393, 6394, 26391
SERVICE = "kojotest"


def redis_server(*args: str) -> None:
    subprocess.run(["redis-server", *args], check=True, capture_output=True, timeout=10)


def answers(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=0.5).ping())
    except redis.exceptions.RedisError:
        return False


@pytest.fixture
def sentinel_set(tmp_path):
    """A primary, its replica and one Sentinel (quorum 1) watching them as the service "kojotest"."""
    common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "yes"]
    common += ["--dir", str(tmp_path), "--repl-diskless-sync-delay", "0"]
    redis_server("--port", str(PRIMARY), *common, "--logfile", str(tmp_path / "primary.log"))
    redis_server("--port", str(REPLICA), *common, "--logfile", str(tmp_path / "replica.log"),
                 "--replicaof", "127.0.0.1", str(PRIMARY))  # fmt: skip
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"port {SENTINEL}\nbind 127.0.0.1\ndaemonize yes\nlogfile {tmp_path / 'sentinel.log'}\n"
        f"sentinel monitor {SERVICE} 127.0.0.1 {PRIMARY} 1\n"
        f"sentinel down-after-milliseconds {SERVICE} 1000\nsentinel failover-timeout {SERVICE} 5000\n"
    )
    redis_server(str(config), "--sentinel")
    sentinel = redis.Redis(port=SENTINEL, decode_responses=True)
    try:
        wait_for(lambda: all(answers(port) for port in (PRIMARY, REPLICA, SENTINEL)), timeout=10)
        wait_for(lambda: ready_replicas(sentinel) == 1, timeout=20, message="the Sentinel to see the replica")
        yield sentinel
    finally:
        for port in (SENTINEL, PRIMARY, REPLICA):
            with contextlib.suppress(redis.exceptions.RedisError):
                redis.Redis(port=port).shutdown(nosave=True, now=True)


def ready_replicas(sentinel: redis.Redis) -> int:
    replicas = sentinel.sentinel_slaves(SERVICE)  # parsed: flags as booleans, link status as text
    return sum(
        entry.get("is_slave") and not entry.get("is_disconnected") and entry.get("master-link-status") == "ok"
        for entry in replicas
    )


def primary_port(sentinel: redis.Redis) -> int:
    return int(sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)[1])


def fail_over(sentinel: redis.Redis) -> None:
    """Force a failover and wait until the old primary follows the new one."""
    before = primary_port(sentinel)
    sentinel.execute_command("SENTINEL", "FAILOVER", SERVICE)
    wait_for(lambda: primary_port(sentinel) != before, timeout=20, message="the failover")
    wait_for(lambda: ready_replicas(sentinel) == 1, timeout=30, message="the old primary to follow")


def test_jobs_under_two_failovers_all_succeed_and_no_fencing_token_repeats(
    start_server, make_job_type, sentinel_set, tmp_path
):
    kind = make_job_type(worker="tests.kojo_jobs.fenced_append", max_attempts=10, retry_interval="PT0S")
    log, lock = tmp_path / "holds", f"failover-{uuid.uuid4().hex[:8]}"
    env = {"KOJO_TEST_REDIS_SENTINEL": f"127.0.0.1:{SENTINEL}", "KOJO_TEST_SET_LOCK_BACKEND": "redis"}
    servers = [start_server("--concurrency", "2", **env) for _ in range(2)]
    params = [{"lock": lock, "log": str(log), "seconds": 0.02} for _ in range(150)]
    ids = [job.pk for job in kojo.schedule_many(kind.type_code, params)]
    wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= 20, timeout=30, message="runs")
    fail_over(sentinel_set)
    time.sleep(1.0)
    fail_over(sentinel_set)
    succeeded = Job.objects.filter(pk__in=ids, state=JobState.COMPLETE_SUCCESS)
    wait_for(lambda: succeeded.count() == len(ids), timeout=120, interval=0.5, message="every job")
    holds = [line.split() for line in log.read_text().splitlines()]
    tokens = [int(token) for _, token in holds]
    assert len(tokens) == len(set(tokens)), "a fencing token was handed out twice"
    assert {int(job_id) for job_id, _ in holds} == set(ids)
    for server in servers:
        assert server.process.poll() is None, server.output()[-2000:]
