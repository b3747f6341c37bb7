import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

import kojo
from kojo.exceptions import (
    InvalidParams,
    InvalidSchedule,
    JobTypeDisabled,
    JobTypeNotFound,
    WaitingLimitReached,
)
from kojo.models import Job, JobStateChange
from kojo.states import JobState

pytestmark = pytest.mark.django_db


def test_schedules_now_with_the_type_defaults(make_job_type):
    make_job_type("report", default_importance=7)
    before = timezone.now()
    job = kojo.schedule("report", {"day": "2026-11-26"})
    job.refresh_from_db()
    assert job.state == JobState.WAITING
    assert job.params == {"day": "2026-11-26"}
    assert job.importance == 7
    assert before <= job.start_after <= timezone.now()
    assert JobStateChange.objects.get(job=job).to_state == JobState.WAITING


def test_schedules_at_a_time_and_after_a_delay(make_job_type):
    make_job_type("report")
    at = datetime(2030, 1, 1, tzinfo=UTC)
    assert kojo.schedule("report", at=at).start_after == at
    soon = kojo.schedule("report", delay=60).start_after - timezone.now()
    assert timedelta(seconds=58) < soon <= timedelta(seconds=60)
    later = kojo.schedule("report", delay="PT1H").start_after - timezone.now()
    assert timedelta(minutes=59) < later <= timedelta(hours=1)
    assert kojo.schedule("report", importance=-5).importance == -5


@pytest.mark.parametrize(
    "params",
    [
        {"when": datetime(2026, 1, 1)},
        {"x": object()},
        {"n": float("nan")},
        ["a", "list"],
        "text",
        {"s": "\x00"},
    ],
)
def test_refuses_params_that_are_not_a_json_object(make_job_type, params):
    make_job_type("report")
    with pytest.raises(InvalidParams):
        kojo.schedule("report", params)
    assert not Job.objects.exists()


def test_refuses_huge_params(make_job_type, settings):
    settings.KOJO_PARAMS_MAX_BYTES = 1000
    make_job_type("report")
    with pytest.raises(InvalidParams, match="limit is 1000"):
        kojo.schedule("report", {"blob": "x" * 2000})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"at": datetime(2030, 1, 1)}, "aware datetime"),
        ({"at": "tomorrow"}, "must be a datetime"),
        ({"delay": -1}, "cannot be negative"),
        ({"delay": "soon"}, "ISO 8601"),
        ({"delay": 5, "at": timezone.now()}, "not both"),
        ({"importance": 101}, "from -100 to 100"),
        ({"importance": "high"}, "whole number"),
        ({"max_attempts": 0}, "max_attempts"),
    ],
)
def test_refuses_bad_schedule_arguments(make_job_type, kwargs, message):
    make_job_type("report")
    with pytest.raises(InvalidSchedule, match=message):
        kojo.schedule("report", **kwargs)
    assert not Job.objects.exists()


def test_unknown_and_disabled_types_are_refused(make_job_type):
    make_job_type("paused", is_enabled=False)
    with pytest.raises(JobTypeNotFound, match="'nope'"):
        kojo.schedule("nope")
    with pytest.raises(JobTypeDisabled, match="'paused' is disabled"):
        kojo.schedule("paused")


def test_a_rolled_back_transaction_leaves_no_job(make_job_type):
    make_job_type("report")

    class Boom(Exception):
        pass

    with pytest.raises(Boom), transaction.atomic():
        kojo.schedule("report")
        assert Job.objects.count() == 1
        raise Boom
    assert not Job.objects.exists()
    assert not JobStateChange.objects.exists()


def test_add_once_returns_the_pending_job(make_job_type):
    make_job_type("report")
    first = kojo.schedule("report", {"a": 1, "b": 2}, once=True)
    again = kojo.schedule("report", {"b": 2, "a": 1}, once=True)
    other = kojo.schedule("report", {"a": 2}, once=True)
    keyed = kojo.schedule("report", {"a": 3}, once_key="nightly")
    keyed_again = kojo.schedule("report", {"a": 4}, once_key="nightly")
    assert again.pk == first.pk
    assert other.pk != first.pk
    assert keyed_again.pk == keyed.pk
    assert Job.objects.count() == 3


def test_add_once_creates_a_new_job_once_the_first_finished(make_job_type):
    make_job_type("report")
    first = kojo.schedule("report", {"a": 1}, once=True)
    Job.objects.filter(pk=first.pk).update(state=JobState.COMPLETE_SUCCESS)
    assert kojo.schedule("report", {"a": 1}, once=True).pk != first.pk


@pytest.mark.django_db(transaction=True)
def test_add_once_is_race_safe_across_threads(make_job_type):
    make_job_type("report")
    barrier = threading.Barrier(8)
    ids, errors = [], []

    def add():
        try:
            barrier.wait()
            ids.append(kojo.schedule("report", {"same": True}, once=True).pk)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=add) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(ids)) == 1
    assert Job.objects.count() == 1


def test_waiting_allowance_refuses_extra_jobs(make_job_type):
    make_job_type("report", schedule_limit_allowance=2)
    kojo.schedule("report")
    kojo.schedule("report")
    with pytest.raises(WaitingLimitReached, match="2 waiting jobs"):
        kojo.schedule("report")
    assert Job.objects.count() == 2


postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="PostgreSQL's one-statement path"
)


@postgres_only
def test_a_plain_job_is_written_with_its_changelog_row_in_one_statement(make_job_type):
    from django.test.utils import CaptureQueriesContext

    kind = make_job_type(default_importance=7)
    with CaptureQueriesContext(connection) as queries:
        job = kojo.schedule(kind.type_code, {"n": 1}, max_attempts=3)
    assert len(queries) == 1
    stored = Job.objects.get(pk=job.pk)
    assert (stored.state, stored.importance, stored.max_attempts, stored.params) == (
        "waiting",
        7,
        3,
        {"n": 1},
    )
    assert (job.job_type, job.importance, job.created_at) == (kind, 7, stored.created_at)
    change = JobStateChange.objects.get(job=job)
    assert (change.to_state, change.reason, change.at) == ("waiting", "scheduled", stored.created_at)
    assert kojo.schedule(kind.type_code, importance=-3).importance == -3


@postgres_only
def test_the_one_statement_path_leaves_every_other_case_to_the_general_one(make_job_type):
    limited = make_job_type(schedule_limit=1, schedule_limit_allowance=1)
    kojo.schedule(limited.type_code)
    with pytest.raises(WaitingLimitReached):
        kojo.schedule(limited.type_code)
    disabled = make_job_type(is_enabled=False)
    with pytest.raises(JobTypeDisabled):
        kojo.schedule(disabled.type_code)
    with pytest.raises(JobTypeNotFound):
        kojo.schedule("no_such_type")
    with pytest.raises(JobTypeNotFound):
        kojo.schedule("bad\x00code")
    with pytest.raises(RuntimeError), transaction.atomic():
        kojo.schedule(make_job_type().type_code)
        raise RuntimeError("the caller rolls back")
    assert not Job.objects.exclude(job_type=limited).exists()


def test_jobs_scheduled_in_one_transaction_are_announced_in_one_delivery(
    make_job_type, django_capture_on_commit_callbacks
):
    from kojo.transitions import Delivery

    kind = make_job_type()
    with django_capture_on_commit_callbacks() as callbacks, transaction.atomic():
        kept = [kojo.schedule(kind.type_code) for _ in range(3)]
        with pytest.raises(RuntimeError), transaction.atomic():
            kojo.schedule(kind.type_code)  # in a savepoint rolled back: never announced
            raise RuntimeError("roll the savepoint back")
        kept.append(kojo.schedule(kind.type_code))
    deliveries = [callback for callback in callbacks if isinstance(callback, Delivery)]
    announced = [item["job_id"] for delivery in deliveries for item in delivery.changes]
    assert announced == [job.pk for job in kept]
    assert len(deliveries) == 1


def test_once_replace_keeps_an_identical_pending_job(make_job_type):
    kind = make_job_type()
    first = kojo.schedule(kind.type_code, {"n": 1}, once="replace")
    assert kojo.schedule(kind.type_code, {"n": 1}, once="replace") == first
    assert Job.objects.get(pk=first.pk).state == JobState.WAITING


def test_once_replace_cancels_a_pending_job_whose_options_changed_and_adds_the_new_one(make_job_type):
    kind = make_job_type()
    old = kojo.schedule(kind.type_code, {"v": 1}, once_key="report-7", importance=1)
    dependent = kojo.schedule(kind.type_code, depends_on=[old])
    new = kojo.schedule(kind.type_code, {"v": 2}, once_key="report-7", once="replace", importance=5)
    assert new.pk != old.pk and (new.params, new.importance, new.once_key) == ({"v": 2}, 5, "report-7")
    old.refresh_from_db()
    assert old.state == JobState.CANCELED
    reason = JobStateChange.objects.filter(job=old).order_by("id").last().reason
    assert reason == f"replaced by job {new.pk} (add-once key 'report-7')"
    # What waited on the old job waits on the new one, and was not canceled with it.
    assert list(Job.objects.get(pk=dependent.pk).dependencies.values_list("depends_on", flat=True)) == [
        new.pk
    ]
    assert Job.objects.get(pk=dependent.pk).state == JobState.WAITING
    later = timezone.now() + timedelta(hours=1)
    moved = kojo.schedule(
        kind.type_code, {"v": 2}, once_key="report-7", once="replace", importance=5, at=later
    )
    assert moved.pk != new.pk and moved.start_after == later


def test_once_replace_refuses_to_replace_a_working_job_and_bad_values_of_once(make_job_type):
    kind = make_job_type()
    running = kojo.schedule(kind.type_code, once_key="k")
    Job.objects.filter(pk=running.pk).update(state=JobState.WORKING)
    with pytest.raises(InvalidSchedule, match=f"job {running.pk} .* is working: it cannot be replaced"):
        kojo.schedule(kind.type_code, {"other": True}, once_key="k", once="replace")
    with pytest.raises(InvalidSchedule, match="once takes True, False or 'replace'"):
        kojo.schedule(kind.type_code, once="always")
    assert Job.objects.count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent writers need PostgreSQL")
def test_concurrent_replacements_leave_exactly_one_pending_job(make_job_type):
    from django.db import connections

    kind = make_job_type()
    kojo.schedule(kind.type_code, once_key="shared", importance=0)
    start = threading.Barrier(4)
    errors = []

    def replace(importance: int) -> None:
        try:
            start.wait()
            kojo.schedule(kind.type_code, once_key="shared", once="replace", importance=importance)
        except Exception as error:  # noqa: BLE001 - asserted below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=replace, args=(n,)) for n in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    pending = Job.objects.filter(job_type=kind, once_key="shared", state=JobState.WAITING)
    assert pending.count() == 1
    assert Job.objects.filter(job_type=kind, state=JobState.CANCELED).count() == 4


def test_a_job_may_override_its_types_timeout_and_retry_policy(make_job_type):
    from kojo.retries import retry_delay

    kind = make_job_type(timeout="PT1H", retry_interval="PT10S", retry_backoff="fixed", retry_jitter=False)
    job = kojo.schedule(kind.type_code, timeout="PT5S", retry_interval="PT2S", retry_backoff="linear")
    stored = Job.objects.select_related("job_type").get(pk=job.pk)
    assert (stored.timeout, stored.retry_interval, stored.retry_backoff) == ("PT5S", "PT2S", "linear")
    assert stored.timeout_delta == timedelta(seconds=5)
    assert retry_delay(kind, 3, stored) == timedelta(seconds=6)
    plain = Job.objects.select_related("job_type").get(pk=kojo.schedule(kind.type_code).pk)
    assert plain.timeout_delta == timedelta(hours=1) and retry_delay(kind, 3, plain) == timedelta(seconds=10)
    (many,) = kojo.schedule_many(kind.type_code, [{}], timeout="PT7S")
    assert Job.objects.get(pk=many.pk).timeout == "PT7S"


@pytest.mark.parametrize(
    "options, message",
    [
        ({"timeout": "5 seconds"}, "timeout: "),
        ({"retry_interval": "PT"}, "retry_interval: "),
        ({"retry_backoff": "random"}, "retry_backoff: 'random' is not a retry backoff"),
        ({"timeout": 5}, "timeout takes text"),
        ({"queue": ""}, "queue: A queue name cannot be empty"),
        ({"queue": "  "}, "queue: A queue name cannot be empty"),
        ({"queue": "q" * 101}, r"queue takes text of at most 100 characters \(a queue name\)"),
        ({"queue": ["mail"]}, "queue takes text"),
        ({"queue": "mail\x00"}, "queue: .* is not valid text"),
    ],
)
def test_bad_per_job_overrides_are_refused_and_nothing_is_written(make_job_type, options, message):
    kind = make_job_type()
    with pytest.raises(InvalidSchedule, match=message):
        kojo.schedule(kind.type_code, **options)
    with pytest.raises(InvalidSchedule, match=message):
        kojo.schedule_many(kind.type_code, [{}], **options)
    assert not Job.objects.filter(job_type=kind).exists()


@pytest.mark.django_db(transaction=True)
@postgres_only
def test_a_failed_one_statement_schedule_marks_the_callers_transaction_for_rollback(make_job_type):
    """The statement runs without a savepoint: when it fails inside a view's transaction, that
    transaction must not commit as if the job were in it."""
    import psycopg
    from django.db import OperationalError

    kind = make_job_type()
    params = connection.settings_dict
    locker = psycopg.connect(
        dbname=params["NAME"], user=params["USER"], host=params["HOST"], port=params["PORT"]
    )
    try:
        # Inserts into the jobs table wait for this lock (a migration, a bulk maintenance job).
        locker.execute("LOCK TABLE kojo_job IN SHARE MODE")
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '200ms'")
            with pytest.raises(OperationalError):
                kojo.schedule(kind.type_code)
            assert transaction.get_connection().needs_rollback
    finally:
        locker.close()
    assert not Job.objects.filter(job_type=kind).exists()


def test_once_replace_works_at_a_full_allowance_and_follows_per_job_options(make_job_type):
    kind = make_job_type(schedule_limit_allowance=1)
    old = kojo.schedule(kind.type_code, {"v": 1}, once_key="debounce", once="replace")
    new = kojo.schedule(kind.type_code, {"v": 2}, once_key="debounce", once="replace")  # one out, one in
    assert new.pk != old.pk and Job.objects.get(pk=old.pk).state == JobState.CANCELED
    assert kojo.schedule(kind.type_code, {"v": 2}, once_key="debounce", once="replace") == new
    longer = kojo.schedule(kind.type_code, {"v": 2}, once_key="debounce", once="replace", timeout="PT5M")
    assert longer.pk != new.pk and longer.timeout == "PT5M"
    moved = kojo.schedule(
        kind.type_code, {"v": 2}, once_key="debounce", once="replace", timeout="PT5M", queue="urgent"
    )
    assert moved.pk != longer.pk and moved.queue == "urgent"
    with pytest.raises(WaitingLimitReached):
        kojo.schedule(kind.type_code, {"v": 3}, once_key="another", once="replace")  # this one adds


def test_once_replace_leaves_a_held_job_to_its_operator(make_job_type):
    kind = make_job_type()
    held = kojo.schedule(kind.type_code, once_key="k")
    Job.objects.filter(pk=held.pk).update(state=JobState.HOLD)
    with pytest.raises(InvalidSchedule, match=f"job {held.pk} .* is hold: it cannot be replaced"):
        kojo.schedule(kind.type_code, {"new": True}, once_key="k", once="replace")


def test_overrides_longer_than_their_columns_are_refused(make_job_type):
    kind = make_job_type()
    with pytest.raises(InvalidSchedule, match="timeout takes text of at most 64 characters"):
        kojo.schedule(kind.type_code, timeout="PT" + "0" * 70 + "1S")
    assert not Job.objects.filter(job_type=kind).exists()


def test_each_captured_commit_delivers_its_own_announcements(
    make_job_type, django_capture_on_commit_callbacks
):
    """A delivery that ran takes no more changes (a test's captured callbacks stay listed after they ran)."""
    from kojo.transitions import Delivery

    kind = make_job_type()
    delivered = []
    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            job = kojo.schedule(kind.type_code)
        delivered.append([item["job_id"] for c in callbacks if isinstance(c, Delivery) for item in c.changes])
        assert delivered[-1] == [job.pk]
