"""job_postponed (kojo.lifecycle): a due job a committed claim passed over, and why; at most once a
minute per job and reason per process; and lifecycle events handed out by listen()."""

import pytest

import kojo
from kojo import lifecycle, messaging
from kojo.claims import claim
from kojo.signals import job_postponed

pytestmark = pytest.mark.django_db


@pytest.fixture
def told(django_capture_on_commit_callbacks):
    """The postponements told, as (job id, reason), claim by claim."""
    lifecycle.last_said.clear()
    heard = []

    def receiver(sender, job_id, type_code, reason, **kwargs):
        heard.append((job_id, reason))

    job_postponed.connect(receiver)

    def claimed(slots=5):
        heard.clear()
        with django_capture_on_commit_callbacks(execute=True):
            claim(slots, host="here", pid=1)
        return list(heard)

    yield claimed
    job_postponed.disconnect(receiver)
    lifecycle.last_said.clear()


def test_a_job_over_its_types_limit_is_postponed_once_a_minute(make_job_type, told):
    kind = make_job_type(schedule_limit=1)
    kojo.schedule(kind.type_code)
    second = kojo.schedule(kind.type_code)
    assert told() == [(second.pk, "limited")]
    assert told() == []  # said already, a moment ago
    lifecycle.last_said[(second.pk, "limited")] -= lifecycle.POSTPONED_EVERY
    assert told() == [(second.pk, "limited")]


def test_a_full_bucket_a_check_and_a_rate_each_say_why(make_job_type, told):
    buckets = make_job_type(readiness={"limit": 1, "key": "customer"})
    checked = make_job_type(readiness={"check": "tests.kojo_jobs.is_urgent"})
    rated = make_job_type(rate_limit="1/m")
    kojo.schedule(buckets.type_code, {"customer": 1})
    over_bucket = kojo.schedule(buckets.type_code, {"customer": 1})
    not_urgent = kojo.schedule(checked.type_code, {"urgent": False})
    kojo.schedule(rated.type_code)
    over_rate = kojo.schedule(rated.type_code)
    assert sorted(told(10)) == sorted(
        [(over_bucket.pk, "limited"), (not_urgent.pk, "not ready"), (over_rate.pk, "rate-limited")]
    )


def test_a_claim_that_postpones_nothing_tells_nothing(make_job_type, told):
    kojo.schedule(make_job_type().type_code)
    assert told() == []


def test_listen_hands_out_lifecycle_events_only_when_asked():
    change = {"job_id": 1, "type_code": "t", "from_state": "", "to_state": "waiting"}
    postponed = {"event": "job_postponed", "job_id": 1, "type_code": "t", "reason": "limited"}
    assert messaging.events_in({"at": 5.0, "events": [postponed]}, lifecycle=False) == []
    assert messaging.events_in({"at": 5.0, "events": [postponed]}, lifecycle=True) == [
        {**postponed, "at": 5.0}
    ]
    assert messaging.events_in({"at": 5.0, "changes": [change]}, lifecycle=False) == [
        {"event": "job_state_changed", **change, "at": 5.0}
    ]
