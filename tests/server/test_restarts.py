"""A server rides out a restart of PostgreSQL or Redis: it logs, backs off, reconnects, loses no job."""

import time

import pytest
from django.db import connection

import kojo
from kojo.models import Job
from kojo.states import JobState
from tests.server.conftest import wait_for
from tests.services import ensure_services, postgres_answers, postgres_cluster, start_redis, stop_redis

pytestmark = pytest.mark.server


@pytest.fixture
def services_restored():
    yield
    ensure_services()


def done(jobs) -> bool:
    ids = [job.pk for job in jobs]
    try:
        return Job.objects.filter(pk__in=ids, state=JobState.COMPLETE_SUCCESS).count() == len(ids)
    except Exception:  # noqa: BLE001 - the database may still be coming back
        connection.close()
        return False


@pytest.mark.skipif(connection.vendor != "postgresql", reason="restarts the PostgreSQL server")
def test_postgresql_restart_loses_no_job(start_server, make_job_type, services_restored):
    kind = make_job_type(worker="tests.kojo_jobs.sleep")
    jobs = [kojo.schedule(kind.type_code, {"seconds": 0.5}) for _ in range(12)]
    server = start_server("--concurrency", "2")
    wait_for(
        lambda: Job.objects.filter(state=JobState.COMPLETE_SUCCESS).count() >= 2, message="work to start"
    )
    connection.close()
    postgres_cluster("stop")  # fast mode: every session, the server's included, is cut
    time.sleep(2)  # the outage the server has to ride out
    postgres_cluster("start")
    wait_for(postgres_answers, timeout=30, message="PostgreSQL to come back")
    wait_for(lambda: done(jobs), timeout=90, interval=0.2, message="every job to finish after the restart")
    assert server.process.poll() is None, "the server must still be running"
    assert "database unavailable" in server.output()
    assert not Job.objects.filter(state=JobState.WORKING).exists()


def test_redis_restart_loses_no_job(start_server, make_job_type, services_restored, settings):
    settings.KOJO_LOCK_BACKEND = "redis"
    kind = make_job_type(worker="tests.kojo_jobs.sleep")
    first = [kojo.schedule(kind.type_code, {"seconds": 0.2}) for _ in range(4)]
    server = start_server("--concurrency", "2", KOJO_TEST_SET_LOCK_BACKEND="redis")
    wait_for(lambda: done(first), timeout=30, message="the first jobs to finish")
    stop_redis()
    during = [kojo.schedule(kind.type_code, {"seconds": 0.2}) for _ in range(4)]  # wake-ups are lost
    wait_for(
        lambda: done(during), timeout=30, message="jobs scheduled while Redis was down (found by polling)"
    )
    start_redis()
    after = [kojo.schedule(kind.type_code, {"seconds": 0.2}) for _ in range(4)]
    wait_for(lambda: done(after), timeout=30, message="jobs scheduled after Redis came back")
    assert server.process.poll() is None
    assert "messaging" in server.output()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="stops the PostgreSQL server")
def test_server_started_while_postgresql_is_down_waits_for_it(start_server, make_job_type, services_restored):
    kind = make_job_type(worker="tests.kojo_jobs.noop")
    connection.close()
    postgres_cluster("stop")
    server = start_server("--concurrency", "1")
    wait_for(
        lambda: "database unavailable at start-up" in server.output(), timeout=30, message="start-up retries"
    )
    assert server.process.poll() is None, "the server must wait for the database, not exit"
    postgres_cluster("start")
    wait_for(postgres_answers, timeout=30, message="PostgreSQL to come back")
    job = kojo.schedule(kind.type_code)
    wait_for(lambda: done([job]), timeout=60, interval=0.2, message="the job to run once the server is up")
    assert "started on" in server.output()
