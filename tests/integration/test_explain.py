"""kojo.explain and ``manage.py kojo_explain``: the first blocker from the claim's own rules."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import F
from django.utils import timezone

import kojo
from kojo.explain import explain
from kojo.models import Job, Server
from kojo.registry import registry
from kojo.states import JobState

pytestmark = pytest.mark.django_db


@pytest.fixture
def server_row(db):
    """A server row as a running kojo_server keeps it: fresh heartbeat, every worker of this code."""

    def make(queues=(), workers=None, **fields) -> Server:
        workers = list(registry.worker_paths()) if workers is None else workers
        return Server.objects.create(host="node-1", pid=4242, queues=list(queues), workers=workers, **fields)

    return make


def working(job: Job, server: Server | None = None) -> None:
    Job.objects.filter(pk=job.pk).update(
        state=JobState.WORKING, attempts=1, fence=F("fence") + 1, server=server, started_at=timezone.now()
    )


def first_blocker(job: Job) -> str:
    return explain(job.pk).blockers[0]


def test_a_runnable_job_says_nothing_blocks_it_and_its_place_in_line(make_job_type, server_row):
    server_row()
    kind = make_job_type()
    ahead = kojo.schedule(kind.type_code, importance=5)
    job = kojo.schedule(kind.type_code)
    explanation = explain(job.pk)
    assert explanation.runnable and explanation.blockers == []
    assert explanation.notes == ["1 due job(s) of queue 'default' come before it in claim order"]
    assert explain(ahead.pk).notes == ["0 due job(s) of queue 'default' come before it in claim order"]


def test_not_due_until_its_start_time(make_job_type, server_row):
    server_row()
    job = kojo.schedule(make_job_type().type_code, delay=3600)
    assert first_blocker(job).startswith(f"not due until {job.start_after.isoformat()} (in 3")


def test_a_disabled_type_comes_first(make_job_type, server_row):
    server_row()
    kind = make_job_type()
    job = kojo.schedule(kind.type_code, delay=60)
    kind.is_enabled = False
    kind.save()
    blockers = explain(job.pk).blockers
    assert blockers[0].endswith("is disabled") and blockers[1].startswith("not due until")


def test_a_dependency_still_working_and_one_that_failed(make_job_type, server_row):
    server_row()
    kind = make_job_type()
    running = kojo.schedule(kind.type_code)
    failed = kojo.schedule(kind.type_code)
    working(running)
    Job.objects.filter(pk=failed.pk).update(state=JobState.COMPLETE_FAILED)
    job = kojo.schedule(kind.type_code, depends_on=[running])
    Job.objects.create(job_type=kind)  # unrelated
    assert explain(job.pk).blockers == [f"dependency {running.pk} is working"]
    from kojo.models import JobDependency

    JobDependency.objects.create(job=job, depends_on=failed)
    assert explain(job.pk).blockers[1] == (
        f"dependency {failed.pk} is complete_failed: this job runs only once it is retried and succeeds"
    )


def test_a_type_at_its_limit_names_the_working_jobs(make_job_type, server_row):
    server_row()
    kind = make_job_type(schedule_limit=2, schedule_limit_allowance=10)
    busy = [kojo.schedule(kind.type_code) for _ in range(2)]
    for job in busy:
        working(job)
    job = kojo.schedule(kind.type_code)
    assert first_blocker(job) == (
        f"its type {kind.type_code!r} is at its limit: 2/2 working (jobs {busy[0].pk}, {busy[1].pk})"
    )


def test_a_singleton_says_so(make_job_type, server_row):
    server_row()
    kind = make_job_type(can_work_in_parallel=False, schedule_limit_allowance=5)
    busy = kojo.schedule(kind.type_code)
    working(busy)
    job = kojo.schedule(kind.type_code)
    assert first_blocker(job) == f"its type {kind.type_code!r} is a singleton: 1/1 working (jobs {busy.pk})"


def test_a_full_bucket_names_its_key_and_jobs(make_job_type, server_row):
    server_row()
    kind = make_job_type(readiness={"limit": 1, "key": "customer"})
    other = kojo.schedule(kind.type_code, {"customer": 8})
    busy = kojo.schedule(kind.type_code, {"customer": 7})
    working(busy)
    job = kojo.schedule(kind.type_code, {"customer": 7})
    assert first_blocker(job) == f"bucket customer=7 is at 1/1 working (jobs {busy.pk})"
    assert explain(other.pk).runnable


def test_a_readiness_check_that_says_no_and_one_that_raises(make_job_type, server_row, tmp_path):
    server_row()
    gated = make_job_type(readiness={"check": "tests.kojo_jobs.gate_open"})
    job = kojo.schedule(gated.type_code, {"gate": str(tmp_path / "gate")})
    assert first_blocker(job) == "readiness check tests.kojo_jobs.gate_open returned False"
    (tmp_path / "gate").touch()
    assert explain(job.pk).runnable
    broken = make_job_type(
        readiness={"any": [{"check": "tests.kojo_jobs.broken_check"}, {"check": "tests.kojo_jobs.is_urgent"}]}
    )
    job = kojo.schedule(broken.type_code)
    assert first_blocker(job) == (
        "none of its alternatives holds: readiness check tests.kojo_jobs.broken_check raised "
        "RuntimeError: this check is broken; or readiness check tests.kojo_jobs.is_urgent returned False"
    )


def test_no_server_row_then_none_for_its_queue_then_none_with_its_worker(make_job_type, server_row):
    kind = make_job_type(queue="mail")
    job = kojo.schedule(kind.type_code)
    assert first_blocker(job) == "no live server: start `manage.py kojo_server`"
    stale = server_row()
    Server.objects.filter(pk=stale.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    assert first_blocker(job) == "no live server: start `manage.py kojo_server`"
    server_row(queues=["reports"])
    assert first_blocker(job) == "queue 'mail' is served by no live server (they serve reports)"
    server_row(workers=["tests.kojo_jobs.echo"])
    assert first_blocker(job) == (
        "no live server serving queue 'mail' has its worker 'tests.kojo_jobs.noop' (deploy the code "
        "that registers it, then restart the servers or send them SIGHUP)"
    )
    server_row(workers=None)  # a version that does not list its workers: it may
    Server.objects.filter(workers=["tests.kojo_jobs.echo"]).update(workers=None)
    assert explain(job.pk).runnable


@pytest.mark.parametrize(
    "state, expected",
    [
        (JobState.WORKING, "it is working (attempt 1) on server[4242]@node-1 for "),
        (
            JobState.HOLD,
            "it is held by ops: waiting on the vendor; an operator's release makes it waiting again",
        ),
        (JobState.CANCELED, "it has finished (canceled) by ops: waiting on the vendor; only a retry"),
    ],
)
def test_a_job_that_is_not_waiting_says_what_it_is_doing(make_job_type, server_row, state, expected):
    from kojo.models import JobStateChange

    server = server_row()
    job = kojo.schedule(make_job_type().type_code)
    if state == JobState.WORKING:
        working(job, server)
    else:
        Job.objects.filter(pk=job.pk).update(state=state)
        JobStateChange.objects.create(job=job, to_state=state, reason="waiting on the vendor", actor="ops")
    assert first_blocker(job).startswith(expected)


def test_the_command_prints_it_and_says_so_for_a_missing_job(make_job_type, server_row):
    server_row()
    job = kojo.schedule(make_job_type().type_code, delay=60)
    out = StringIO()
    call_command("kojo_explain", str(job.pk), stdout=out)
    assert out.getvalue().startswith(f"job {job.pk} (waiting) is not running: not due until ")
    out = StringIO()
    call_command("kojo_explain", str(job.pk), "--json", stdout=out)
    record = json.loads(out.getvalue())
    assert record["runnable"] is False and record["blockers"][0].startswith("not due until")
    with pytest.raises(CommandError, match="there is no job 999999"):
        call_command("kojo_explain", "999999")


def test_the_admin_page_of_a_job_shows_why(admin_client, make_job_type, server_row):
    from django.urls import reverse

    server_row()
    job = kojo.schedule(make_job_type().type_code, delay=60)
    page = admin_client.get(reverse("admin:kojo_job_change", args=[job.pk])).content.decode()
    assert "why not running" in page.lower() and "not due until" in page


def test_attempts_are_counted_by_how_they_ended(admin_client, make_job_type, server_row):
    """Kōjō's times crashed, retried, held: from the changelog, in the explanation, the command's JSON
    and the admin page."""
    from django.urls import reverse

    from kojo.models import JobStateChange
    from kojo.states import Outcome

    server_row()
    job = kojo.schedule(make_job_type().type_code)
    assert job.outcome_counts() == {} and explain(job.pk).notes[-1].startswith("0 due job(s)")
    for outcome in (Outcome.CRASHED, Outcome.RETRY, Outcome.CRASHED, Outcome.TIMED_OUT):
        JobStateChange.objects.create(
            job=job, from_state=JobState.WORKING, to_state=JobState.WAITING, outcome=outcome
        )
    expected = {Outcome.RETRY: 1, Outcome.CRASHED: 2, Outcome.TIMED_OUT: 1}
    assert job.outcome_counts() == expected and list(job.outcome_counts()) == list(expected)
    assert explain(job.pk).notes[-1] == "attempts so far: retry 1, crashed 2, timed_out 1"
    out = StringIO()
    call_command("kojo_explain", str(job.pk), "--json", stdout=out)
    assert json.loads(out.getvalue())["outcomes"] == expected
    page = admin_client.get(reverse("admin:kojo_job_change", args=[job.pk])).content.decode()
    assert "attempts by outcome" in page.lower() and "retry 1, crashed 2, timed_out 1" in page
