"""Two servers on a Redis Cluster (kojo.redis_cluster): one housekeeping leader, every job run once,
and wake-ups delivered by sharded pub/sub. The cluster is the one .ci/run starts on 7001-7003, or
KOJO_TEST_REDIS_CLUSTER."""

from __future__ import annotations

import os
import time

import pytest
import redis

import kojo
from kojo.locks import holders
from kojo.models import Job
from kojo.states import JobState
from tests.server.conftest import wait_for

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]

NODE = os.environ.get("KOJO_TEST_REDIS_CLUSTER") or "127.0.0.1:7001"
# Servers that poll and heartbeat this rarely start a job within seconds only when a message woke them.
SLOW_POLLING = {
    "KOJO_TEST_SET_LOCK_BACKEND": "redis",
    "KOJO_TEST_SET_POLL_INTERVAL": "30",
    "KOJO_TEST_SET_HEARTBEAT_INTERVAL": "30",
    "KOJO_TEST_SET_HEARTBEAT_TIMEOUT": "120",
}


@pytest.fixture
def on_cluster(settings):
    """This process and the servers it starts use the cluster, as the README configures it."""
    host, port = NODE.rsplit(":", 1)
    try:
        state = redis.Redis(host=host, port=int(port), socket_connect_timeout=1).cluster("info")
    except redis.exceptions.RedisError as error:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no Redis Cluster at {NODE} (.ci/run starts one): {error}")
    assert state["cluster_state"] == "ok", state
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://{NODE}",
            "OPTIONS": {"CONNECTION_FACTORY": "kojo.redis_cluster.ClusterConnectionFactory"},
        }
    }
    settings.KOJO_LOCK_BACKEND = "redis"
    return {**SLOW_POLLING, "KOJO_TEST_REDIS_CLUSTER": NODE}


def test_two_servers_on_a_cluster_share_the_work_and_are_woken(start_server, make_job_type, on_cluster):
    kind = make_job_type(worker="tests.kojo_jobs.sleep")
    servers = [start_server("--concurrency", "2", **on_cluster) for _ in range(2)]
    for server in servers:
        wait_for(lambda s=server: "started on" in s.output(), message="a server to start")
    wait_for(
        lambda: len(holders("housekeeping")) == 1,
        timeout=30,
        message="one of the two servers to lead housekeeping through a lock on the cluster",
    )
    time.sleep(1.0)  # past their first claims: from here only a message wakes them before 30 s

    jobs = [kojo.schedule(kind.type_code, {"seconds": 0.3}) for _ in range(12)]
    ids = [job.pk for job in jobs]
    wait_for(
        lambda: Job.objects.filter(pk__in=ids, state=JobState.COMPLETE_SUCCESS).count() == len(ids),
        timeout=15,
        message="woken servers to run every job (polling alone would take 30 s)",
    )
    done = Job.objects.filter(pk__in=ids)
    assert sorted(done.values_list("attempts", flat=True)) == [1] * len(ids)
    assert {job.server.pid for job in done.select_related("server")} == {s.pid for s in servers}
    for server in servers:
        output = server.output()
        assert "polling only" not in output and "could not publish" not in output, output
        assert "Traceback" not in output, output
