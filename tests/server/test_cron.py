"""Cron with several servers: exactly one job per (type, tick)."""

import os
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from kojo.models import Job
from kojo.states import JobState
from tests.server.conftest import wait_for

pytestmark = pytest.mark.server

# The issue asks for three minutes in CI's main pass; other passes may run a shorter window.
CRON_SECONDS = float(os.environ.get("KOJO_TEST_CRON_SECONDS", "65"))


def test_three_servers_create_exactly_one_job_per_minute(start_server, make_job_type):
    every_minute = make_job_type(worker="tests.kojo_jobs.noop", cron_expression="* * * * *")
    began = timezone.now()
    servers = [start_server("--concurrency", "2") for _ in range(3)]
    time.sleep(CRON_SECONDS)  # the scenario's length, not a wait for a result
    wait_for(lambda: not Job.objects.filter(job_type=every_minute).exclude(state="complete_success").exists())
    ticks = list(
        Job.objects.filter(job_type=every_minute).order_by("cron_tick").values_list("cron_tick", flat=True)
    )
    ended = timezone.now()
    expected_ticks = (
        int(
            (ended.replace(second=0, microsecond=0) - began.replace(second=0, microsecond=0))
            / timedelta(minutes=1)
        )
        + 1
    )
    assert len(ticks) == len(set(ticks))
    assert all(tick.second == 0 and tick.microsecond == 0 for tick in ticks)
    # Every minute boundary the servers lived through has its job (the first minute may predate them).
    assert expected_ticks - 1 <= len(ticks) <= expected_ticks
    assert all(b - a == timedelta(minutes=1) for a, b in zip(ticks, ticks[1:], strict=False))
    for server in servers:
        server.signal(15)


def test_a_continuous_singleton_from_keep_instances_runs_one_after_another(
    start_server, make_job_type, tmp_path
):
    from tests.server.helpers import max_overlap

    kind = make_job_type(
        worker="tests.kojo_jobs.sleep", keep_instances=1, can_work_in_parallel=False, max_attempts=1
    )
    start_server("--concurrency", "2", KOJO_TEST_SET_HOUSEKEEPING_INTERVAL="0.2")
    start_server("--concurrency", "2", KOJO_TEST_SET_HOUSEKEEPING_INTERVAL="0.2")
    wait_for(
        lambda: Job.objects.filter(job_type=kind, state=JobState.COMPLETE_SUCCESS).count() >= 5, timeout=40
    )
    assert max_overlap(kind) == 1
    assert Job.objects.filter(job_type=kind, state__in=[JobState.WAITING, JobState.WORKING]).count() <= 1
