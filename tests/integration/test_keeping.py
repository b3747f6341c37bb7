"""keep_instances: housekeeping tops a type up to N jobs in flight; schedule_self() defers to a
waiting sibling instead of failing on the type's allowance."""

from datetime import UTC, datetime

import pytest

import kojo
from kojo.claims import claim
from kojo.cron import schedule_due_ticks
from kojo.exceptions import WaitingLimitReached
from kojo.keeping import keep_instances
from kojo.models import Job, JobStateChange
from kojo.runtime import JobContext
from kojo.states import PENDING, JobState

pytestmark = pytest.mark.django_db


def pending(kind) -> int:
    return Job.objects.filter(job_type=kind, state__in=PENDING).count()


def test_a_type_is_topped_up_to_its_count_and_no_further(make_job_type):
    kind = make_job_type(keep_instances=2)
    other = make_job_type()
    created = keep_instances()
    assert [job.job_type for job in created] == [kind, kind] and pending(kind) == 2
    assert keep_instances() == []
    (taken,) = claim(1, host="here", pid=1)  # working still counts
    assert keep_instances() == [] and pending(kind) == 2
    JobContext(taken).complete_success()
    (made,) = keep_instances()
    assert JobStateChange.objects.get(job=made).reason == "kept: 2 instance(s) of the type"
    assert not Job.objects.filter(job_type=other).exists()


def test_disabled_types_and_a_full_allowance_are_not_topped_up(make_job_type):
    disabled = make_job_type(keep_instances=1, is_enabled=False)
    tight = make_job_type(keep_instances=3, schedule_limit_allowance=2)
    assert keep_instances() == []
    assert pending(disabled) == 0 and pending(tight) == 0


def test_schedule_self_defers_to_a_waiting_sibling(make_job_type):
    """The continuous singleton of the seeds: cron every minute, allowance 1, the job re-schedules
    itself; a cron tick already waiting takes the allowance, and the clone does not fail the job."""
    kind = make_job_type(cron_expression="* * * * *", can_work_in_parallel=False, schedule_limit_allowance=1)
    running = kojo.schedule(kind.type_code, {"n": 1})
    (running,) = claim(1, host="here", pid=1)
    (tick,) = schedule_due_ticks(datetime(2026, 11, 26, 12, 0, tzinfo=UTC))
    context = JobContext(running)
    assert context.schedule_self() == tick
    with pytest.raises(WaitingLimitReached):
        context.schedule(kind.type_code)  # the plain call still says so
    tick.delete()
    clone = context.schedule_self()
    assert (clone.job_type, clone.params, clone.state) == (kind, {"n": 1}, JobState.WAITING)
