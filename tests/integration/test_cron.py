from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command

from kojo.cron import latest_tick, next_ticks, schedule_due_ticks
from kojo.models import Job, JobType
from kojo.pruning import prune_expired

pytestmark = pytest.mark.django_db
NOON = datetime(2026, 11, 26, 12, 0, 30, tzinfo=UTC)


def test_latest_and_next_ticks():
    assert latest_tick("*/15 * * * *", NOON) == datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    assert latest_tick("* * * * *", datetime(2026, 1, 1, 0, 5, tzinfo=UTC)) == datetime(
        2026, 1, 1, 0, 5, tzinfo=UTC
    )
    assert next_ticks("0 * * * *", NOON, 2) == [
        datetime(2026, 11, 26, 13, tzinfo=UTC),
        datetime(2026, 11, 26, 14, tzinfo=UTC),
    ]


def test_one_job_per_tick_however_often_it_runs(make_job_type):
    kind = make_job_type(cron_expression="* * * * *")
    assert len(schedule_due_ticks(NOON)) == 1
    assert schedule_due_ticks(NOON) == []
    assert schedule_due_ticks(NOON + timedelta(seconds=20)) == []
    job = Job.objects.get(job_type=kind)
    assert job.cron_tick == job.start_after == datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_missed_ticks_collapse_into_the_newest(make_job_type):
    kind = make_job_type(cron_expression="* * * * *")
    schedule_due_ticks(NOON)
    created = schedule_due_ticks(NOON + timedelta(minutes=10))
    assert [job.cron_tick for job in created] == [datetime(2026, 11, 26, 12, 10, tzinfo=UTC)]
    assert Job.objects.filter(job_type=kind).count() == 2


def test_a_tick_never_runs_twice_even_after_its_job_was_pruned(make_job_type):
    kind = make_job_type(cron_expression="* * * * *", auto_delete_interval_duration="PT0S")
    schedule_due_ticks(NOON)
    Job.objects.filter(job_type=kind).update(state="complete_success", delete_after=NOON - timedelta(days=1))
    assert prune_expired() == 1
    assert schedule_due_ticks(NOON) == []


def test_a_new_type_waits_for_its_next_tick(make_job_type):
    make_job_type(cron_expression="0 3 * * *")
    assert schedule_due_ticks(NOON) == []
    assert len(schedule_due_ticks(datetime(2026, 11, 27, 3, 0, 5, tzinfo=UTC))) == 1


def test_disabled_types_and_full_allowances_get_no_cron_jobs(make_job_type):
    make_job_type(cron_expression="* * * * *", is_enabled=False)
    full = make_job_type(cron_expression="* * * * *", schedule_limit_allowance=1)
    Job.objects.create(job_type=full)
    assert schedule_due_ticks(NOON) == []
    assert JobType.objects.get(pk=full.pk).last_cron_tick is not None


@pytest.mark.parametrize(
    ("overflow", "limits", "jobs_after_three_ticks"),
    [
        ("queue", {"schedule_limit": 1}, 3),  # one working, two queued behind it
        ("skip", {"schedule_limit": 1}, 1),  # the ticks during the long run are skipped
        ("skip", {"can_work_in_parallel": False}, 1),
        ("skip", {"schedule_limit": 2}, 2),
        ("skip", {}, 3),  # no limit: nothing to overflow
    ],
)
def test_cron_overflow_queues_or_skips_ticks_behind_a_long_run(
    make_job_type, overflow, limits, jobs_after_three_ticks
):
    kind = make_job_type(cron_expression="* * * * *", cron_overflow=overflow, **limits)
    first = schedule_due_ticks(NOON)
    Job.objects.filter(pk=first[0].pk).update(state="working")  # a run longer than the interval
    for minutes in (1, 2):
        schedule_due_ticks(NOON + timedelta(minutes=minutes))
    assert Job.objects.filter(job_type=kind).count() == jobs_after_three_ticks
    # Once the long run ends, the next tick gets its job again.
    Job.objects.filter(job_type=kind).update(state="complete_success")
    assert len(schedule_due_ticks(NOON + timedelta(minutes=3))) == 1


def test_kojo_prune_deletes_only_expired_finished_jobs(make_job_type):
    kind = make_job_type()
    expired = Job.objects.create(job_type=kind, state="complete_success", delete_after=NOON)
    kept = Job.objects.create(
        job_type=kind, state="complete_success", delete_after=datetime(2999, 1, 1, tzinfo=UTC)
    )
    pending = Job.objects.create(job_type=kind)
    out = StringIO()
    call_command("kojo_prune", stdout=out)
    assert out.getvalue().strip() == "deleted 1 finished jobs"
    assert set(Job.objects.values_list("pk", flat=True)) == {kept.pk, pending.pk}
    assert not Job.objects.filter(pk=expired.pk).exists()
