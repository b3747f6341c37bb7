"""Chaos: several servers under a steady stream of jobs while a driver keeps breaking things.

For ``KOJO_TEST_CHAOS_SECONDS`` (default 20) the driver SIGKILLs job processes and pooled workers,
SIGKILLs whole servers (and starts replacements), restarts Redis, terminates the servers' PostgreSQL
sessions and loses the answer to a claim's commit (two of the servers reach PostgreSQL through a
proxy that can do that); some jobs hold their own row locked for longer than HEARTBEAT_TIMEOUT.
Afterwards every job must have succeeded, a singleton type never overlapped, a limited type never
exceeded its limit, every cron tick made exactly one job, the changelog must explain every attempt
that did not end well, and each job ran (counted outside kojo, in a file) no more often than it was
claimed and started, never twice under one fence, with its recorded success its own run's.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import time
from collections import defaultdict
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

import kojo
from kojo.models import Job, JobStateChange, Server
from kojo.readiness import limit_to
from kojo.states import TERMINAL, JobState
from tests.server.conftest import wait_for
from tests.server.helpers import max_overlap
from tests.server.proxy import CommitAnswerDropper
from tests.server.test_fencing import runs
from tests.services import ensure_services, start_redis, stop_redis

pytestmark = [
    pytest.mark.server,
    pytest.mark.chaos,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="terminates PostgreSQL sessions"),
]

DURATION = float(os.environ.get("KOJO_TEST_CHAOS_SECONDS", "20"))
MODES = ("ondemand", "static", "dynamic")
# Outcomes of an attempt that ended without success and was given another go.
RETRY_OUTCOMES = {"crashed", "orphaned", "interrupted", "panicked", "timed_out"}


@pytest.fixture
def services_restored():
    yield
    ensure_services()


def fault_kill_job_process(rng: random.Random) -> str:
    """SIGKILL a job process or a pooled worker running a job, as the servers' heartbeats list them."""
    pids = [
        child["pid"]
        for children in Server.objects.filter(host=socket.gethostname()).values_list("children", flat=True)
        for child in children
        if child.get("kind") in ("job", "worker") and child.get("job_id")
    ]
    if not pids:
        return "no job process to kill"
    pid = rng.choice(pids)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return f"job process {pid} already gone"
    return f"SIGKILL job process {pid}"


def fault_kill_server(rng: random.Random, servers: list, start) -> str:
    index = rng.randrange(len(servers))
    victim = servers[index]
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    servers[index] = start(index)
    return f"SIGKILL server {victim.pid} ({MODES[index % len(MODES)]}); started {servers[index].pid}"


def fault_restart_redis(rng: random.Random) -> str:
    stop_redis()
    time.sleep(rng.uniform(0.2, 1.0))
    start_redis()
    return "restarted Redis"


def fault_terminate_postgres_sessions(rng: random.Random) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        (count,) = cursor.fetchone()
    return f"terminated {count} PostgreSQL sessions"


def fault_lose_claim_answer(rng: random.Random, proxy: CommitAnswerDropper) -> str:
    proxy.rearm()
    return "the answer to the next claim through the proxy is lost"


def test_chaos(start_server, make_job_type, services_restored, settings, tmp_path):
    settings.KOJO_LOCK_BACKEND = "redis"
    rng = random.Random(int(os.environ.get("KOJO_TEST_CHAOS_SEED", time.time())))
    retry = {"max_attempts": 100, "retry_interval": "PT0S", "retry_jitter": False}
    logged = "tests.kojo_jobs.logged_sleep"
    plain = make_job_type("chaos_plain", worker=logged, **retry)
    single = make_job_type("chaos_single", worker=logged, can_work_in_parallel=False, **retry)
    limited = make_job_type("chaos_limited", worker=logged, schedule_limit=2, **retry)
    bucketed = make_job_type("chaos_bucketed", worker=logged, readiness=limit_to(1, key="customer"), **retry)
    locker = make_job_type("chaos_locker", worker="tests.kojo_jobs.holds_own_row", **retry)
    ticking = make_job_type("chaos_cron", worker="tests.kojo_jobs.noop", cron_expression="* * * * *", **retry)
    kinds = [plain, single, limited, bucketed, locker]
    run_log = tmp_path / "runs"

    proxy = CommitAnswerDropper(marker=b"claim_token")
    proxy.dropped.set()  # armed by the fault only

    def start(index: int):
        through_proxy = {"KOJO_TEST_DB_PORT": str(proxy.port)} if index < 2 else {}
        return start_server("--mode", MODES[index % len(MODES)], "--concurrency", "3", **through_proxy)

    servers = [start(index) for index in range(len(MODES))]
    began = timezone.now()

    def kill_a_server(rng: random.Random) -> str:
        return fault_kill_server(rng, servers, start)

    faults = [
        fault_kill_job_process,
        fault_kill_job_process,
        kill_a_server,
        fault_terminate_postgres_sessions,
        lambda rng: fault_lose_claim_answer(rng, proxy),
    ]
    if os.environ.get("KOJO_TEST_CHAOS_REDIS", "1") == "1":
        faults.append(fault_restart_redis)
    log, scheduled = [], 0
    deadline = time.monotonic() + DURATION
    next_fault = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        try:
            for _ in range(3):
                kind = rng.choice(kinds)
                params = {
                    "seconds": rng.uniform(0.02, 0.3),
                    "customer": rng.choice("abc"),
                    "log": str(run_log),
                }
                if kind is locker:  # its row locked past HEARTBEAT_TIMEOUT, now and then
                    params["seconds"] = rng.choice([0.05, 0.2, settings.KOJO_HEARTBEAT_TIMEOUT + 1])
                kojo.schedule(kind.type_code, params)
                scheduled += 1
            if time.monotonic() >= next_fault:
                # The first fault is always a whole server killed, so every run has a SIGKILL: a job
                # process picked at random may have finished before the signal.
                fault = rng.choice(faults) if log else kill_a_server
                log.append(fault(rng))
                next_fault = time.monotonic() + rng.uniform(1.0, 3.0)
        except Exception as error:  # noqa: BLE001 - our own connection may be one of those cut
            log.append(f"driver: {type(error).__name__}: {error}")
            connection.close()
        time.sleep(0.1)
    ended = timezone.now()

    def settled():
        try:
            return not Job.objects.exclude(state__in=TERMINAL).exclude(job_type=ticking).exists()
        except Exception:  # noqa: BLE001
            connection.close()
            return False

    print(f"chaos: {scheduled} jobs scheduled; faults:", *log, sep="\n  ")
    wait_for(settled, timeout=120, interval=0.5, message=f"every job to finish after: {log}")
    assert scheduled > 0 and any(entry.startswith("SIGKILL") for entry in log), log

    # No job lost: everything scheduled succeeded, however often it was interrupted.
    states = dict(Job.objects.exclude(job_type=ticking).values_list("state").annotate(n=models_count()))
    assert states == {JobState.COMPLETE_SUCCESS: scheduled}, (states, log)
    assert max_overlap(single) == 1
    assert max_overlap(limited) <= 2
    for customer in "abc":
        assert max_overlap_for(bucketed, customer) <= 1

    # Every minute tick while servers ran made exactly one cron job (the constraint forbids more).
    ticks = set(Job.objects.filter(job_type=ticking).values_list("cron_tick", flat=True))
    expected = set(minute_ticks(began + timedelta(seconds=15), ended - timedelta(seconds=15)))
    assert expected <= ticks, (sorted(expected), sorted(ticks), log)

    # The changelog explains every attempt: each claim is matched by a recorded end, and every
    # return to waiting from working names its cause.
    changes = JobStateChange.objects.filter(job__job_type__in=kinds)
    claims = changes.filter(to_state=JobState.WORKING).count()
    endings = changes.filter(from_state=JobState.WORKING).count()
    assert claims == endings
    returned = changes.filter(from_state=JobState.WORKING, to_state=JobState.WAITING)
    for outcome, reason in returned.values_list("outcome", "reason"):
        assert outcome in RETRY_OUTCOMES and reason, (outcome, reason)
    assert all(server.process.poll() is None for server in servers), log

    # Each run counted outside kojo: never more runs than started attempts (a claim handed back "not
    # started" must not have run), never two runs under one fence, and each success is its own run's.
    started = defaultdict(int)
    for job_id, reason in changes.filter(from_state=JobState.WORKING).values_list("job_id", "reason"):
        if not reason.startswith("not started"):
            started[job_id] += 1
    ran = runs(run_log)
    for job in Job.objects.filter(job_type__in=kinds).only("pk", "fence"):
        fences = [fence for fence, event in ran[job.pk] if event == "start"]
        assert len(fences) == len(set(fences)), (job.pk, ran[job.pk], log)
        assert len(fences) <= started[job.pk], (job.pk, ran[job.pk], started[job.pk], log)
        assert (job.fence, "end") in ran[job.pk], (job.pk, job.fence, ran[job.pk], log)
    proxy.__exit__()


def models_count():
    from django.db.models import Count

    return Count("id")


def max_overlap_for(job_type, customer: str) -> int:
    events = []
    changes = JobStateChange.objects.filter(job__job_type=job_type, job__params__customer=customer)
    for change in changes.order_by("id"):
        if change.to_state == JobState.WORKING:
            events.append((change.at, 1))
        elif change.from_state == JobState.WORKING:
            events.append((change.at, -1))
    running = peak = 0
    for _, delta in sorted(events):
        running += delta
        peak = max(peak, running)
    return peak


def minute_ticks(start, end):
    tick = start.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while tick <= end:
        yield tick
        tick += timedelta(minutes=1)
