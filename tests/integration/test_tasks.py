"""KojoBackend without a server: enqueue writes a job, get_result reads it back, validation refuses."""

from datetime import datetime, timedelta

import pytest
from asgiref.sync import async_to_sync
from django.db import transaction
from django.utils import timezone

import kojo
from kojo.models import Job, JobType
from kojo.tasks import KojoBackend, KojoTask, compat
from kojo.tasks.worker import RUN_TASK
from tests import tasks

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def kojo_tasks(settings):
    settings.TASKS = {"default": {"BACKEND": "kojo.tasks.KojoBackend", "QUEUES": ["default", "emails"]}}
    return compat.task_backends["default"]


def test_the_backend_supports_everything_and_is_configured(kojo_tasks):
    assert isinstance(kojo_tasks, KojoBackend)
    assert kojo_tasks.supports_defer and kojo_tasks.supports_get_result
    assert kojo_tasks.supports_priority and kojo_tasks.supports_async_task
    assert kojo_tasks.queues == {"default", "emails"}


def test_enqueue_writes_a_job_that_get_result_reads_back():
    run_after = timezone.now() + timedelta(minutes=5)
    result = tasks.add.using(priority=40, run_after=run_after).enqueue(2, b=(3, 4))
    assert result.status == compat.TaskResultStatus.READY
    assert result.args == [2] and result.kwargs == {"b": [3, 4]}
    assert result.backend == "default" and result.attempts == 0 and result.errors == []
    job = Job.objects.get(pk=int(result.id))
    assert job.job_type.type_code == "task_default"
    assert job.job_type.worker == RUN_TASK and job.job_type.queue == "default"
    assert job.importance == 40 and job.start_after == run_after
    assert job.params["task"] == "tests.tasks.add" and job.params["backend"] == "default"
    assert job.created_at == result.enqueued_at

    again = tasks.add.get_result(result.id)
    assert again.status == compat.TaskResultStatus.READY
    assert again.task.priority == 40 and again.task.run_after == run_after
    assert (again.args, again.kwargs, again.enqueued_at) == ([2], {"b": [3, 4]}, result.enqueued_at)
    with pytest.raises(ValueError, match="not finished"):
        _ = again.return_value


def test_enqueue_sends_task_enqueued_once_its_transaction_commits(django_capture_on_commit_callbacks):
    received = []

    def receiver(sender, task_result, **kwargs):
        received.append((sender, task_result.id, task_result.status))

    compat.task_enqueued.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            result = tasks.add.enqueue(1, 2)
            assert received == []  # not before the job exists for everyone else
        assert received == [(KojoBackend, result.id, compat.TaskResultStatus.READY)]
        with pytest.raises(RuntimeError), django_capture_on_commit_callbacks(execute=True) as callbacks:
            with transaction.atomic():
                tasks.add.enqueue(3, 4)
                raise RuntimeError("roll back")
        assert callbacks == [] and len(received) == 1  # a rolled back enqueue is never announced
    finally:
        compat.task_enqueued.disconnect(receiver)


def test_a_rolled_back_enqueue_leaves_nothing():
    with pytest.raises(RuntimeError), transaction.atomic():
        tasks.add.enqueue(1, 2)
        tasks.add.using(queue_name="emails").enqueue(1, 2)
        assert Job.objects.count() == 2
        raise RuntimeError("roll back")
    assert not Job.objects.exists()
    assert not JobType.objects.filter(worker=RUN_TASK).exists()


def test_each_queue_has_its_own_job_type():
    result = tasks.add.using(queue_name="emails").enqueue(1, 2)
    job_type = Job.objects.get(pk=int(result.id)).job_type
    assert (job_type.type_code, job_type.queue, job_type.worker) == ("task_emails", "emails", RUN_TASK)


def with_options(func, **options):
    """``@task(**options)`` where the decorator forwards kojo's options (Django 6.1, the backport);
    ``KojoTask(func=..., **options)`` on Django 6.0, whose decorator takes none (as the README says)."""
    import inspect

    parameters = inspect.signature(compat.task).parameters.values()
    if any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
        return compat.task(**options)(func)
    return KojoTask(func=func, **options)


def test_task_options_create_a_job_type_for_the_task():
    custom = with_options(
        tasks.add.func, job_type="mail_task", max_attempts=3, timeout="PT5S", schedule_limit=2
    )
    assert isinstance(custom, KojoTask)
    custom.enqueue(1, 2)
    tasks.flaky.enqueue("x")
    mail = JobType.objects.get(type_code="mail_task")
    assert (mail.max_attempts, mail.timeout, mail.schedule_limit, mail.worker) == (3, "PT5S", 2, RUN_TASK)
    flaky = JobType.objects.get(name="Django task tests.tasks.flaky")
    assert flaky.type_code.startswith("task_tests_tasks_flaky")
    assert (flaky.max_attempts, flaky.retry_interval, flaky.retry_jitter) == (2, "PT0S", False)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: tasks.add.using(priority=101), "priority"),
        (lambda: tasks.add.using(priority=-101), "priority"),
        (lambda: tasks.add.using(queue_name="nowhere"), "Queue"),
        (lambda: tasks.add.using(run_after=datetime(2030, 1, 1)), "aware"),
        (lambda: KojoTask(func=tasks.add.func, takes_context=True), "context"),
        (lambda: KojoTask(func=lambda: None), "module level"),
        (lambda: KojoTask(func=tasks.not_a_task, max_attempts=0), "attempts"),
        (lambda: KojoTask(func=tasks.not_a_task, timeout="soon"), "duration"),
        (lambda: KojoTask(func=tasks.not_a_task, job_type="Bad Code"), "type code"),
        (lambda: KojoTask(func=tasks.not_a_task, retry_backoff="random"), "retry_backoff"),
    ],
)
def test_validate_task_refuses(make, message):
    with pytest.raises(compat.InvalidTask, match=message):
        make()


def test_queues_may_be_left_open(settings):
    settings.TASKS = {"default": {"BACKEND": "kojo.tasks.KojoBackend", "QUEUES": []}}
    result = tasks.add.using(queue_name="anything-goes").enqueue(1, 2)
    assert Job.objects.get(pk=int(result.id)).job_type.queue == "anything-goes"


def test_only_module_level_tasks_can_be_enqueued():
    with pytest.raises(compat.InvalidTask, match="module-level"):
        KojoTask(func=tasks.not_a_task).enqueue(1, 2)
    assert not Job.objects.exists()


def test_unknown_ids_do_not_exist(make_job_type):
    other = kojo.schedule(make_job_type().type_code)
    elsewhere = tasks.add.enqueue(1, 2)
    Job.objects.filter(pk=int(elsewhere.id)).update(
        params={**Job.objects.get(pk=int(elsewhere.id)).params, "backend": "other"}
    )
    backend = compat.task_backends["default"]
    for result_id in ["999999999", "abc", "", "1_0", str(other.pk), elsewhere.id]:
        with pytest.raises(compat.TaskResultDoesNotExist):
            backend.get_result(result_id)


def test_canceled_and_held_jobs_map_onto_django_statuses():
    held, canceled = tasks.add.enqueue(1, 2), tasks.add.enqueue(3, 4)
    kojo.hold(int(held.id))
    kojo.cancel(int(canceled.id))
    held.refresh()
    canceled.refresh()
    assert held.status == compat.TaskResultStatus.READY
    assert canceled.status == compat.TaskResultStatus.FAILED and canceled.finished_at is not None
    with pytest.raises(ValueError, match="failed"):
        _ = canceled.return_value


def test_async_enqueue_and_get_result():
    result = async_to_sync(tasks.async_add.aenqueue)(1, 2)
    again = async_to_sync(tasks.async_add.aget_result)(result.id)
    assert again.status == compat.TaskResultStatus.READY and again.args == [1, 2]


def test_a_project_without_kojo_installed_gets_a_check_error_not_a_crash():
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.no_kojo_settings", "PYTHONPATH": str(root)}
    checked = subprocess.run(
        [sys.executable, "-m", "django", "check"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 1
    assert "(kojo.E020) TASKS['default'] is kojo.tasks.KojoBackend, but 'kojo' is not in INSTALLED_APPS." in (
        checked.stderr
    )
    assert "RuntimeError" not in checked.stderr


def test_a_claim_given_back_unstarted_counts_no_attempt():
    """A draining server, or a pooled worker's job claimed ahead, hands a claim back with its attempt:
    the task's attempts (and its context's attempt) are kojo's, one worker id per attempt."""
    from kojo.claims import claim
    from kojo.retries import requeue_interrupted
    from kojo.tasks.results import task_result

    result = tasks.with_context.enqueue(1)
    (first,) = claim(1, host="node-a", pid=1)
    assert requeue_interrupted(first, "not started: handed back", actor="node-a:1")
    (second,) = claim(1, host="node-b", pid=2)
    job = Job.objects.get(pk=int(result.id))
    assert job.attempts == 1
    read = task_result(job, tasks.with_context)
    assert read.attempts == 1 and read.worker_ids == ["node-b:2"]
    assert read.started_at == second.started_at
