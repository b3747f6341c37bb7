"""Servers with ``KOJO_LOCK_BACKEND = "postgres"``: the fleet's locks in the database, no Redis."""

from __future__ import annotations

import os
import signal

import pytest
from django.db import connection

import kojo
from kojo.models import Job, LockHold
from kojo.states import JobState
from tests.server.conftest import wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the postgres lock backend"),
]

POSTGRES_LOCKS = {"KOJO_TEST_SET_LOCK_BACKEND": "postgres"}


def leaders() -> list[int]:
    return list(LockHold.objects.filter(name="housekeeping").values_list("owner__pid", flat=True))


def test_one_of_two_servers_leads_and_the_other_takes_over_when_it_dies(start_server, make_job_type):
    kind = make_job_type(worker="tests.kojo_jobs.noop")
    first = start_server("--concurrency", "2", **POSTGRES_LOCKS)
    second = start_server("--concurrency", "2", **POSTGRES_LOCKS)
    wait_for(lambda: len(leaders()) == 1, timeout=30, message="one housekeeping leader")
    assert "locks postgres" in first.output()
    jobs = [kojo.schedule(kind.type_code) for _ in range(20)]
    ids = [job.pk for job in jobs]
    wait_for(
        lambda: Job.objects.filter(pk__in=ids, state=JobState.COMPLETE_SUCCESS).count() == len(ids),
        timeout=30,
        message="the jobs",
    )
    [leader] = leaders()
    # The leading housekeeper is a child of one server: kill that server's whole tree.
    dead, survivor = (first, second) if leader in children_of(first) else (second, first)
    dead.kill_tree()
    wait_for(
        lambda: leaders() and leaders()[0] in children_of(survivor),
        timeout=30,
        message="the other server's housekeeper to lead",
    )
    assert len(leaders()) == 1
    survivor.signal(signal.SIGTERM)
    assert survivor.wait(30) == 0


def children_of(server) -> set[int]:
    """The pids in the server's process group (its housekeeper among them)."""
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == server.pid:
                    pids.add(int(entry))
            except ProcessLookupError:
                continue
    return pids
