"""A full bucket's backlog never hides other buckets' jobs, and its own queue moves on in order."""

import threading
from collections import Counter

import pytest
from django.db import connection

import kojo
from kojo.claims import claim
from kojo.models import Job, JobStateChange, JobType
from kojo.readiness import all_of, check, limit_to
from kojo.scheduling import schedule
from kojo.shelving import bring_back_stranded
from kojo.states import JobState
from kojo.transitions import transition

pytestmark = pytest.mark.django_db

# More than any number of rows a claim reads at once: the backlog can only be passed by shelving it.
BACKLOG = 12_000


def backlog(kind, customer: str, count: int) -> list[int]:
    Job.objects.bulk_create(Job(job_type=kind, params={"customer": customer}) for _ in range(count))
    return list(
        Job.objects.filter(job_type=kind, params__customer=customer, state=JobState.WAITING)
        .order_by("id")
        .values_list("pk", flat=True)
    )


def finish(job_id: int) -> None:
    transition(job_id, JobState.COMPLETE_SUCCESS, reason="done by the test")


def test_a_full_buckets_backlog_does_not_hide_another_customers_job(make_job_type):
    kind = make_job_type(readiness=limit_to(1, key="customer"))
    schedule(kind.type_code, {"customer": "a"})
    [running] = claim(1)
    backlog(kind, "a", BACKLOG)
    late = schedule(kind.type_code, {"customer": "b"})
    # Each claim reads a bounded number of rows; the ones it passes over for a full bucket leave its
    # sight, so customer b's job is reached within a few claims, and then at once every time.
    taken = []
    for _ in range(BACKLOG // 5_000 + 2):
        taken += claim(1)
        if taken:
            break
    assert [job.pk for job in taken] == [late.pk]
    assert running.state == JobState.WORKING
    assert Job.objects.filter(job_type=kind, state=JobState.WAITING).count() == BACKLOG
    in_sight = Job.objects.filter(job_type=kind, state=JobState.WAITING, shelved=False)
    assert in_sight.count() == 1, "one job of the full bucket stays in sight"


def test_a_shelved_bucket_runs_in_its_order_and_loses_nothing(make_job_type):
    kind = make_job_type(readiness=limit_to(2, key="customer"))
    ids = backlog(kind, "a", 3_000)
    order = []
    for _ in range(40):
        taken = claim(3)
        assert len(taken) <= 2
        order += [job.pk for job in taken]
        for job in taken:
            finish(job.pk)
    assert order == ids[: len(order)], "the bucket's jobs are taken first come, first served"
    assert len(order) == 80
    assert Job.objects.filter(pk__in=ids, state=JobState.WAITING).count() == len(ids) - 80


def test_shelved_jobs_come_back_when_their_job_in_sight_is_canceled(make_job_type):
    kind = make_job_type(readiness=limit_to(1, key="customer"))
    ids = backlog(kind, "a", 50)
    [first] = claim(1)
    assert claim(1) == []  # the bucket is full: all but one of the others are shelved
    [in_sight] = Job.objects.filter(job_type=kind, state=JobState.WAITING, shelved=False)
    transition(in_sight.pk, JobState.CANCELED, reason="canceled by the test")
    finish(first.pk)
    assert claim(1) == [], "no job of the bucket is in sight until housekeeping brings one back"
    assert bring_back_stranded() == 1
    [next_one] = claim(1)
    assert next_one.pk == min(set(ids) - {first.pk, in_sight.pk})


def test_a_retried_job_leaves_the_shelf(make_job_type):
    kind = make_job_type(readiness=limit_to(1, key="customer"), max_attempts=3)
    backlog(kind, "a", 20)
    [first] = claim(1)
    assert claim(1) == []
    shelved = Job.objects.filter(job_type=kind, shelved=True).first()
    transition(shelved.pk, JobState.HOLD, reason="held by the test")
    transition(shelved.pk, JobState.WAITING, reason="released by the test")
    shelved.refresh_from_db()
    assert (shelved.shelved, shelved.bucket) == (False, "")


@pytest.mark.django_db(transaction=True)
def test_concurrent_claimers_keep_bucket_limits_over_a_shelved_backlog(make_job_type):
    kind = make_job_type(readiness=limit_to(2, key="customer"))
    for customer, count in (("a", 1_500), ("b", 1_500), ("c", 3), ("d", 3)):
        backlog(kind, customer, count)
    over = []

    def claimers(rounds: int, finishes: set[str]) -> None:
        barrier, errors = threading.Barrier(6), []

        def run(n: int):
            try:
                barrier.wait()
                for _ in range(rounds):
                    taken = claim(2, host="test", pid=n)
                    working = Counter(
                        Job.objects.filter(job_type=kind, state=JobState.WORKING).values_list(
                            "params__customer", flat=True
                        )
                    )
                    over.extend(customer for customer, count in working.items() if count > 2)
                    for job in taken:
                        if job.params["customer"] in finishes:
                            finish(job.pk)
            except Exception as error:  # pragma: no cover - reported below
                errors.append(error)
            finally:
                connection.close()

        threads = [threading.Thread(target=run, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []

    def done() -> Counter:
        return Counter(
            Job.objects.filter(job_type=kind, state=JobState.COMPLETE_SUCCESS).values_list(
                "params__customer", flat=True
            )
        )

    # Customers a and b fill their buckets and keep them full: the small customers behind their
    # backlogs are reached all the same.
    claimers(4, finishes={"c", "d"})
    assert done() == {"c": 3, "d": 3}
    # Then a's and b's jobs end as they are claimed: their shelved queues move on, within the limit.
    for job_id in Job.objects.filter(job_type=kind, state=JobState.WORKING).values_list("pk", flat=True):
        finish(job_id)
    claimers(6, finishes={"a", "b"})
    assert over == []
    # Beyond the 2 + 2 that worked in the first phase (which customer goes first is claim order).
    assert done()["a"] + done()["b"] > 4
    claimed = Counter(
        JobStateChange.objects.filter(job__job_type=kind, to_state=JobState.WORKING).values_list(
            "job_id", flat=True
        )
    )
    assert set(claimed.values()) == {1}, "no job was claimed twice"
    ended = Job.objects.filter(job_type=kind).exclude(state=JobState.WAITING)
    assert not ended.exclude(state=JobState.COMPLETE_SUCCESS).exists()


@kojo.readiness_check
def is_urgent(params):
    return bool(params.get("urgent"))


def test_a_job_in_sight_that_a_check_keeps_waiting_lets_its_bucket_move_on(make_job_type):
    kind = make_job_type(readiness=all_of(limit_to(1, key="customer"), check(is_urgent)))
    running = schedule(kind.type_code, {"customer": "a", "urgent": True})
    assert claim(1) == [running]
    schedule(kind.type_code, {"customer": "a", "urgent": False})  # kept in sight, never ready
    ready = [schedule(kind.type_code, {"customer": "a", "urgent": True}) for _ in range(5)]
    assert claim(1) == []
    assert Job.objects.filter(pk__in=[job.pk for job in ready], shelved=True).count() == 5
    finish(running.pk)
    # The bucket has room but its job in sight cannot take it: the next one comes back and runs.
    taken = claim(1) or claim(1)
    assert [job.pk for job in taken] == [ready[0].pk]


def test_a_job_in_sight_waiting_for_its_second_limit_lets_its_first_bucket_move_on(make_job_type):
    kind = make_job_type(readiness=[limit_to(1, key="customer"), limit_to(1, key="region")])
    schedule(kind.type_code, {"customer": "a", "region": "r1"})
    schedule(kind.type_code, {"customer": "b", "region": "r2"})
    first, _ = claim(2)
    schedule(kind.type_code, {"customer": "a", "region": "r2"})  # in sight for a, then waits for r2
    others = [schedule(kind.type_code, {"customer": "a", "region": "r3"}) for _ in range(3)]
    assert claim(1) == []
    finish(first.pk)
    taken = claim(1) or claim(1)  # no housekeeping needed
    assert [job.pk for job in taken] == [others[0].pk]


def test_a_bucket_limit_removed_lets_its_whole_shelf_come_back(make_job_type):
    kind = make_job_type(readiness=limit_to(1, key="customer"))
    backlog(kind, "a", 50)
    claim(1)
    assert claim(1) == []
    assert Job.objects.filter(job_type=kind, shelved=True).count() == 48
    JobType.objects.filter(pk=kind.pk).update(readiness=None)
    # Housekeeping sees that no limit has that bucket any more (the one-statement claim takes the
    # type's jobs without counting them, so it brings nothing back itself).
    assert bring_back_stranded() == 48
    assert len(claim(10)) == 10


def test_jobs_a_check_keeps_waiting_are_never_shelved(make_job_type):
    kind = make_job_type(readiness=check(is_urgent))
    backlog_ids = Job.objects.bulk_create(Job(job_type=kind, params={"urgent": False}) for _ in range(3_000))
    assert claim(1) == []
    assert not Job.objects.filter(pk__in=[job.pk for job in backlog_ids], shelved=True).exists()


def test_a_backlog_is_shelved_again_after_its_limit_moves_to_another_key(make_job_type):
    kind = make_job_type(readiness=limit_to(1, key="customer"))
    running = schedule(kind.type_code, {"customer": "a", "account": "a"})
    assert claim(1) == [running]
    same = {"customer": "a", "account": "a"}
    Job.objects.bulk_create(Job(job_type=kind, params=same) for _ in range(3_000))
    for _ in range(3):
        claim(1)
    assert Job.objects.filter(job_type=kind, shelved=True).count() == 2_999
    # Same jobs, same full bucket, under another key: the old shelf comes back and is shelved anew.
    JobType.objects.filter(pk=kind.pk).update(readiness=limit_to(1, key="account"))
    while bring_back_stranded():
        pass
    late = schedule(kind.type_code, {"customer": "b", "account": "b"})
    taken = []
    for _ in range(6):
        taken += claim(1)
    assert [job.pk for job in taken] == [late.pk]
