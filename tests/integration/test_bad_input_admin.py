"""Bad input through the admin forms and the registrar: the shared message, no server error, and no
stored row changed."""

from __future__ import annotations

import html
import json

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from kojo.models import JobType, Recurrence
from kojo.registry import Registry, registry
from tests.conftest import added_types
from tests.integration import bad_input
from tests.integration.bad_input import HOSTILE_TEXT, snapshot
from tests.integration.test_admin import VALID

pytestmark = pytest.mark.django_db
stored = bad_input.stored

DEEP = "[" * 10_000 + "]" * 10_000

JOB_TYPE_CASES = [
    ("cron_expression", "61 * * * *", "is not a valid cron expression"),
    ("cron_expression", "* * * * * *", "is not a valid cron expression"),
    ("cron_expression", "* * *", "is not a valid cron expression"),
    ("cron_expression", "@reboot", "is not a valid cron expression"),
    ("cron_expression", "a b c d e", "is not a valid cron expression"),
    ("cron_expression", "*/0 * * * *", "is not a valid cron expression"),
    ("cron_expression", "'; DROP TABLE kojo_job; --", "is not a valid cron expression"),
    ("timeout", "P1M", "years and months have no fixed length"),
    ("timeout", "P1Y", "years and months have no fixed length"),
    ("retry_interval", "-PT10S", "is not an ISO 8601 duration"),
    ("auto_delete_interval_duration", "7 days", "is not an ISO 8601 duration"),
    ("auto_delete_interval_duration", "P", "is not an ISO 8601 duration"),
    ("auto_delete_interval_duration", "P99999999W", "longer than 100 years"),
    ("schedule_limit", "-1", "greater than or equal to 0"),
    ("schedule_limit", "1000001", "is not a valid limit"),
    ("schedule_limit_allowance", "99999999999", "is not a valid limit"),
    ("max_attempts", "0", "is not a valid number of attempts"),
    ("max_attempts", "1001", "is not a valid number of attempts"),
    ("default_importance", "101", "101 is not a valid importance: use a whole number from -100 to 100"),
    ("default_importance", "-1000", "is not a valid importance"),
    ("default_importance", "1e9", "Enter a whole number"),
    ("type_code", "Robert'); --", "is not a valid type code"),
    ("type_code", "'; DROP TABLE kojo_job; --", "is not a valid type code"),
    ("type_code", "emoji_😀", "is not a valid type code"),
    ("type_code", "x" * 101, "at most 100 characters"),
    ("name", "x" * 256, "at most 255 characters (it has 256)"),
    ("name", "nul\x00name", "Null characters are not allowed"),
    ("queue", "q" * 101, "at most 100 characters"),
    ("worker", "os.system", "'os.system' is not a registered kojo worker"),
    ("retry_on", "os.system", "is not an importable exception class"),
    ("retry_backoff", "bogus", "Select a valid choice"),
    ("cron_overflow", "drop", "Select a valid choice"),
    ("readiness", '{"limit": 0}', "'limit' takes a whole number from 1 to 1000000"),
    ("readiness", '{"limit": "2"}', "'limit' takes a whole number"),
    ("readiness", '{"any": []}', "'any' takes a non-empty list of criteria"),
    ("readiness", '{"all": "x"}', "'all' takes a non-empty list of criteria"),
    ("readiness", '{"limit": 1, "check": "x"}', "is not a criterion"),
    ("readiness", '{"key": "customer"}', "is not a criterion"),
    ("readiness", '{"key": "customer", "check": "x"}', "'key' belongs to a 'limit' criterion"),
    ("readiness", '{"limit": 1, "key": ""}', "'key' takes a params key"),
    ("readiness", '{"limit": 1, "key": "\\u0000"}', "'key' takes a params key"),
    ("readiness", '{"limit": 1, "key": "\\ud800"}', "'key' takes a params key"),
    ("readiness", '{"check": "os.system"}', "is not a registered readiness check"),
    ("readiness", '{"sleep": 1}', "unknown criterion 'sleep'"),
    ("readiness", "[" * 10 + '{"limit": 1}' + "]" * 10, "nested more than 8 levels deep"),
    ("readiness", DEEP, "This JSON is nested too deeply"),
    ("readiness", "not json", "Enter a valid JSON"),
    ("readiness", "NaN", "is not a criterion"),
    ("rate_limit", "60/minute", "its window is not s, m, h, d or a duration"),
    ("rate_limit", "1000000/s", "allow from 1 to 10000 starts per window"),
    ("rate_limit", "x" * 33, "at most 32 characters"),
    ("rate_key", "a, ,b", "is not a list of params keys"),
]


def form_errors(response) -> str:
    assert response.status_code == 200, response.status_code
    return html.unescape(response.content.decode())


@pytest.mark.parametrize(("field", "value", "message"), JOB_TYPE_CASES)
def test_job_type_add_form_refuses_bad_values(admin_client, stored, field, value, message):
    before = snapshot()
    response = admin_client.post(reverse("admin:kojo_jobtype_add"), {**VALID, field: value})
    assert message in form_errors(response)
    assert snapshot() == before


@pytest.mark.parametrize(("field", "value", "message"), JOB_TYPE_CASES)
def test_job_type_change_form_refuses_bad_values_and_keeps_the_row(
    admin_client, stored, field, value, message
):
    report = stored["report"]
    data = {**VALID, "type_code": "report", "name": report.name, field: value}
    before = snapshot()
    response = admin_client.post(reverse("admin:kojo_jobtype_change", args=[report.pk]), data)
    assert message in form_errors(response)
    assert snapshot() == before


@pytest.mark.parametrize("text", HOSTILE_TEXT[:-1] + ["x" * 255])
def test_hostile_names_round_trip_through_the_admin(admin_client, stored, text):
    response = admin_client.post(reverse("admin:kojo_jobtype_add"), {**VALID, "name": text})
    assert response.status_code == 302
    # Browsers send a textarea's line breaks as CRLF; a one-line input keeps the text as typed.
    assert JobType.objects.get(type_code="nightly_report").name == text
    assert added_types().count() == 3


RECURRENCE_CASES = [
    ("params", "[1, 2]", "params must be a dict (a JSON object), not list"),
    ("params", '"text"', "params must be a dict (a JSON object), not JSONString"),
    ("params", "NaN", "params must be a dict (a JSON object), not float"),
    ("params", '{"n": NaN}', "params are not JSON: Out of range float values are not JSON compliant"),
    ("params", '{"s": "\\u0000"}', "params contain a NUL character"),
    ("params", '{"s": "\\ud800"}', "not valid Unicode"),
    ("params", DEEP, "This JSON is nested too deeply"),
    ("params", "{'single': 'quotes'}", "Enter a valid JSON"),
    ("interval", "PT0S", "interval must be longer than zero, not 'PT0S'"),
    ("interval", "P0D", "interval must be longer than zero"),
    ("interval", "P1M", "years and months have no fixed length"),
    ("interval", "every hour", "is not an ISO 8601 duration"),
    ("interval", "", "This field is required"),
    ("importance", "101", "importance must be from -100 to 100, not 101"),
    ("importance", "-32768", "importance must be from -100 to 100"),
    ("importance", "99999", "importance must be from -100 to 100, not 99999"),
    ("known_as", "", "This field is required"),
    ("known_as", "k" * 201, "at most 200 characters"),
    ("known_as", "nul\x00", "Null characters are not allowed"),
    ("reference", "middle", "Select a valid choice"),
    ("job_type", "999999", "Select a valid choice"),
    ("job_type", "'; DROP TABLE kojo_job; --", "Select a valid choice"),
    ("base_time_0", "2026-13-45", "Enter a valid date"),
]


def recurrence_data(stored, **changes) -> dict:
    data = {
        "known_as": "admin-made",
        "job_type": stored["report"].pk,
        "params": "{}",
        "interval": "PT1H",
        "reference": "end",
        "base_time_0": "2026-01-01",
        "base_time_1": "03:00:00",
        "importance": "",
        "is_enabled": "on",
    }
    return {**data, **changes}


@pytest.mark.parametrize(("field", "value", "message"), RECURRENCE_CASES)
def test_recurrence_add_form_refuses_bad_values(admin_client, stored, field, value, message):
    before = snapshot()
    data = recurrence_data(stored, **{field: value})
    response = admin_client.post(reverse("admin:kojo_recurrence_add"), data)
    assert message in form_errors(response)
    assert snapshot() == before


@pytest.mark.parametrize(("field", "value", "message"), RECURRENCE_CASES)
def test_recurrence_change_form_refuses_bad_values_and_keeps_the_definition(
    admin_client, stored, field, value, message
):
    recurrence = stored["recurrence"]
    data = recurrence_data(stored, **{"known_as": recurrence.known_as, field: value})
    before = snapshot()
    response = admin_client.post(reverse("admin:kojo_recurrence_change", args=[recurrence.pk]), data)
    assert message in form_errors(response)
    assert snapshot() == before


@pytest.mark.parametrize("text", HOSTILE_TEXT)
def test_hostile_text_round_trips_through_the_recurrence_form(admin_client, stored, text):
    params = {"text": text, text[:50]: ["😀", None, 1.5]}
    data = recurrence_data(stored, known_as=text[:200], params=json.dumps(params), importance="-100")
    assert admin_client.post(reverse("admin:kojo_recurrence_add"), data).status_code == 302
    recurrence = Recurrence.objects.get(known_as=text[:200])
    assert (recurrence.params, recurrence.importance, recurrence.interval) == (params, -100, "PT1H")


REGISTRAR_CASES = [
    ({"cron_expression": "* * * * * *"}, "is not a valid cron expression"),
    ({"cron_expression": "@reboot"}, "is not a valid cron expression"),
    ({"timeout": "P1M"}, "years and months have no fixed length"),
    ({"timeout": "-PT1S"}, "is not an ISO 8601 duration"),
    ({"retry_interval": 30}, "is not an ISO 8601 duration"),
    ({"auto_delete_interval_duration": "P99999999W"}, "longer than 100 years"),
    ({"schedule_limit": -1}, "-1 is not a valid limit"),
    ({"schedule_limit": 10**9}, "is not a valid limit"),
    ({"schedule_limit_allowance": 2.5}, "2.5 is not a valid limit"),
    ({"schedule_limit": True}, "True is not a valid limit"),
    ({"max_attempts": 0}, "0 is not a valid number of attempts"),
    ({"max_attempts": 10**6}, "is not a valid number of attempts"),
    ({"default_importance": 1000}, "1000 is not a valid importance: use a whole number from -100 to 100"),
    ({"default_importance": -101}, "-101 is not a valid importance"),
    ({"default_importance": "high"}, "'high' is not a valid importance"),
    ({"can_work_in_parallel": "yes"}, "'yes' is not a valid flag"),
    ({"is_enabled": 0}, "0 is not a valid flag"),
    ({"retry_jitter": "False"}, "'False' is not a valid flag"),
    ({"retry_backoff": "bogus"}, "'bogus' is not a retry backoff: use fixed, linear, exponential"),
    ({"cron_overflow": "drop"}, "'drop' is not a cron overflow rule: use queue, skip"),
    ({"name": "x" * 256}, "use at most 255 characters"),
    ({"name": "nul\x00"}, "without NUL characters"),
    ({"queue": "q" * 101}, "use at most 100 characters"),
    ({"queue": 7}, "7 is not valid text"),
    ({"retry_on": ["os.system"]}, "'os.system' is not an importable exception class"),
    ({"readiness": {"limit": -1}}, "'limit' takes a whole number"),
    ({"readiness": {"limit": 1, "key": "\x00"}}, "'key' takes a params key"),
    ({"readiness": [[[[[[[[[[{"limit": 1}]]]]]]]]]]}, "nested more than 8 levels deep"),
    ({"rate_limit": "60/minute"}, "'60/minute': its window is not s, m, h, d or a duration"),
    ({"rate_limit": "sixty/m"}, "'sixty/m' is not a rate: write starts per window, such as 60/m"),
    ({"rate_limit": "0/m"}, "allow from 1 to 10000 starts per window"),
    ({"rate_limit": "20000/d"}, "allow from 1 to 10000 starts per window"),
    ({"rate_limit": "5/P2D"}, "the window must be longer than 0 s and at most one day"),
    ({"rate_limit": "5/PT0S"}, "the window must be longer than 0 s"),
    ({"rate_limit": 60}, "60 is not a rate"),
    ({"rate_key": "customer,,region"}, "is not a list of params keys"),
    ({"rate_key": "k" * 201}, "use at most 200 characters"),
    ({"priority": 5}, "'priority' is not a job type field"),
]


@pytest.mark.parametrize(("fields", "message"), REGISTRAR_CASES)
def test_registrar_refuses_bad_values_by_name(stored, fields, message):
    local = Registry()
    known = dict(registry.job_types)
    before = snapshot()
    with pytest.raises(ValidationError) as refused:
        local.add_job_type("registered_type", "tests.kojo_jobs.noop", **fields)
    assert any(message in text for text in refused.value.messages), refused.value.messages
    assert local.job_types == {}
    assert local.sync() == []
    assert registry.job_types == known
    assert snapshot() == before


@pytest.mark.parametrize(
    ("type_code", "worker", "message"),
    [
        ("Robert'); --", "tests.kojo_jobs.noop", "is not a valid type code"),
        ("'; DROP TABLE kojo_job; --", "tests.kojo_jobs.noop", "is not a valid type code"),
        ("emoji_😀", "tests.kojo_jobs.noop", "is not a valid type code"),
        ("", "tests.kojo_jobs.noop", "is not a valid type code"),
        (None, "tests.kojo_jobs.noop", "None is not a valid type code"),
        ("fine_code", "os.system", "'os.system' is not a registered kojo worker"),
        ("fine_code", "tests.kojo_jobs.noop'; --", "is not a registered kojo worker"),
    ],
)
def test_registrar_refuses_bad_codes_and_workers(stored, type_code, worker, message):
    local = Registry()
    before = snapshot()
    with pytest.raises(ValidationError) as refused:
        local.add_job_type(type_code, worker)
    assert any(message in text for text in refused.value.messages), refused.value.messages
    assert local.job_types == {}
    assert snapshot() == before


@pytest.mark.parametrize("text", HOSTILE_TEXT[:-1] + ["x" * 255])
def test_hostile_names_and_queues_round_trip_through_the_registrar(stored, text):
    local = Registry()
    local.add_job_type("registered_type", "tests.kojo_jobs.noop", name=text, queue=text[:100])
    assert local.sync() == ["registered_type"]
    row = JobType.objects.get(type_code="registered_type")
    assert (row.name, row.queue) == (text, text[:100])


def test_the_registrar_does_not_replace_a_stored_type(stored):
    local = Registry()
    local.add_job_type("report", "tests.kojo_jobs.noop", name="'; DROP TABLE kojo_job; --", max_attempts=9)
    before = snapshot()
    assert local.sync() == []
    assert snapshot() == before
