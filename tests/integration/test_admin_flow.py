"""Admin visibility of job flow: readiness and retry_on on job types, dependencies, recurrences."""

import json

import pytest
from django.urls import reverse
from django.utils import timezone

import kojo
from kojo.models import JobType, Recurrence
from kojo.states import JobState
from tests.conftest import added_types
from tests.integration.test_admin import VALID

pytestmark = pytest.mark.django_db


def test_job_type_with_readiness_and_retry_on_is_saved(admin_client):
    data = {
        **VALID,
        "readiness": json.dumps({"limit": 2, "key": "customer"}),
        "retry_on": "builtins.ConnectionError",
    }
    response = admin_client.post(reverse("admin:kojo_jobtype_add"), data)
    assert response.status_code == 302
    saved = JobType.objects.get(type_code="nightly_report")
    assert saved.readiness == {"limit": 2, "key": "customer"}
    assert saved.retry_on == "builtins.ConnectionError"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("readiness", json.dumps({"limit": 0}), "whole number from 1"),
        ("readiness", json.dumps({"check": "os.system"}), "not a registered readiness check"),
        ("readiness", "{not json", "Enter a valid JSON"),
        ("retry_on", "os.system", "not an importable exception class"),
    ],
)
def test_bad_readiness_or_retry_on_shows_the_shared_message(admin_client, field, value, message):
    response = admin_client.post(reverse("admin:kojo_jobtype_add"), {**VALID, field: value})
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not added_types().exists()


def test_job_page_lists_its_dependencies_with_their_states(admin_client, make_job_type):
    kind = make_job_type()
    first = kojo.schedule(kind.type_code)
    second = kojo.schedule(kind.type_code, depends_on=[first])
    page = admin_client.get(reverse("admin:kojo_job_change", args=[second.pk])).content.decode()
    assert "Runs after (dependencies)" in page
    assert str(first) in page and JobState.WAITING.label in page


def test_recurrence_added_in_the_admin_is_scheduled(admin_client, make_job_type):
    kind = make_job_type()
    data = {
        "known_as": "hourly-report",
        "job_type": kind.pk,
        "params": "{}",
        "interval": "PT1H",
        "reference": "end",
        "base_time": "",
        "importance": "",
        "is_enabled": "on",
    }
    assert admin_client.post(reverse("admin:kojo_recurrence_add"), data).status_code == 302
    recurrence = Recurrence.objects.get(known_as="hourly-report")
    assert recurrence.next_run_at is not None and recurrence.next_run_at <= timezone.now()
    bad = admin_client.post(reverse("admin:kojo_recurrence_add"), {**data, "known_as": "x", "interval": "1h"})
    assert "is not an ISO 8601 duration" in bad.content.decode()
