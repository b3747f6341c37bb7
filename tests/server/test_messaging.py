"""Cross-node messages over Redis: wake-ups and aborts arrive long before polling would find them."""

import threading
import time

import pytest

import kojo
from kojo.models import Job
from kojo.states import JobState
from tests.server.conftest import wait_for

pytestmark = pytest.mark.server

# Servers in these tests poll and heartbeat so rarely that only a message can explain a quick reaction.
SLOW_POLLING = {
    "KOJO_TEST_SET_LOCK_BACKEND": "redis",
    "KOJO_TEST_SET_POLL_INTERVAL": "30",
    "KOJO_TEST_SET_HEARTBEAT_INTERVAL": "30",
    "KOJO_TEST_SET_HEARTBEAT_TIMEOUT": "120",
}


@pytest.fixture
def redis_messaging(settings):
    settings.KOJO_LOCK_BACKEND = "redis"


@pytest.mark.parametrize("mode", ["ondemand", "static"])
def test_a_new_job_wakes_an_idle_server(start_server, make_job_type, redis_messaging, mode):
    kind = make_job_type(worker="tests.kojo_jobs.echo")
    server = start_server("--mode", mode, "--concurrency", "1", **SLOW_POLLING)
    # Let the server start and settle into its 30 s wait.
    wait_for(lambda: "started on" in server.output(), message="the server to start")
    time.sleep(1.0)  # past its first claim; from here only a message wakes it before 30 s
    job = kojo.schedule(kind.type_code, {"n": 1})
    wait_for(
        lambda: Job.objects.filter(pk=job.pk, state=JobState.COMPLETE_SUCCESS).exists(),
        timeout=10,
        message="the woken server to run the job",
    )


def test_abort_is_delivered_to_the_node_running_the_job(start_server, make_job_type, redis_messaging):
    kind = make_job_type(worker="tests.kojo_jobs.hang")
    job = kojo.schedule(kind.type_code)
    start_server("--concurrency", "1", **SLOW_POLLING)
    wait_for(lambda: Job.objects.filter(pk=job.pk, state=JobState.WORKING).exists(), timeout=40)
    wait_for(lambda: Job.objects.filter(pk=job.pk).exclude(pid=None).exists())
    kojo.abort(job.pk, by="test")
    wait_for(
        lambda: Job.objects.filter(pk=job.pk, state=JobState.CANCELED).exists(),
        timeout=10,
        message="the abort message to stop the job (the heartbeat would take 30 s)",
    )


def test_listen_follows_job_events_with_a_filter(make_job_type, redis_messaging, transactional_db):
    kind = make_job_type(worker="tests.kojo_jobs.echo")
    other = make_job_type(worker="tests.kojo_jobs.echo")
    seen = []
    ready = threading.Event()

    def follow():
        ready.set()
        kojo.listen(
            lambda event: seen.append(event) or len(seen) < 2, {"type_code": kind.type_code}, timeout=10
        )

    listener = threading.Thread(target=follow)
    listener.start()
    ready.wait()
    time.sleep(0.3)  # the subscription is made inside listen()
    kojo.schedule(other.type_code)
    first = kojo.schedule(kind.type_code)
    kojo.cancel(first.pk, by="test")
    listener.join(15)
    assert [(e["job_id"], e["from_state"], e["to_state"]) for e in seen] == [
        (first.pk, "", "waiting"),
        (first.pk, "waiting", "canceled"),
    ]


def test_listen_follows_lifecycle_events_from_a_server(start_server, make_job_type, redis_messaging):
    """A pooled worker starting, and a due job its claim postponed (its type at its limit), reach a
    listener on another node as events; job changes come named as such."""
    kind = make_job_type(worker="tests.kojo_jobs.sleep", schedule_limit=1)
    seen = []
    ready = threading.Event()

    def follow():
        ready.set()
        kojo.listen(
            lambda event: seen.append(event) or not any(e["event"] == "job_postponed" for e in seen),
            lambda event: event["event"] != "job_state_changed" or event.get("type_code") == kind.type_code,
            timeout=30,
            lifecycle=True,
        )

    listener = threading.Thread(target=follow)
    listener.start()
    ready.wait()
    time.sleep(0.3)  # the subscription is made inside listen()
    server = start_server("--mode", "static", "--concurrency", "2", KOJO_TEST_SET_LOCK_BACKEND="redis")
    first = kojo.schedule(kind.type_code, {"seconds": 5})
    second = kojo.schedule(kind.type_code, {"seconds": 0})
    listener.join(40)
    started = [e for e in seen if e["event"] == "worker_started"]
    assert started and {e["server_pid"] for e in started} == {server.pid}
    assert {"pid", "index", "host"} <= set(started[0])
    postponed = [e for e in seen if e["event"] == "job_postponed"]
    # Either job may be the one passed over: two workers' claims can each lock one candidate, and the
    # one that gets the type's lock first takes its own.
    assert len(postponed) == 1 and (postponed[0]["type_code"], postponed[0]["reason"]) == (
        kind.type_code,
        "limited",
    )
    assert postponed[0]["job_id"] in {first.pk, second.pk}
    changes = [(e["job_id"], e["to_state"]) for e in seen if e["event"] == "job_state_changed"]
    assert (first.pk, "working") in changes
