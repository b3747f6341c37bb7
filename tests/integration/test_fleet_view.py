"""The fleet view: kojo.fleet snapshots, manage.py kojo_status, the metrics page and the admin pages."""

from __future__ import annotations

import json
import os
import re
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

import kojo
from kojo import fleet
from kojo.management.commands.kojo_status import NO_LIVE_SERVER
from kojo.metrics import escape_label
from kojo.models import Job, JobStateChange, Server
from kojo.states import JobState, Outcome

pytestmark = pytest.mark.django_db

HOUR = timedelta(hours=1)


@pytest.fixture
def fleet_rows(make_job_type):
    """A live server running one job (plus its idle housekeeper), a stale server, and a waiting job."""
    now = timezone.now()
    kind = make_job_type("fleet_report")
    running = kojo.schedule(kind.type_code, {"n": 1})
    Job.objects.filter(pk=running.pk).update(state=JobState.WORKING, started_at=now, progress=40)
    waiting = kojo.schedule(kind.type_code, {"n": 2})
    live = Server.objects.create(
        host="node-a",
        pid=4100,
        mode="ondemand",
        concurrency=4,
        heartbeat_at=now,
        children=[
            {"pid": 4102, "kind": "job", "job_id": running.pk, "type_code": kind.type_code},
            {"pid": 4101, "kind": "housekeeper", "job_id": None, "type_code": None},
        ],
    )
    stale = Server.objects.create(
        host="node-b", pid=5100, heartbeat_at=now - timedelta(seconds=60), children=[]
    )
    return {"kind": kind, "running": running, "waiting": waiting, "live": live, "stale": stale}


def test_snapshot_lists_servers_alive_or_stale_with_the_job_each_child_runs(fleet_rows, settings):
    settings.KOJO_HEARTBEAT_TIMEOUT = 15.0
    view = fleet.snapshot()
    by_host = {server.host: server for server in view.servers}
    live, stale = by_host["node-a"], by_host["node-b"]
    assert (live.alive, live.status, live.busy, live.concurrency) == (True, "live", 1, 4)
    assert (stale.alive, stale.status) == (False, "stale")
    assert stale.heartbeat_age >= 59
    assert [server.host for server in view.live_servers] == ["node-a"]
    housekeeper, job_child = live.children
    assert (housekeeper.kind, housekeeper.job_id) == ("housekeeper", None)
    assert job_child.job_id == fleet_rows["running"].pk
    assert (job_child.type_code, job_child.job_state, job_child.progress) == ("fleet_report", "working", 40)
    assert job_child.job_started_at is not None


def test_snapshot_counts_every_state_of_every_type_zeros_included(fleet_rows, make_job_type):
    make_job_type("fleet_idle")
    jobs = fleet.snapshot().jobs
    assert jobs["fleet_report"] == {state: 0 for state in JobState.values} | {"working": 1, "waiting": 1}
    assert jobs["fleet_idle"] == dict.fromkeys(JobState.values, 0)


def finish(job, state, at, outcome=""):
    Job.objects.filter(pk=job.pk).update(state=state, state_changed_at=at, finished_at=at)
    JobStateChange.objects.create(job=job, from_state="working", to_state=state, outcome=outcome, at=at)


def test_last_hour_counts_jobs_finished_and_failed_attempts_in_the_window_only(make_job_type):
    kind = make_job_type("fleet_window")
    now = timezone.now()
    old = [kojo.schedule(kind.type_code) for _ in range(2)]
    # Older rows first, as in life: changelog ids grow with time.
    finish(old[0], JobState.COMPLETE_SUCCESS, now - 2 * HOUR)
    finish(old[1], JobState.COMPLETE_FAILED, now - 2 * HOUR, Outcome.CRASHED)
    recent = [kojo.schedule(kind.type_code) for _ in range(4)]
    finish(recent[0], JobState.COMPLETE_SUCCESS, now - timedelta(minutes=30))
    finish(recent[1], JobState.COMPLETE_SUCCESS, now - timedelta(minutes=1))
    finish(recent[2], JobState.COMPLETE_FAILED, now - timedelta(minutes=2), Outcome.PANICKED)
    # A failed attempt that was retried counts as a failure; the job itself is not finished.
    JobStateChange.objects.create(
        job=recent[3], from_state="working", to_state="waiting", outcome=Outcome.TIMED_OUT, at=now
    )
    view = fleet.snapshot(now=now + timedelta(seconds=1))
    assert view.finished["fleet_window"] == {"complete_success": 2, "complete_failed": 1, "canceled": 0}
    assert view.failures == {"fleet_window": {Outcome.PANICKED: 1, Outcome.TIMED_OUT: 1}}


def test_scheduling_latency_measures_start_after_to_claim_of_recent_starts(make_job_type):
    kind = make_job_type("fleet_latency")
    now = timezone.now()
    # Outside the window (changelog ids grow with time, so this row comes first).
    early = kojo.schedule(kind.type_code)
    JobStateChange.objects.create(job=early, from_state="waiting", to_state="working", at=now - 2 * HOUR)
    Job.objects.filter(pk=early.pk).update(started_at=now - 2 * HOUR, start_after=now - 3 * HOUR)
    for wait in (1, 2, 3, 4, 10):
        job = kojo.schedule(kind.type_code)
        started = now - timedelta(minutes=5)
        Job.objects.filter(pk=job.pk).update(
            state=JobState.WORKING, start_after=started - timedelta(seconds=wait), started_at=started
        )
        JobStateChange.objects.create(job=job, from_state="waiting", to_state="working", at=started)
    # Started in the window, then sent back to wait for a retry: its start_after is no longer the one
    # that start honoured, so that start is left out rather than measured wrongly.
    retried = kojo.schedule(kind.type_code)
    started = now - timedelta(minutes=3)
    JobStateChange.objects.create(job=retried, from_state="waiting", to_state="working", at=started)
    Job.objects.filter(pk=retried.pk).update(started_at=started, start_after=now + timedelta(minutes=1))
    # Claimed twice in the window: only its latest claim is measured, against its latest start_after.
    twice = kojo.schedule(kind.type_code)
    first, second = now - timedelta(minutes=20), now - timedelta(minutes=4)
    JobStateChange.objects.create(job=twice, from_state="waiting", to_state="working", at=first)
    JobStateChange.objects.create(job=twice, from_state="waiting", to_state="working", at=second)
    Job.objects.filter(pk=twice.pk).update(started_at=second, start_after=second - timedelta(seconds=2.5))
    latency = fleet.snapshot(now=now).latency
    assert (latency.samples, latency.p50, latency.p95, latency.max) == (6, 2.5, 10.0, 10.0)


def test_snapshot_lists_held_locks(db):
    with kojo.mutex("fleet-view-lock") as lock:
        token = lock.token
        view = fleet.snapshot()
    assert view.locks_error == ""
    # Other holds may linger (a killed server's lease runs out on its own): look at ours.
    mine = [(hold.token, hold.pid, hold.limit) for hold in view.locks if hold.name == "fleet-view-lock"]
    assert mine == [(token, os.getpid(), 1)]


def test_an_unreachable_lock_backend_is_reported_not_raised(fleet_rows, settings):
    settings.CACHES = {
        **settings.CACHES,
        "unreachable": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
        },
    }
    settings.KOJO_LOCK_BACKEND = "redis"
    settings.KOJO_REDIS_CACHE = "unreachable"
    view = fleet.snapshot()
    assert view.locks == []
    assert "unreachable" in view.locks_error
    assert view.jobs["fleet_report"]["working"] == 1  # the rest of the view is still there
    out = StringIO()
    call_command("kojo_status", stdout=out)
    assert "Locks: lock backend unreachable" in out.getvalue()


def test_kojo_status_prints_servers_children_jobs_and_the_last_hour(fleet_rows):
    with kojo.mutex("fleet-status-lock"):
        out = StringIO()
        call_command("kojo_status", stdout=out)
    text = out.getvalue()
    assert "Servers: 1 live, 1 stale" in text
    assert re.search(r"node-a\s+4100\s+ondemand\s+1/4", text)
    assert re.search(r"node-b\s+5100 .* stale", text)
    assert f"job 4102: job {fleet_rows['running'].pk} (fleet_report) working for" in text
    assert "housekeeper 4101: idle" in text
    assert "fleet-status-lock" in text
    assert re.search(r"fleet_report\s+1\s+1\s+0\s+0\s+0\s+0", text)
    assert "Last hour" in text


def test_kojo_status_json_is_the_snapshot(fleet_rows):
    out = StringIO()
    call_command("kojo_status", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert data["live_servers"] == 1
    node_a = next(server for server in data["servers"] if server["host"] == "node-a")
    assert node_a["status"] == "live"
    assert {child["pid"]: child["job_id"] for child in node_a["children"]} == {
        4101: None,
        4102: fleet_rows["running"].pk,
    }
    assert data["jobs"]["fleet_report"]["waiting"] == 1
    assert data["scheduling_latency_seconds"]["samples"] == 0


def test_kojo_status_exits_non_zero_when_no_server_is_live(make_job_type):
    Server.objects.create(host="gone", pid=1, heartbeat_at=timezone.now() - timedelta(hours=1))
    out = StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("kojo_status", "--json", stdout=out)
    assert raised.value.returncode == NO_LIVE_SERVER
    assert json.loads(out.getvalue())["live_servers"] == 0  # the view is printed all the same


def test_kojo_status_watch_refreshes_the_given_number_of_times(fleet_rows):
    out = StringIO()
    call_command("kojo_status", "--json", "--watch", "0.01", "--iterations", "3", stdout=out)
    documents = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(documents) == 3
    assert all(document["live_servers"] == 1 for document in documents)


# --- metrics ------------------------------------------------------------------------------------
METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
SAMPLE_LINE = re.compile(rf"^({METRIC_NAME})(?:\{{(.*)\}})? (\S+)$")
LABEL_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(?:,|$)')
UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def parse_exposition(text: str) -> dict[str, dict]:
    """Parse the text format line by line, insisting on HELP and TYPE before a family's samples."""
    assert text.endswith("\n")
    families: dict[str, dict] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert name not in families, f"{name} described twice"
            families[name] = {"help": help_text, "type": None, "samples": []}
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert families[name]["type"] is None and not families[name]["samples"]
            assert kind in ("counter", "gauge", "summary", "histogram", "untyped")
            families[name]["type"] = kind
        else:
            match = SAMPLE_LINE.match(line)
            assert match, f"not a sample line: {line!r}"
            name, label_text, value = match.groups()
            assert families[name]["type"], f"{name} sampled before its TYPE"
            labels, position = {}, 0
            for pair in LABEL_PAIR.finditer(label_text or ""):
                assert pair.start() == position, f"bad label text in {line!r}"
                labels[pair[1]] = re.sub(r"\\[\\\"n]", lambda m: UNESCAPE[m[0]], pair[2])
                position = pair.end()
            assert position == len(label_text or ""), f"bad label text in {line!r}"
            families[name]["samples"].append((labels, float(value)))
    return families


def sample(families, name, **labels):
    values = [value for found, value in families[name]["samples"] if found == labels]
    assert len(values) == 1, f"{name}{labels}: {values}"
    return values[0]


def test_metrics_page_is_valid_exposition_with_the_fleet_figures(fleet_rows, admin_client):
    finish(kojo.schedule("fleet_report"), JobState.COMPLETE_FAILED, timezone.now(), Outcome.PANICKED)
    response = admin_client.get(reverse("kojo:metrics"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    families = parse_exposition(response.content.decode())
    assert all(family["type"] == "gauge" for family in families.values())
    assert sample(families, "kojo_jobs", type="fleet_report", state="waiting") == 1
    assert sample(families, "kojo_jobs", type="fleet_report", state="working") == 1
    assert sample(families, "kojo_jobs", type="fleet_report", state="canceled") == 0
    assert sample(families, "kojo_jobs_working") == 1
    assert sample(families, "kojo_jobs_finished_last_hour", type="fleet_report", state="complete_failed") == 1
    assert sample(families, "kojo_job_failures_last_hour", type="fleet_report", outcome="panicked") == 1
    assert sample(families, "kojo_servers_live") == 1
    assert sample(families, "kojo_servers_stale") == 1
    assert sample(families, "kojo_server_busy_children", host="node-a", pid="4100") == 1
    assert sample(families, "kojo_lock_backend_up") == 1
    assert sample(families, "kojo_scheduling_latency_samples") == 0


def test_metrics_label_values_are_escaped(admin_client):
    host = 'rack "7"\\east\nline two'
    Server.objects.create(host=host, pid=7, heartbeat_at=timezone.now())
    text = admin_client.get(reverse("kojo:metrics")).content.decode()
    assert f'kojo_server_busy_children{{host="{escape_label(host)}",pid="7"}} 0' in text
    assert 'host="rack \\"7\\"\\\\east\\nline two"' in text
    families = parse_exposition(text)
    assert sample(families, "kojo_server_busy_children", host=host, pid="7") == 0


def test_metrics_without_a_token_are_for_logged_in_staff_only(client, admin_client, django_user_model):
    url = reverse("kojo:metrics")
    assert client.get(url).status_code == 403
    client.force_login(django_user_model.objects.create_user("visitor", password="x"))
    assert client.get(url).status_code == 403
    assert admin_client.get(url).status_code == 200


def test_metrics_with_a_token_require_it_as_a_bearer_token(client, admin_client, settings):
    settings.KOJO_METRICS_TOKEN = "s3cret-token"
    url = reverse("kojo:metrics")
    assert client.get(url).status_code == 403
    assert client.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert client.get(url, headers={"Authorization": "Basic s3cret-token"}).status_code == 403
    assert admin_client.get(url).status_code == 403  # a session does not replace the token
    response = client.get(url, headers={"Authorization": "Bearer s3cret-token"})
    assert response.status_code == 200
    assert "# TYPE kojo_jobs gauge" in response.content.decode()


# --- admin --------------------------------------------------------------------------------------
def test_server_changelist_shows_liveness_children_and_links_to_jobs_and_dashboard(fleet_rows, admin_client):
    response = admin_client.get(reverse("admin:kojo_server_changelist"))
    assert response.status_code == 200
    page = response.content.decode()
    job_url = reverse("admin:kojo_job_change", args=[fleet_rows["running"].pk])
    assert f'job 4102: <a href="{job_url}">job {fleet_rows["running"].pk}</a> (fleet_report)' in page
    assert "housekeeper 4101: idle" in page
    assert "node-a" in page and "node-b" in page
    alive = re.findall(r'class="field-alive"><img [^>]*alt="(True|False)"', page)
    assert sorted(alive) == ["False", "True"]  # node-a alive, node-b stale
    assert reverse("admin:kojo_server_dashboard") in page
    assert '<meta http-equiv="refresh" content="5">' in page
    assert (
        admin_client.get(reverse("admin:kojo_server_change", args=[fleet_rows["live"].pk])).status_code == 200
    )
    assert admin_client.get(reverse("admin:kojo_server_add")).status_code == 403


def test_dashboard_shows_counts_last_hour_servers_and_locks(fleet_rows, admin_client):
    finish(kojo.schedule("fleet_report"), JobState.COMPLETE_FAILED, timezone.now(), Outcome.CRASHED)
    with kojo.mutex("fleet-dashboard-lock"):
        response = admin_client.get(reverse("admin:kojo_server_dashboard"))
    assert response.status_code == 200
    page = response.content.decode()
    assert "kojo fleet dashboard" in page
    assert re.search(r"<tr><td>fleet_report</td>(<td>\d+</td>){6}</tr>", page)
    assert (
        "<tr><td>fleet_report</td><td>1</td><td>1</td><td>0</td><td>0</td><td>1</td><td>0</td></tr>" in page
    )
    assert "1 crashed" in page
    assert "fleet-dashboard-lock" in page
    assert reverse("admin:kojo_job_change", args=[fleet_rows["running"].pk]) in page
    assert '<meta http-equiv="refresh"' in page


def test_dashboard_is_refused_to_users_without_admin_access(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("visitor", password="x"))
    response = client.get(reverse("admin:kojo_server_dashboard"))
    assert response.status_code == 302  # to the admin login


def test_the_fleet_view_names_types_whose_waiting_jobs_no_live_server_can_take(make_job_type):
    from kojo.registry import registry

    Server.objects.create(host="old", pid=1, queues=["default"], workers=["tests.kojo_jobs.echo"])
    Server.objects.create(host="mail", pid=2, queues=["mail"], workers=list(registry.worker_paths()))
    served = make_job_type("served", worker="tests.kojo_jobs.echo")
    new_code = make_job_type("new_code", worker="tests.kojo_jobs.noop")
    reports = make_job_type("reports", worker="tests.kojo_jobs.echo", queue="reports")
    idle = make_job_type("idle_type", worker="tests.kojo_jobs.noop")  # nothing waiting: not listed
    for kind in (served, new_code, reports):
        kojo.schedule(kind.type_code)
    view = fleet.snapshot()
    assert view.unserved == {
        "new_code": "no live server serving queue 'default' registers its worker 'tests.kojo_jobs.noop'",
        "reports": "no live server serves queue 'reports'",
    }
    assert idle.type_code not in view.unserved
    assert view.as_dict()["unserved_types"] == view.unserved
    out = StringIO()
    call_command("kojo_status", stdout=out)
    assert (
        "  reports: its waiting jobs wait for a server: no live server serves queue 'reports'"
        in out.getvalue()
    )
