"""Fleet-wide rate limits (kojo.rates): at most N starts per window, per type or per params bucket,
counted in the claim under the type's row lock and shown by kojo.explain."""

from datetime import timedelta

import pytest
from django.utils import timezone

import kojo
from kojo import claims
from kojo.claims import claim
from kojo.explain import explain
from kojo.models import Job, RateWindow, Server
from kojo.rates import InvalidRate, Rate, parse_rate, prune_stale
from kojo.registry import registry
from kojo.states import JobState

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True, params=["one statement first", "full claim"])
def claim_path(request):
    claims.full_claims_until.clear()
    if request.param == "full claim":
        claims.full_claims_until["default"] = float("inf")
    yield request.param
    claims.full_claims_until.clear()


def age_windows(seconds: float) -> None:
    """Move every recorded start ``seconds`` into the past, as time passing would."""
    for window in RateWindow.objects.all():
        window.starts = [at - seconds for at in window.starts]
        window.last_start -= timedelta(seconds=seconds)
        window.save()


@pytest.mark.parametrize(
    "text, rate",
    [("60/m", Rate(60, 60)), ("5/s", Rate(5, 1)), (" 2 / h ", Rate(2, 3600)), ("100/PT30S", Rate(100, 30))],
)
def test_rates_parse(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "60", "m/60", "-1/m", "1.5/s", "5/fortnight", "1/P1DT1S"])
def test_bad_rates_are_refused(text):
    with pytest.raises(InvalidRate):
        parse_rate(text)


def test_a_type_starts_no_more_than_its_rate_per_window(make_job_type):
    kind = make_job_type(rate_limit="3/m")
    other = make_job_type()
    jobs = [kojo.schedule(kind.type_code) for _ in range(5)]
    free = kojo.schedule(other.type_code)
    taken = claim(10, host="here", pid=1)
    assert sorted(job.pk for job in taken) == sorted([job.pk for job in jobs[:3]] + [free.pk])
    assert claim(10, host="here", pid=1) == []  # ending the runs frees nothing: starts count
    Job.objects.filter(state=JobState.WORKING).update(state=JobState.COMPLETE_SUCCESS)
    assert claim(10, host="here", pid=1) == []
    age_windows(61)
    assert sorted(job.pk for job in claim(10, host="here", pid=1)) == [job.pk for job in jobs[3:]]


def test_each_params_bucket_has_its_own_window(make_job_type):
    kind = make_job_type(rate_limit="1/m", rate_key="customer")
    first_a = kojo.schedule(kind.type_code, {"customer": "a"})
    kojo.schedule(kind.type_code, {"customer": "a"})
    first_b = kojo.schedule(kind.type_code, {"customer": "b", "other": 1})
    number_one = kojo.schedule(kind.type_code, {"customer": 1})
    kojo.schedule(kind.type_code, {"customer": "1"})  # 1 and "1" share a window
    taken = claim(10, host="here", pid=1)
    assert sorted(job.pk for job in taken) == [first_a.pk, first_b.pk, number_one.pk]
    assert RateWindow.objects.filter(job_type=kind).count() == 3


def test_a_rate_and_a_schedule_limit_hold_together(make_job_type):
    kind = make_job_type(rate_limit="3/m", schedule_limit=2)
    for _ in range(4):
        kojo.schedule(kind.type_code)
    assert len(claim(10, host="here", pid=1)) == 2
    Job.objects.filter(state=JobState.WORKING).update(state=JobState.COMPLETE_SUCCESS)
    assert len(claim(10, host="here", pid=1)) == 1  # the limit has room, the rate one start left


def test_a_claim_that_rolls_back_takes_its_starts_back(make_job_type):
    from django.db import transaction

    kind = make_job_type(rate_limit="1/m")
    kojo.schedule(kind.type_code)
    with pytest.raises(RuntimeError), transaction.atomic():
        assert len(claim(1, host="here", pid=1)) == 1
        raise RuntimeError("the claimer's transaction failed")
    assert not RateWindow.objects.exists()
    assert len(claim(1, host="here", pid=1)) == 1


def test_explain_says_when_the_next_start_is_possible(make_job_type):
    Server.objects.create(host="node-1", pid=4242, workers=list(registry.worker_paths()))
    kind = make_job_type(rate_limit="2/PT30S", rate_key="customer")
    for _ in range(3):
        kojo.schedule(kind.type_code, {"customer": 7})
    claim(10, host="here", pid=1)
    (waiting,) = Job.objects.filter(job_type=kind, state=JobState.WAITING)
    (blocker,) = explain(waiting.pk).blockers
    assert blocker.startswith("its type's rate 2/PT30S is used up for customer=7: 2 started in the last 30 s")
    assert 29.0 < float(blocker.rsplit("in ", 1)[1].split(" s")[0]) <= 30.0
    age_windows(31)
    assert explain(waiting.pk).runnable


def test_stale_windows_are_pruned(make_job_type):
    kind = make_job_type(rate_limit="1/s", rate_key="customer")
    kojo.schedule(kind.type_code, {"customer": "gone"})
    claim(1, host="here", pid=1)
    assert prune_stale(using="default") == 0
    RateWindow.objects.update(last_start=timezone.now() - timedelta(days=3))
    assert prune_stale(using="default") == 1 and not RateWindow.objects.exists()


def test_a_rate_stored_around_the_checks_keeps_its_jobs_waiting_and_nothing_else(make_job_type):
    from kojo.models import JobType

    kind = make_job_type(rate_limit="5/s")
    JobType.objects.filter(pk=kind.pk).update(rate_limit="5 a second")
    other = make_job_type()
    stuck = kojo.schedule(kind.type_code)
    free = kojo.schedule(other.type_code)
    assert [job.pk for job in claim(5, host="here", pid=1)] == [free.pk]
    assert Job.objects.get(pk=stuck.pk).state == JobState.WAITING


def test_the_admin_form_saves_a_rate_and_its_key(admin_client):
    from django.urls import reverse

    from kojo.models import JobType
    from tests.integration.test_admin import VALID

    response = admin_client.post(
        reverse("admin:kojo_jobtype_add"), {**VALID, "rate_limit": "100/PT30S", "rate_key": "customer"}
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    stored = JobType.objects.get(type_code=VALID["type_code"])
    assert (stored.rate_limit, stored.rate_key) == ("100/PT30S", "customer")
