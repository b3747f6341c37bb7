"""The backoff curves of kojo.retries.retry_delay, jitter off and on (no database: unsaved types)."""

from datetime import timedelta

import pytest

from kojo.models import JobType
from kojo.retries import MAX_DELAY, retry_delay


def kind(backoff: str, interval: str = "PT10S", jitter: bool = False) -> JobType:
    return JobType(
        type_code="t", worker="w", retry_backoff=backoff, retry_interval=interval, retry_jitter=jitter
    )


@pytest.mark.parametrize(
    "backoff, seconds", [("fixed", [10, 10, 10]), ("linear", [10, 20, 30]), ("exponential", [10, 20, 40])]
)
def test_each_curve(backoff, seconds):
    assert [retry_delay(kind(backoff), attempt) for attempt in (1, 2, 3)] == [
        timedelta(seconds=value) for value in seconds
    ]


def test_exponential_and_linear_are_capped_at_a_day():
    assert retry_delay(kind("exponential"), 40) == MAX_DELAY == timedelta(days=1)
    assert retry_delay(kind("linear", "PT1H"), 100) == MAX_DELAY


def test_jitter_keeps_at_least_half_and_never_more_than_the_delay():
    delays = [retry_delay(kind("fixed", jitter=True), 1) for _ in range(200)]
    assert all(timedelta(seconds=5) <= delay <= timedelta(seconds=10) for delay in delays)
    assert len(set(delays)) > 1
