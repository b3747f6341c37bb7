import pytest
from django.core import checks

from kojo.models import JobType

pytestmark = pytest.mark.django_db


def ids(messages):
    return sorted(message.id for message in messages if message.id.startswith("kojo."))


def test_clean_configuration_has_no_kojo_messages():
    assert ids(checks.run_checks(databases=["default"])) == []


def test_stored_rows_with_bad_values_are_reported():
    JobType.objects.create(
        type_code="bad_cron", name="x", worker="tests.kojo_jobs.noop", cron_expression="nope"
    )
    JobType.objects.create(type_code="bad_worker", name="x", worker="os.system")
    JobType.objects.create(
        type_code="bad_keep", name="x", worker="tests.kojo_jobs.noop", auto_delete_interval_duration="forever"
    )
    messages = checks.run_checks(databases=["default"])
    assert ids(messages) == ["kojo.E001", "kojo.E002", "kojo.E004"]
    assert any("'nope' is not a valid cron expression" in message.msg for message in messages)


def test_settings_are_checked(settings):
    settings.KOJO_LOCK_BACKEND = "zookeeper"
    settings.KOJO_MODE = "threads"
    assert ids(checks.run_checks()) == ["kojo.E006", "kojo.E008"]


@pytest.mark.parametrize(
    "name, value",
    [
        ("PREFETCH", 0),
        ("PREFETCH", -3),
        ("PREFETCH", 2.5),
        ("PREFETCH", "64"),
        ("PREFETCH", 10**6),
        ("PREFETCH_WINDOW", -1),
        ("PREFETCH_WINDOW", "50ms"),
        ("PREFETCH_WINDOW", 3600),
    ],
)
def test_prefetch_settings_are_checked(settings, name, value):
    setattr(settings, f"KOJO_{name}", value)
    messages = [message for message in checks.run_checks() if message.id == "kojo.E013"]
    assert len(messages) == 1 and f"KOJO_{name} is {value!r}" in messages[0].msg


@pytest.mark.parametrize(
    ("interval", "timeout", "expected"),
    [(2.0, 15.0, None), (3.75, 15.0, None), (4.0, 15.0, "more than a quarter"), (1, "15", "positive")]
    + [(0.25, 2.0, "at least 3 s")],
)
def test_heartbeats_leave_room_for_a_late_renewal(settings, interval, timeout, expected):
    settings.KOJO_HEARTBEAT_INTERVAL, settings.KOJO_HEARTBEAT_TIMEOUT = interval, timeout
    messages = [message.msg for message in checks.run_checks() if message.id == "kojo.E014"]
    assert (messages == []) if expected is None else (len(messages) == 1 and expected in messages[0])


def test_redis_backend_needs_a_django_redis_cache(settings):
    settings.KOJO_LOCK_BACKEND = "redis"
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    assert "kojo.E003" in ids(checks.run_checks())


# The check reads DATABASES as configured; no connection to the added alias is made.
@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_kojo_database_must_be_an_alias_and_where_the_routers_send_kojo(settings):
    settings.KOJO_DATABASE = "jobs"
    messages = [message for message in checks.run_checks() if message.id == "kojo.E018"]
    assert len(messages) == 1 and "not in DATABASES" in messages[0].msg
    settings.DATABASES = {**settings.DATABASES, "jobs": dict(settings.DATABASES["default"])}
    messages = [message for message in checks.run_checks() if message.id == "kojo.E018"]
    assert len(messages) == 1 and "routers send kojo's models to default" in messages[0].msg
    assert "kojo.routers.KojoRouter" in messages[0].hint
    settings.DATABASE_ROUTERS = ["kojo.routers.KojoRouter"]
    assert [message for message in checks.run_checks() if message.id == "kojo.E018"] == []


class JobOnlyRouter:
    """Sends kojo's Job to "jobs" and leaves its other models (job types, changelog...) where they were."""

    def db_for_read(self, model, **hints):
        return "jobs" if model.__name__ == "Job" else None

    db_for_write = db_for_read


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_every_kojo_model_must_be_routed_to_kojo_database(settings):
    settings.KOJO_DATABASE = "jobs"
    settings.DATABASES = {**settings.DATABASES, "jobs": dict(settings.DATABASES["default"])}
    settings.DATABASE_ROUTERS = [JobOnlyRouter()]
    messages = [message for message in checks.run_checks() if message.id == "kojo.E018"]
    assert len(messages) == 1 and "routers send kojo's models to default, jobs" in messages[0].msg
