import pytest

from kojo import signals as s

CASES = [
    (("", "waiting", ""), [s.job_scheduled]),
    (("waiting", "working", ""), [s.job_started]),
    (("working", "complete_success", "succeeded"), [s.job_succeeded]),
    (("working", "complete_failed", "timed_out"), [s.job_timed_out, s.job_failed]),
    (("working", "waiting", "timed_out"), [s.job_timed_out, s.job_retrying]),
    (("working", "waiting", "crashed"), [s.job_crashed, s.job_retrying]),
    (("working", "complete_failed", "orphaned"), [s.job_crashed, s.job_failed]),
    (("working", "waiting", "panicked"), [s.job_panicked, s.job_retrying]),
    (("working", "waiting", "retry"), [s.job_retrying]),
    (("working", "canceled", "aborted"), [s.job_aborted]),
    (("waiting", "canceled", ""), [s.job_canceled]),
    (("working", "hold", "held"), [s.job_held]),
    (("hold", "waiting", ""), [s.job_released]),
    (("complete_failed", "waiting", ""), [s.job_released]),
]


@pytest.mark.parametrize(("change", "expected"), CASES)
def test_each_change_fires_the_signals_named_for_it(change, expected):
    assert s.named_signals(*change) == expected


def test_a_timed_out_job_never_fires_cancel_or_abort():
    for target in ("waiting", "complete_failed"):
        fired = s.named_signals("working", target, "timed_out")
        assert s.job_canceled not in fired and s.job_aborted not in fired
