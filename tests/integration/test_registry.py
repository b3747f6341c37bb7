import pytest
from django.core.exceptions import ValidationError

import kojo
from kojo.models import JobType
from kojo.registry import Registry, registry


def test_decorated_functions_are_registered_workers():
    assert "tests.kojo_jobs.noop" in registry.workers
    assert "tests.kojo_jobs.echo" in registry.workers
    assert registry.job_types["noop"].worker == "tests.kojo_jobs.noop"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cron_expression": "61 * * * *"}, "not a valid cron expression"),
        ({"auto_delete_interval_duration": "7 days"}, "ISO 8601"),
        ({"schedule_limit": -1}, "not a valid limit"),
        ({"max_attempts": 0}, "not a valid number of attempts"),
        ({"colour": "blue"}, "not a job type field"),
    ],
)
def test_registrar_refuses_bad_values_with_the_shared_messages(fields, message):
    local = Registry()
    local.add_worker(test_decorated_functions_are_registered_workers)
    with pytest.raises(ValidationError, match=message):
        local.add_job_type("fine_code", test_decorated_functions_are_registered_workers, **fields)
    assert "fine_code" not in local.job_types


def test_registrar_refuses_unregistered_workers():
    with pytest.raises(ValidationError, match="not a registered kojo worker"):
        kojo.register_job_type("sneaky", "os.system")


class Mailer:
    def send(self, job):
        return "sent"


def test_classes_register_each_public_method():
    local = Registry()
    local.add_worker(Mailer)
    assert local.resolve(f"{__name__}.Mailer.send")(None) == "sent"


@pytest.mark.django_db
def test_sync_creates_missing_rows_once_and_keeps_operator_changes():
    JobType.objects.filter(type_code="noop").delete()  # migrate made it (sync_after_migrate)
    assert "noop" in registry.sync()
    JobType.objects.filter(type_code="noop").update(schedule_limit=9, name="tuned")
    assert registry.sync() == []
    row = JobType.objects.get(type_code="noop")
    assert (row.schedule_limit, row.name) == (9, "tuned")


@pytest.mark.django_db
def test_declared_types_exist_once_migrate_has_run():
    """pytest-django built this database with migrate: the types of every kojo_jobs module are there."""
    assert JobType.objects.filter(type_code="noop", worker="tests.kojo_jobs.noop").exists()


@pytest.mark.django_db
def test_a_type_declared_after_migrate_gets_its_row_when_first_scheduled():
    registry.add_job_type("declared_late", "tests.kojo_jobs.noop", max_attempts=2)
    try:
        assert not JobType.objects.filter(type_code="declared_late").exists()
        job = kojo.schedule("declared_late")
        assert (job.job_type.type_code, job.job_type.max_attempts) == ("declared_late", 2)
    finally:
        del registry.job_types["declared_late"]


def test_the_example_projects_own_tests_pass_under_djangos_test_runner():
    """A user's ``manage.py test``: scheduling a declared type from a view works before any server ran."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    project = Path(__file__).resolve().parents[2] / "example_project"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("KOJO_", "DJANGO_"))}
    result = subprocess.run(
        [sys.executable, "manage.py", "test", "demo", "--noinput"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Ran 3 tests" in result.stderr
