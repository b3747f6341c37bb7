"""Fork-per-job processes hand plain successes to their server; other endings they write themselves."""

import pytest

import kojo
from kojo.models import Job, JobStateChange
from kojo.states import JobState
from tests.server.conftest import wait_for
from tests.server.helpers import all_finished

pytestmark = pytest.mark.server


def test_every_job_ends_once_whichever_process_records_it(start_server, make_job_type):
    plain = make_job_type(worker="tests.kojo_jobs.give_back")
    talker = make_job_type(worker="tests.kojo_jobs.count_jobs")
    results = [None, {"a": ["ünï", 1.5, None]}, "text", 7, [1, {"b": True}]]
    reported = [kojo.schedule(plain.type_code, {"result": result}) for result in results * 20]
    large = kojo.schedule(plain.type_code, {"size": 10_000})  # too big for one pipe write
    written = [kojo.schedule(talker.type_code) for _ in range(5)]
    server = start_server("--concurrency", "4")
    wait_for(lambda: all_finished(plain) and all_finished(talker), timeout=60, message="every job")
    for job, result in zip(reported, results * 20, strict=True):
        job.refresh_from_db()
        assert (job.state, job.result, job.progress) == (JobState.COMPLETE_SUCCESS, result, 100)
    large.refresh_from_db()
    assert large.state == JobState.COMPLETE_SUCCESS and len(large.result["text"]) == 10_000
    assert all(Job.objects.get(pk=job.pk).result["jobs"] >= 1 for job in written)
    # Exactly one ending per job in the changelog, in the name of the job's own process.
    endings = JobStateChange.objects.filter(from_state=JobState.WORKING)
    assert endings.count() == Job.objects.count()
    actors = {int(actor.rsplit(":", 1)[1]) for actor in endings.values_list("actor", flat=True)}
    assert server.pid not in actors and len(actors) > 4
