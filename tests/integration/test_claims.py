import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from kojo import claims
from kojo.claims import claim
from kojo.models import Job, JobStateChange
from kojo.states import JobState

pytestmark = pytest.mark.django_db
on_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="PostgreSQL's one-statement claim"
)


@pytest.fixture(autouse=True, params=["one statement first", "full claim"])
def claim_path(request):
    """Every test here runs through both paths: the one-statement claim tried first (PostgreSQL), and
    the full claim taken directly, as after a candidate needed admission."""
    claims.full_claims_until.clear()
    if request.param == "full claim":
        claims.full_claims_until["default"] = float("inf")
    yield request.param
    claims.full_claims_until.clear()


def waiting(job_type, n=1, **fields):
    return [Job.objects.create(job_type=job_type, **fields) for _ in range(n)]


def test_claims_by_importance_then_age(make_job_type):
    kind = make_job_type()
    low = waiting(kind, importance=-5)[0]
    high_old, high_new = waiting(kind, 2, importance=5)
    claimed = claim(3, host="h", pid=1)
    assert [job.pk for job in claimed] == [high_old.pk, high_new.pk, low.pk]
    assert all(job.state == JobState.WORKING and job.attempts == 1 for job in claimed)
    assert JobStateChange.objects.filter(to_state=JobState.WORKING).count() == 3


def test_oldest_first_ignores_importance(make_job_type):
    kind = make_job_type()
    old = waiting(kind, importance=-5)[0]
    waiting(kind, importance=5)
    assert claim(1, oldest_first=True)[0].pk == old.pk


def test_future_held_and_disabled_jobs_are_not_claimed(make_job_type):
    kind = make_job_type()
    waiting(kind, start_after=timezone.now() + timedelta(minutes=1))
    waiting(kind, state=JobState.HOLD)
    waiting(make_job_type(is_enabled=False))
    assert claim(5) == []


def test_schedule_limit_caps_working_jobs(make_job_type):
    kind = make_job_type(schedule_limit=2)
    other = make_job_type()
    waiting(kind, 5, importance=10)
    waiting(other, 2)
    first = claim(10)
    assert sorted(job.job_type_id for job in first) == sorted([kind.pk, kind.pk, other.pk, other.pk])
    assert claim(10) == []
    Job.objects.filter(pk=first[0].pk).update(state=JobState.COMPLETE_SUCCESS)
    assert len(claim(10)) == 1


def test_singleton_type_never_has_two_working(make_job_type):
    kind = make_job_type(can_work_in_parallel=False, schedule_limit=5)
    waiting(kind, 3)
    claimed = claim(3)
    assert len(claimed) == 1 and claimed[0].singleton
    assert claim(3) == []


def test_queues_select_job_types(make_job_type):
    waiting(make_job_type(queue="mail"))
    report = waiting(make_job_type(queue="reports"))[0]
    assert [job.pk for job in claim(5, queues=["reports"])] == [report.pk]


def test_a_jobs_own_queue_overrides_its_types(make_job_type):
    import kojo

    kind = make_job_type(queue="mail")
    urgent = kojo.schedule(kind.type_code, queue="urgent")
    plain = kojo.schedule(kind.type_code)
    assert Job.objects.get(pk=urgent.pk).queue == "urgent"
    assert [job.pk for job in claim(5, queues=["mail"])] == [plain.pk]
    assert [job.pk for job in claim(5, queues=["urgent"])] == [urgent.pk]
    (many,) = kojo.schedule_many(kind.type_code, [{}], queue="urgent")
    assert [job.pk for job in claim(5, queues=["default", "urgent"])] == [many.pk]
    kojo.schedule(kind.type_code, queue="elsewhere")
    assert len(claim(5)) == 1  # a server serving every queue serves every job's own


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_never_take_the_same_job(make_job_type):
    kind = make_job_type()
    limited = make_job_type(schedule_limit=3)
    waiting(kind, 60)
    waiting(limited, 20)
    claimers, barrier = 6, threading.Barrier(6)
    taken: list[list[int]] = [[] for _ in range(claimers)]
    errors = []

    def run(index):
        try:
            barrier.wait()
            while True:
                jobs = claim(2, host="test", pid=index)
                if not jobs:
                    break
                taken[index].extend(job.pk for job in jobs)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(claimers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    every = [pk for ids in taken for pk in ids]
    assert len(every) == len(set(every)) == 63
    assert Job.objects.filter(job_type=limited, state=JobState.WORKING).count() == 3
    for index, ids in enumerate(taken):
        assert set(Job.objects.filter(pk__in=ids).values_list("pid", flat=True)) <= {index}


def test_jobs_of_a_full_type_do_not_hide_other_claimable_jobs(make_job_type):
    busy = make_job_type(schedule_limit=1)
    waiting(busy, state=JobState.WORKING)
    waiting(busy, 20, importance=50)
    other = waiting(make_job_type(), importance=-50)[0]
    assert [job.pk for job in claim(1)] == [other.pk]


def test_claimed_jobs_are_returned_as_stored(make_job_type):
    kind = make_job_type(can_work_in_parallel=False)
    waiting(kind)
    claimed = claim(1, server_id=None, host="h", pid=7)[0]
    stored = Job.objects.get(pk=claimed.pk)
    for field in ("state", "attempts", "host", "pid", "singleton", "started_at", "heartbeat_at"):
        assert getattr(claimed, field) == getattr(stored, field), field
    assert stored.singleton is True


@on_postgresql
def test_a_claim_needing_no_admission_is_one_statement(make_job_type, claim_path):
    kind = make_job_type()
    waiting(kind, 4)
    claim(2, host="h", pid=1)  # the first claim of a size compiles its statement
    with CaptureQueriesContext(connection) as queries:
        claimed = claim(2, host="h", pid=1)
    assert len(claimed) == 2
    if claim_path == "one statement first":
        assert len(queries) == 1
    else:
        assert len(queries) > 1


@on_postgresql
def test_a_candidate_needing_admission_hands_the_claim_to_the_full_path(make_job_type, claim_path):
    limited = make_job_type(schedule_limit=1)
    plain = make_job_type()
    first, second = waiting(limited, 2, importance=5)
    other = waiting(plain)[0]
    claimed = claim(3, host="h", pid=1)
    assert [job.pk for job in claimed] == [first.pk, other.pk]
    assert Job.objects.get(pk=second.pk).state == JobState.WAITING
    assert claims.full_claims_until["default"] > 0


def test_prefetch_takes_more_jobs_only_when_none_needs_admission(make_job_type):
    plain = make_job_type()
    waiting(plain, 6)
    taken = claim(1, host="h", pid=1, prefetch=5)
    expected = 5 if connection.vendor == "postgresql" and not claims.full_claims_until else 1
    assert len(taken) == expected
    Job.objects.update(state=JobState.WAITING)
    waiting(make_job_type(can_work_in_parallel=False), importance=5)
    assert len(claim(1, host="h", pid=1, prefetch=5)) == 1


def test_one_claim_of_several_types_gives_each_job_its_own_type(make_job_type):
    first, second = make_job_type(timeout="PT5S"), make_job_type(timeout="PT9S")
    jobs = waiting(first, 2) + waiting(second, 2)
    claimed = claim(4, host="h", pid=1)
    assert {job.pk: job.job_type.type_code for job in claimed} == {
        job.pk: job.job_type.type_code for job in jobs
    }
    assert {job.job_type.timeout for job in claimed} == {"PT5S", "PT9S"}
