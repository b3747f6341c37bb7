"""kojo_status against a real kojo_server: the server and the job its child runs appear in --json."""

import json
from io import StringIO

import pytest
from django.core.management import call_command

import kojo
from kojo.models import Job
from kojo.states import JobState
from tests.server.conftest import wait_for

pytestmark = pytest.mark.server


def status() -> dict:
    out = StringIO()
    call_command("kojo_status", "--json", stdout=out)
    return json.loads(out.getvalue())


def test_kojo_status_json_lists_a_running_server_with_its_children(start_server, make_job_type):
    kind = make_job_type(worker="tests.kojo_jobs.hang")
    job = kojo.schedule(kind.type_code)
    server = start_server("--concurrency", "2")
    wait_for(lambda: Job.objects.filter(pk=job.pk, state=JobState.WORKING).exists(), message="the claim")

    def listed():
        data = status()
        mine = [entry for entry in data["servers"] if entry["pid"] == server.pid]
        running = [child for child in mine[0]["children"] if child["job_id"] == job.pk] if mine else []
        return (data, mine[0], running[0]) if running else None

    data, entry, child = wait_for(listed, message="kojo_status to list the server's job child")
    assert data["live_servers"] == 1
    assert entry["status"] == "live" and entry["alive"] is True
    assert entry["concurrency"] == 2
    assert child["type_code"] == kind.type_code
    assert child["job_state"] == JobState.WORKING
    assert child["pid"] != server.pid
    assert "housekeeper" in {child["kind"] for child in entry["children"]}
    assert data["jobs"][kind.type_code]["working"] == 1
    assert data["scheduling_latency_seconds"]["samples"] == 1  # the claim this server made
