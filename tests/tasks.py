"""Django tasks used by the tests, defined at module level as a project defines its own.

They are declared on the ``default`` alias, which is Django's ImmediateBackend until a test points
``TASKS`` at kojo; ``kojo_server`` processes import them with no ``TASKS`` setting at all.
"""

import asyncio
import time

from kojo.tasks import KojoTask
from kojo.tasks.compat import task


@task
def add(a, b):
    return a + b


@task
def fail(message):
    raise ValueError(message)


@task
def exits(code):
    raise SystemExit(code)


@task
def interrupted():
    raise KeyboardInterrupt("stop right there")


@task
async def async_add(a, b):
    await asyncio.sleep(0.01)
    return a + b


@task
def stamp(label):
    """Return the label and the time the task ran, to check the order tasks run in."""
    return {"label": label, "at": time.time()}


@task(takes_context=True)
def with_context(context, value):
    return {"id": context.task_result.id, "attempt": context.attempt, "value": value}


def flaky(context, value):
    """Fail on the first attempt, succeed on the second: kojo's retries, set as options of the task."""
    if context.attempt == 1:
        raise RuntimeError("first attempt fails")
    return {"attempt": context.attempt, "value": value}


# The decorator forwards these options only when kojo is the backend at import time (Django 6.1 and
# the backport); building the task class directly works on every line and whatever TASKS says.
flaky = KojoTask(func=flaky, takes_context=True, max_attempts=2, retry_interval="PT0S", retry_jitter=False)


def not_a_task(a, b):
    return a + b


def always_fails(context):
    raise ValueError(f"attempt {context.attempt} fails")


always_fails = KojoTask(
    func=always_fails, takes_context=True, max_attempts=3, retry_interval="PT0S", retry_jitter=False
)
