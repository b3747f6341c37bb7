"""When the next occurrence of a recurring job is due (pure date arithmetic, no database)."""

from datetime import UTC, datetime, timedelta

from kojo.models import Recurrence, Reference
from kojo.recurrence import first_run, grid_point, next_run


def at(hour, minute=0, day=1):
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


def recurrence(interval="PT12H", **fields):
    return Recurrence(known_as="r", interval=interval, **fields)


def test_base_time_grid_skips_missed_points_never_backfills():
    # base 03:00, every 12 h: ending at 16:10 -> 03:00 next day; ending at 14:59 -> 15:00 today.
    nightly = recurrence(base_time=at(3))
    assert next_run(nightly, at(14), at(16, 10)) == at(3, day=2)
    assert next_run(nightly, at(14), at(14, 59)) == at(15)
    # A run that lasted three days still lands on the next grid point, not three overdue ones.
    assert next_run(nightly, at(3), at(4, day=4)) == at(15, day=4)


def test_base_time_grid_is_strictly_after_the_end():
    assert next_run(recurrence(base_time=at(3)), at(2), at(15)) == at(3, day=2)


def test_base_time_in_the_future_extends_the_grid_backwards():
    assert grid_point(at(3, day=10), timedelta(hours=12), at(4, day=1), strictly_after=True) == at(15)


def test_end_reference_counts_from_the_end():
    hourly = recurrence("PT1H", reference=Reference.END)
    assert next_run(hourly, at(1), at(1, 30)) == at(2, 30)


def test_start_reference_counts_from_the_start_even_if_that_is_past():
    hourly = recurrence("PT1H", reference=Reference.START)
    assert next_run(hourly, at(1), at(1, 30)) == at(2)
    assert next_run(hourly, at(1), at(5)) == at(2)  # overdue: due at once
    assert next_run(hourly, None, at(5)) == at(6)  # never started (canceled while waiting)


def test_first_run_is_now_or_the_next_grid_point():
    assert first_run(recurrence(), at(7, 13)) == at(7, 13)
    assert first_run(recurrence(base_time=at(3)), at(7, 13)) == at(15)
    assert first_run(recurrence(base_time=at(3)), at(15)) == at(15)
