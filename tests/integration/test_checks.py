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


@pytest.mark.parametrize(
    "name, value",
    [
        ("CONCURRENCY", "abc"),
        ("CONCURRENCY", 0),
        ("CONCURRENCY", 2.0),
        ("CONCURRENCY", True),
        ("POLL_INTERVAL", "1s"),
        ("POLL_INTERVAL", 0),
        ("POLL_INTERVAL", float("nan")),
        ("LOCK_LEASE", -1),
        ("MIN_WORKERS", -1),
        ("MAX_JOBS_PER_WORKER", "100"),
        ("MAX_WORKER_MEMORY_MB", -5),
        ("GRACEFUL_TIMEOUT", None),
        ("KILL_GRACE", 0),
        ("HOUSEKEEPING_INTERVAL", "1"),
        ("PROGRESS_MIN_INTERVAL", -0.5),
        ("PARAMS_MAX_BYTES", 0),
        ("PRUNE_BATCH_SIZE", 10**9),
        ("KEY_PREFIX", 7),
        ("LOCK_DIR", None),
        ("STATUS_DIR", 3),
        ("METRICS_TOKEN", 5),
        ("REDIS_CACHE", ["default"]),
        ("DATABASE", None),
    ],
)
def test_every_setting_is_checked_for_its_kind_and_range(settings, name, value):
    setattr(settings, f"KOJO_{name}", value)
    messages = [message for message in checks.run_checks() if message.id == "kojo.E019"]
    assert len(messages) == 1, [message.msg for message in messages]
    assert messages[0].msg.startswith(f"KOJO_{name} is {value!r}; use ")
    assert "The default is" in messages[0].hint


def test_every_setting_has_a_rule():
    from kojo.checks import SETTING_RULES
    from kojo.conf import Settings

    assert sorted(SETTING_RULES) == sorted(name for name in vars(Settings) if name.isupper())


def test_valid_settings_of_every_kind_pass(settings, tmp_path):
    settings.KOJO_LOCK_DIR = tmp_path / "locks"  # a Path, as BASE_DIR / "locks" is
    settings.KOJO_STATUS_DIR = str(tmp_path)
    settings.KOJO_METRICS_TOKEN = None  # os.environ.get() of a variable that is not set
    settings.KOJO_PARAMS_MAX_BYTES = 5e6
    settings.KOJO_CONCURRENCY, settings.KOJO_MIN_WORKERS = 2, 3  # MIN_WORKERS is dynamic mode's only
    assert ids(checks.run_checks()) == []


def test_min_workers_may_not_exceed_concurrency(settings):
    settings.KOJO_MODE = "dynamic"
    settings.KOJO_CONCURRENCY, settings.KOJO_MIN_WORKERS = 2, 3
    messages = [message for message in checks.run_checks() if message.id == "kojo.E019"]
    assert [message.msg for message in messages] == ["KOJO_MIN_WORKERS (3) is above KOJO_CONCURRENCY (2)."]


def test_an_empty_key_prefix_is_refused(settings):
    settings.KOJO_KEY_PREFIX = ""
    assert ids(checks.run_checks()) == ["kojo.E019"]


def test_a_misspelt_setting_is_named_with_the_one_meant(settings):
    settings.KOJO_CONCURENCY = 8
    messages = [message for message in checks.run_checks() if message.id == "kojo.W003"]
    assert [message.msg for message in messages] == ["KOJO_CONCURENCY is not a kojo setting, and is ignored."]
    assert messages[0].hint == "Did you mean KOJO_CONCURRENCY?"


def test_the_server_refuses_to_start_with_a_setting_of_the_wrong_kind(settings):
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    settings.KOJO_CONCURRENCY = "abc"
    with pytest.raises(SystemCheckError, match="kojo.E019"):
        call_command("kojo_server", skip_checks=False)
