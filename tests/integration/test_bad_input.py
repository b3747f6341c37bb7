"""Bad input through the public API: every refusal is a named error, and nothing stored changes."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

import kojo
from kojo import control
from kojo.exceptions import (
    IllegalTransition,
    InvalidParams,
    InvalidSchedule,
    JobNotFound,
    JobTypeDisabled,
    JobTypeNotFound,
)
from kojo.models import Job, Recurrence
from kojo.states import JobState
from tests.integration import bad_input
from tests.integration.bad_input import HOSTILE_TEXT, snapshot

pytestmark = pytest.mark.django_db
stored = bad_input.stored


def nested(depth: int, container=dict):
    value: object = "bottom"
    for _ in range(depth):
        value = {"a": value} if container is dict else [value]
    return value


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"tags": {"a", "b"}}, "not JSON serializable"),
        ({"raw": b"bytes"}, "not JSON serializable"),
        ({"when": datetime(2026, 1, 1, tzinfo=UTC)}, "not JSON serializable"),
        ({"day": date(2026, 1, 1)}, "not JSON serializable"),
        ({"price": Decimal("1.10")}, "not JSON serializable"),
        ({"call": print}, "not JSON serializable"),
        ({"n": math.nan}, "not JSON compliant"),
        ({"n": math.inf}, "not JSON compliant"),
        ({"n": -math.inf}, "not JSON compliant"),
        ({"deep": [1, {"x": {1, 2}}]}, "not JSON serializable"),
        ({"big": 10**5000}, "params are not JSON"),
        ({(1, 2): "tuple key"}, "keys must be str"),
        ({1: "int key"}, "keys must be text"),
        ({"a": {None: "null key"}}, "keys must be text"),
        ({"a": [{True: "bool key"}]}, "keys must be text"),
        ({1: "a", "1": "b"}, "keys must be text"),
        (["a", "list"], "must be a dict"),
        (("a", "tuple"), "must be a dict"),
        ("text", "must be a dict"),
        (42, "must be a dict"),
        ('{"json": "text"}', "must be a dict"),
        ({"s": "nul \x00 inside"}, "NUL character"),
        ({"nul\x00key": 1}, "NUL character"),
        ({"a": ["\x00"]}, "NUL character"),
        ({"s": "lone \ud800 surrogate"}, "not valid Unicode"),
        ({"lone \udfff": 1}, "not valid Unicode"),
        (nested(10_000), "maximum recursion depth"),
        (nested(10_000, list), "must be a dict"),
        ({"list": nested(10_000, list)}, "maximum recursion depth"),
    ],
)
def test_params_that_are_not_a_json_object_are_refused(stored, params, message):
    before = snapshot()
    with pytest.raises(InvalidParams, match=message):
        kojo.schedule("report", params)
    assert snapshot() == before


def test_params_beyond_the_byte_limit_are_refused_and_at_the_limit_accepted(stored, settings):
    settings.KOJO_PARAMS_MAX_BYTES = 1000
    before = snapshot()
    # {"s": "..."} is 9 bytes of JSON around the text; "é" is two bytes in UTF-8.
    for params in ({"s": "x" * 992}, {"s": "é" * 496}, {"s": "😀" * 248}):
        with pytest.raises(InvalidParams, match=r"are 1001 bytes of JSON; the limit is 1000 \(KOJO_PARAMS"):
            kojo.schedule("report", params)
    assert snapshot() == before
    job = kojo.schedule("report", {"s": "😀" * 247 + "xxx"})
    assert Job.objects.get(pk=job.pk).params == {"s": "😀" * 247 + "xxx"}


def test_huge_params_under_the_default_limit_are_refused(stored):
    before = snapshot()
    with pytest.raises(InvalidParams, match="the limit is 1048576"):
        kojo.schedule("report", {"blob": "x" * (1024 * 1024)})
    assert snapshot() == before


@pytest.mark.parametrize("text", HOSTILE_TEXT)
def test_hostile_text_in_params_round_trips_exactly(stored, text):
    params = {"value": text, text[:100]: [text, {"nested": text}], "n": -0.5, "big": 10**30}
    job = kojo.schedule("report", params, once=True)
    assert Job.objects.get(pk=job.pk).params == params
    assert kojo.schedule("report", dict(reversed(params.items())), once=True).pk == job.pk
    keyed = kojo.schedule("report", {"k": 1}, once_key=text[:128])
    assert Job.objects.get(pk=keyed.pk).once_key == text[:128]


@pytest.mark.parametrize(
    "type_code",
    ["", "no_such_type", "REPORT", "report ", " report", "report\x00", "re\x00port", "x" * 10_000, 123, None]
    + HOSTILE_TEXT,
)
def test_unknown_types_are_refused_by_name(stored, type_code):
    before = snapshot()
    with pytest.raises(JobTypeNotFound, match="no job type has the type code"):
        kojo.schedule(type_code, {"a": 1})
    with pytest.raises(JobTypeNotFound, match="no job type has the type code"):
        kojo.recur(type_code, known_as="unknown", interval="PT1H")
    assert snapshot() == before


def test_disabled_types_are_refused_by_name(stored):
    before = snapshot()
    with pytest.raises(JobTypeDisabled, match="job type 'paused' is disabled"):
        kojo.schedule("paused")
    with pytest.raises(JobTypeDisabled, match="job type 'paused' is disabled"):
        kojo.schedule("paused", once=True)
    with pytest.raises(JobTypeDisabled, match="job type 'paused' is disabled"):
        kojo.recur("paused", known_as="weekly ✓", interval="PT2H")
    assert snapshot() == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"importance": 101}, "from -100 to 100, not 101"),
        ({"importance": -101}, "from -100 to 100, not -101"),
        ({"importance": 10**30}, "from -100 to 100"),
        ({"importance": 1.5}, "importance must be a whole number"),
        ({"importance": True}, "importance must be a whole number"),
        ({"importance": "high"}, "importance must be a whole number"),
        ({"max_attempts": 0}, "max_attempts must be a whole number from 1 to 1000, not 0"),
        ({"max_attempts": -3}, "max_attempts must be a whole number from 1 to 1000, not -3"),
        ({"max_attempts": 1001}, "from 1 to 1000, not 1001"),
        ({"max_attempts": 10**20}, "from 1 to 1000"),
        ({"max_attempts": 2.0}, "from 1 to 1000, not 2.0"),
        ({"max_attempts": True}, "from 1 to 1000, not True"),
        ({"max_attempts": "3"}, "from 1 to 1000, not '3'"),
        ({"once_key": ""}, "once_key must be text of 1 to 128 characters"),
        ({"once_key": "k" * 129}, "once_key must be text of 1 to 128 characters"),
        ({"once_key": 7}, "once_key must be text"),
        ({"once_key": "nul\x00"}, "without NUL characters"),
        ({"delay": -1}, "delay cannot be negative"),
        ({"delay": timedelta(seconds=-1)}, "delay cannot be negative"),
        ({"delay": math.nan}, "delay nan is not a usable number of seconds"),
        ({"delay": math.inf}, "delay inf is not a usable number of seconds"),
        ({"delay": 1e300}, "is not a usable number of seconds"),
        ({"delay": timedelta.max}, "is too long"),
        ({"delay": "-PT1S"}, "is not an ISO 8601 duration"),
        ({"delay": "P1M"}, "years and months have no fixed length"),
        ({"delay": "P1Y2M"}, "years and months have no fixed length"),
        ({"delay": "P"}, "is not an ISO 8601 duration"),
        ({"delay": "PT"}, "is not an ISO 8601 duration"),
        ({"delay": "1 hour"}, "is not an ISO 8601 duration"),
        ({"delay": "PT1H'; DROP TABLE kojo_job; --"}, "is not an ISO 8601 duration"),
        ({"delay": "P99999999999W"}, "longer than 100 years"),
        ({"delay": "P" + "9" * 400 + "D"}, "longer than 100 years"),
        ({"delay": True}, "delay must be a timedelta, seconds or an ISO 8601 duration"),
        ({"delay": [60]}, "delay must be a timedelta"),
        ({"at": datetime(2030, 1, 1)}, "aware datetime"),
        ({"at": "2030-01-01T00:00:00Z"}, "at must be a datetime, not str"),
        ({"at": date(2030, 1, 1)}, "at must be a datetime, not date"),
        ({"at": datetime(2030, 1, 1, tzinfo=UTC), "delay": 5}, "not both"),
        ({"finish_by": datetime(2030, 1, 1)}, "finish_by must be an aware datetime"),
        (
            {"finish_by": "2030-01-01T00:00:00Z"},
            "finish_by: '2030-01-01T00:00:00Z' is not an ISO 8601 duration",
        ),
        ({"finish_by": math.inf}, "finish_by: a duration inf is not a usable number of seconds"),
        ({"finish_by": "P1M"}, "finish_by: .*years and months have no fixed length"),
        ({"finish_by": -60}, "finish_by: a duration cannot be negative"),
        ({"queue": ""}, "queue: A queue name cannot be empty"),
        ({"queue": "q" * 101}, "queue takes text of at most 100 characters"),
    ],
)
def test_absurd_scheduling_values_are_refused(stored, kwargs, message):
    before = snapshot()
    with pytest.raises(InvalidSchedule, match=message.replace("(", r"\(")):
        kojo.schedule("report", {"a": 1}, **kwargs)
    assert snapshot() == before


@pytest.mark.parametrize(
    ("depends_on", "message"),
    [
        ([10**20], "depends_on names jobs that do not exist: [100000000000000000000]"),
        ([-1], "do not exist: [-1]"),
        ([0], "do not exist: [0]"),
        ([999_999_999], "do not exist: [999999999]"),
        (["1"], "depends_on takes jobs or job ids, not ['1']"),
        ([1.0], "depends_on takes jobs or job ids"),
        ([True], "depends_on takes jobs or job ids"),
        ([None], "depends_on takes jobs or job ids, not [None]"),
        ([Job()], "depends_on takes jobs or job ids, not [None]"),
        (["'; DROP TABLE kojo_job; --"], "depends_on takes jobs or job ids"),
    ],
)
def test_dependencies_on_bad_ids_are_refused(stored, depends_on, message):
    before = snapshot()
    with pytest.raises(InvalidSchedule) as refused:
        kojo.schedule("report", depends_on=depends_on)
    assert message in str(refused.value)
    assert snapshot() == before


def test_dependencies_on_jobs_that_already_failed_are_refused(stored):
    doomed = kojo.schedule("report", {"doomed": True})
    control.cancel(doomed.pk)
    before = snapshot()
    with pytest.raises(InvalidSchedule, match="already ended without success"):
        kojo.schedule("report", depends_on=[stored["job"], doomed])
    with pytest.raises(TypeError, match="not iterable"):
        kojo.schedule("report", depends_on=None)
    assert snapshot() == before


CONTROLS = [control.cancel, control.abort, control.release, control.retry, control.hold, control.run_now]


@pytest.mark.parametrize("operation", CONTROLS, ids=lambda operation: operation.__name__)
@pytest.mark.parametrize("job_id", [0, -1, 999_999_999, 10**20, None])
def test_control_of_unknown_jobs_names_the_missing_job(stored, operation, job_id):
    before = snapshot()
    with pytest.raises(IllegalTransition, match=f"job {job_id} does not exist"):
        operation(job_id, by="'; DROP TABLE kojo_job; --")
    assert snapshot() == before


@pytest.mark.parametrize("operation", CONTROLS, ids=lambda operation: operation.__name__)
@pytest.mark.parametrize("job_id", ["abc", "1; DROP TABLE kojo_job", "😀"])
def test_control_with_ids_that_are_not_numbers_says_so(stored, operation, job_id):
    before = snapshot()
    with pytest.raises(ValueError, match="expected a number"):
        operation(job_id)
    assert snapshot() == before


def test_control_refuses_the_wrong_state_and_keeps_the_job(stored):
    job = stored["job"]
    before = snapshot()
    with pytest.raises(IllegalTransition, match=f"job {job.pk} is waiting; it cannot become waiting"):
        control.release(job.pk)
    with pytest.raises(IllegalTransition, match=f"job {job.pk} is waiting; it cannot become waiting"):
        control.retry(job.pk)
    assert snapshot() == before


@pytest.mark.parametrize("job_id", [0, -1, 10**20])
def test_waiting_for_unknown_jobs_names_the_missing_job(stored, job_id):
    with pytest.raises(JobNotFound, match=f"no job has the id {job_id}"):
        kojo.wait([stored["job"], job_id], timeout=0.1)


@pytest.mark.parametrize("known_as", ["unknown", "", "nul\x00", "x" * 10_000, *HOSTILE_TEXT])
def test_stopping_an_unknown_recurrence_changes_nothing(stored, known_as):
    before = snapshot()
    assert kojo.stop_recurring(known_as) is False
    assert snapshot() == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"interval": "PT0S"}, "longer than zero"),
        ({"interval": "P0D"}, "longer than zero"),
        ({"interval": "PT0.0000001S"}, "longer than zero"),
        ({"interval": timedelta(0)}, "longer than zero"),
        ({"interval": timedelta(seconds=-5)}, "longer than zero, not -1 day, 23:59:55"),
        ({"interval": "-PT1H"}, "is not an ISO 8601 duration"),
        ({"interval": "P1M"}, "years and months have no fixed length"),
        ({"interval": "P1Y"}, "years and months have no fixed length"),
        ({"interval": "1h"}, "is not an ISO 8601 duration"),
        ({"interval": ""}, "is not an ISO 8601 duration"),
        ({"interval": "P99999999W"}, "longer than 100 years"),
        ({"interval": timedelta(days=365 * 200)}, "longer than 100 years"),
        ({"interval": 3600}, "interval must be an ISO 8601 duration or a timedelta, not 3600"),
        ({"interval": None}, "interval must be an ISO 8601 duration or a timedelta, not None"),
        ({"known_as": ""}, "known_as must be text of 1 to 200 characters"),
        ({"known_as": "k" * 201}, "known_as must be text of 1 to 200 characters"),
        ({"known_as": None}, "known_as must be text"),
        ({"known_as": "nul\x00"}, "without NUL characters"),
        ({"reference": "middle"}, "reference must be one of end, start, not 'middle'"),
        ({"base_time": datetime(2026, 1, 1)}, "base_time must be an aware datetime"),
        ({"start_at": "now"}, "start_at must be an aware datetime"),
        ({"importance": 101}, "from -100 to 100, not 101"),
    ],
)
def test_bad_recurrences_are_refused_and_the_old_definition_kept(stored, kwargs, message):
    before = snapshot()
    arguments = {"known_as": "weekly ✓", "interval": "PT2H", **kwargs}
    with pytest.raises(InvalidSchedule, match=message):
        kojo.recur("report", {"day": "tue"}, **arguments)
    assert snapshot() == before


@pytest.mark.parametrize(
    ("params", "message"),
    [(["list"], "must be a dict"), ({"n": math.nan}, "not JSON compliant"), ({"s": "\x00"}, "NUL character")],
)
def test_recurrence_params_get_the_same_checks_as_jobs(stored, params, message):
    before = snapshot()
    with pytest.raises(InvalidParams, match=message):
        kojo.recur("report", params, known_as="weekly ✓", interval="PT1H")
    assert snapshot() == before


@pytest.mark.parametrize(
    ("interval", "text"),
    [
        (timedelta(hours=1), "PT3600S"),
        (timedelta(days=12), "PT1036800S"),
        (timedelta(days=365 * 99), "PT3122064000S"),
        (timedelta(seconds=1.234567), "PT1.234567S"),
        (timedelta(microseconds=1), "PT0.000001S"),
    ],
)
def test_timedelta_intervals_are_stored_exactly(stored, interval, text):
    recurrence = kojo.recur("report", known_as="exact", interval=interval)
    stored_row = Recurrence.objects.get(pk=recurrence.pk)
    assert (stored_row.interval, stored_row.interval_delta) == (text, interval)


@pytest.mark.parametrize("text", HOSTILE_TEXT)
def test_hostile_text_as_a_recurrence_name_round_trips_exactly(stored, text):
    known_as = text[:200]
    recurrence = kojo.recur("report", {"text": text}, known_as=known_as, interval="PT1H")
    stored_row = Recurrence.objects.get(pk=recurrence.pk)
    assert (stored_row.known_as, stored_row.params) == (known_as, {"text": text})
    assert kojo.stop_recurring(known_as) is True
    assert Recurrence.objects.filter(known_as="weekly ✓").exists()


def test_the_stored_rows_themselves_were_written_exactly(stored):
    job = Job.objects.get(pk=stored["job"].pk)
    assert job.params == {"note": "'; DROP TABLE kojo_job; --", "who": "😀"}
    assert job.state == JobState.WAITING
    assert stored["report"].name == "Report ☃ '; --"
    assert Recurrence.objects.get().known_as == "weekly ✓"
