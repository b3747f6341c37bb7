"""Django tasks run by a real kojo_server: results, failures, priority, run_after, async, retries.

The servers have no TASKS setting: everything the job process needs is on the job row.
"""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from kojo.tasks import KojoBackend, compat
from tests import tasks
from tests.server.conftest import wait_for

pytestmark = pytest.mark.server


@pytest.fixture(autouse=True)
def kojo_tasks(settings):
    settings.TASKS = {"default": {"BACKEND": "kojo.tasks.KojoBackend"}}


def finished(result, timeout=20.0):
    def check():
        result.refresh()
        return result.is_finished

    wait_for(check, timeout=timeout, message=f"task {result.id} to finish")
    return result


def test_tasks_succeed_with_their_return_value_or_fail_with_a_traceback(start_server):
    added, awaited = tasks.add.enqueue(2, 3), tasks.async_add.enqueue(4, b=5)
    failed = tasks.fail.enqueue("boom")
    server = start_server()
    for result, value in [(added, 5), (awaited, 9)]:
        assert finished(result).status == compat.TaskResultStatus.SUCCESSFUL
        assert result.return_value == value and result.errors == []
        assert result.attempts == 1 and re.fullmatch(r".+:\d+", result.worker_ids[0])
        assert result.enqueued_at <= result.started_at <= result.finished_at
        assert result.last_attempted_at == result.started_at

    assert finished(failed).status == compat.TaskResultStatus.FAILED
    assert failed.attempts == 1 and len(failed.errors) == 1
    error = failed.errors[0]
    assert error.exception_class_path == "builtins.ValueError" and error.exception_class is ValueError
    assert error.traceback.startswith("Traceback") and "ValueError: boom" in error.traceback
    assert "in fail" in error.traceback
    # The job process sent task_started and task_finished; Django's receivers logged them, the
    # failure with its traceback since it was sent from inside the exception handler.
    log = wait_for(
        lambda: (
            (text := server.output())
            and f"Task id={failed.id} path=tests.tasks.fail state=FAILED" in text
            and text
        )
    )
    assert f"Task id={added.id} path=tests.tasks.add state=RUNNING" in log
    assert f"Task id={added.id} path=tests.tasks.add state=SUCCESSFUL" in log
    after = log.split(f"Task id={failed.id} path=tests.tasks.fail state=FAILED", 1)[1]
    assert "Traceback" in after and "ValueError: boom" in after
    # Any backend instance, in any process, reads the same result.
    other = KojoBackend("default", {}).get_result(added.id)
    assert (other.status, other.return_value, other.worker_ids) == (
        compat.TaskResultStatus.SUCCESSFUL,
        5,
        added.worker_ids,
    )


def test_higher_priority_runs_first(start_server):
    results = [tasks.stamp.using(priority=priority).enqueue(str(priority)) for priority in (-50, 0, 90, 10)]
    start_server("--concurrency", "1")
    ran = sorted((finished(result).return_value["at"], result.return_value["label"]) for result in results)
    assert [label for _, label in ran] == ["90", "10", "0", "-50"]


def test_run_after_is_respected(start_server):
    run_after = timezone.now() + timedelta(seconds=1.5)
    later = tasks.add.using(run_after=run_after).enqueue(1, 1)
    now = tasks.add.enqueue(2, 2)
    start_server()
    assert finished(now).status == compat.TaskResultStatus.SUCCESSFUL
    later.refresh()
    assert later.status == compat.TaskResultStatus.READY or later.started_at >= run_after
    assert finished(later).return_value == 2
    assert later.started_at >= run_after


def test_retries_from_task_options_and_the_context(start_server):
    flaky, plain = tasks.flaky.enqueue("x"), tasks.with_context.enqueue(7)
    start_server()
    assert finished(plain).return_value == {"id": plain.id, "attempt": 1, "value": 7}
    assert finished(flaky).status == compat.TaskResultStatus.SUCCESSFUL
    assert flaky.return_value == {"attempt": 2, "value": "x"}
    assert flaky.attempts == 2 and len(flaky.worker_ids) == 2
    assert [error.exception_class_path for error in flaky.errors] == ["builtins.RuntimeError"]
    assert "first attempt fails" in flaky.errors[0].traceback


def test_every_failed_attempt_keeps_its_own_traceback(start_server):
    failing = tasks.always_fails.enqueue()
    start_server()
    assert finished(failing).status == compat.TaskResultStatus.FAILED
    assert failing.attempts == 3 and len(failing.errors) == 3
    for attempt, error in enumerate(failing.errors, 1):
        assert error.exception_class_path == "builtins.ValueError"
        assert (
            error.traceback.startswith("Traceback")
            and f"ValueError: attempt {attempt} fails" in error.traceback
        )
    assert failing.enqueued_at <= failing.started_at <= failing.last_attempted_at <= failing.finished_at


@pytest.mark.parametrize("mode", ["ondemand", "static"])
def test_a_task_raising_systemexit_or_keyboardinterrupt_fails_with_its_own_class_and_traceback(
    start_server, mode
):
    exited, interrupted = tasks.exits.enqueue(3), tasks.interrupted.enqueue()
    after = tasks.add.enqueue(1, 1)
    server = start_server("--mode", mode, "--concurrency", "1")
    for result, path in [(exited, "builtins.SystemExit"), (interrupted, "builtins.KeyboardInterrupt")]:
        assert finished(result).status == compat.TaskResultStatus.FAILED
        error = result.errors[-1]
        assert error.exception_class_path == path
        assert error.traceback.startswith("Traceback") and path.removeprefix("builtins.") in error.traceback
        # task_finished was sent: Django's receiver logged the failure.
        sent = f"Task id={result.id} path={result.task.module_path} state=FAILED"
        wait_for(lambda sent=sent: sent in server.output(), message="task_finished")
    assert finished(after).return_value == 2
    if mode == "static":
        # One pooled worker ran all three: the task's exit did not take the worker with it.
        assert len({*exited.worker_ids, *interrupted.worker_ids, *after.worker_ids}) == 1


def test_a_server_without_a_tasks_setting_imports_tasks_of_any_queue(start_server, settings):
    settings.TASKS = {"default": {"BACKEND": "kojo.tasks.KojoBackend", "QUEUES": []}}
    from tests import queued_tasks

    mailed = queued_tasks.send_mail.enqueue("hello")
    start_server()
    assert finished(mailed).status == compat.TaskResultStatus.SUCCESSFUL
    assert mailed.return_value == "sent hello"
