"""job.progress(): written at most once per KOJO_PROGRESS_MIN_INTERVAL, except 100 %, which always is."""

import pytest

import kojo
from kojo.claims import claim
from kojo.models import Job
from kojo.runtime import JobContext

pytestmark = pytest.mark.django_db


def test_progress_writes_are_rate_limited_but_the_last_one_is_kept(make_job_type, settings):
    settings.KOJO_PROGRESS_MIN_INTERVAL = 60
    kojo.schedule(make_job_type().type_code)
    (job,) = claim(1, host="here", pid=1)
    context = JobContext(job)

    def stored() -> int | None:
        return Job.objects.get(pk=job.pk).progress

    context.progress(10)
    assert stored() == 10
    context.progress(55.7)  # within the interval: kept in memory only
    assert stored() == 10
    context.progress(150)  # clamped to 100, and 100 % is written whatever the interval
    assert stored() == 100
    settings.KOJO_PROGRESS_MIN_INTERVAL = 0
    context.progress(-5)
    assert stored() == 0
