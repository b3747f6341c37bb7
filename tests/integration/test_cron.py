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


def ticks_over(expression: str, zone: str, day_start_utc: datetime, hours: int = 30) -> list[datetime]:
    """Every distinct tick a housekeeper passing each minute would see over ``hours``."""
    seen = []
    for minute in range(hours * 60):
        tick = latest_tick(expression, day_start_utc + timedelta(minutes=minute), zone)
        if not seen or tick > seen[-1]:
            seen.append(tick)
    return seen[1:]  # the first is the tick before the window


@pytest.mark.parametrize(
    "zone, spring, autumn",
    [
        ("Europe/Berlin", datetime(2026, 3, 28, 22, tzinfo=UTC), datetime(2026, 10, 24, 22, tzinfo=UTC)),
        ("America/New_York", datetime(2026, 3, 8, 4, tzinfo=UTC), datetime(2026, 11, 1, 3, tzinfo=UTC)),
    ],
)
def test_a_daily_cron_in_a_time_zone_runs_once_on_both_clock_change_days(zone, spring, autumn):
    from zoneinfo import ZoneInfo

    local = ZoneInfo(zone)
    # 02:30 does not exist the night clocks go forward: it runs at 03:00, the first minute after.
    (tick,) = ticks_over("30 2 * * *", zone, spring, hours=24)
    assert tick.astimezone(local).strftime("%H:%M") == "03:00"
    # 02:30 happens twice the night clocks go back: it runs once, at the first.
    (tick,) = ticks_over("30 2 * * *", zone, autumn, hours=24)
    assert tick.astimezone(local).strftime("%H:%M") == "02:30" and tick.astimezone(local).fold == 0
    # Every half hour of wall-clock time, each wall time once: the skipped hour's two ticks are the
    # change itself, the repeated hour's ticks run at its first pass.
    walls = [tick.astimezone(local).strftime("%H:%M") for tick in ticks_over("*/30 * * * *", zone, spring, 5)]
    assert walls[walls.index("01:30") : walls.index("01:30") + 3] == ["01:30", "03:00", "03:30"]
    ticks = ticks_over("*/30 * * * *", zone, autumn, hours=6)
    walls = [tick.astimezone(local).replace(tzinfo=None) for tick in ticks]
    assert all(earlier < later for earlier, later in zip(walls, walls[1:], strict=False))
    assert {wall.strftime("%H:%M") for wall in walls} >= {"01:30", "02:00", "02:30", "03:00"}
    # 09:00 local is 09:00 local on either side of the change.
    mornings = ticks_over("0 9 * * *", zone, spring - timedelta(days=2), hours=24 * 5)
    assert [tick.astimezone(local).strftime("%H:%M") for tick in mornings] == ["09:00"] * 5
    assert next_ticks("30 2 * * *", autumn, 2, zone) == ticks_over("30 2 * * *", zone, autumn, hours=48)


def test_cron_jobs_of_a_type_in_a_time_zone_are_made_once_per_tick(make_job_type):
    kind = make_job_type(cron_expression="30 2 * * *", cron_timezone="Europe/Berlin")
    JobType.objects.filter(pk=kind.pk).update(last_cron_tick=datetime(2026, 10, 24, 0, 30, tzinfo=UTC))
    made = []
    night = datetime(2026, 10, 24, 23, 0, tzinfo=UTC)  # 01:00 CEST; clocks go back at 01:00 UTC
    for minute in range(0, 4 * 60, 5):
        made += schedule_due_ticks(night + timedelta(minutes=minute))
    assert [job.cron_tick for job in made] == [datetime(2026, 10, 25, 0, 30, tzinfo=UTC)]  # 02:30 CEST


def test_a_time_zone_that_does_not_exist_is_refused(make_job_type):
    from django.core.exceptions import ValidationError

    from kojo.validators import validate_timezone

    for bad in ("Mars/Olympus", "", "../etc/passwd", "UTC\x00"):
        with pytest.raises(ValidationError, match="is not a time zone"):
            validate_timezone(bad)
    validate_timezone("Asia/Kolkata")
