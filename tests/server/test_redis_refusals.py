"""Redis that answers but refuses (an ACL user without channel rights, a wrong password): a job that
committed is never reported as failed, and servers keep running, on polling, saying what is wrong."""

from __future__ import annotations

import logging
import time
import uuid

import pytest
import redis
from django.conf import settings as django_settings

import kojo
from kojo import messaging
from tests.server.conftest import wait_for
from tests.server.helpers import all_finished
from tests.services import REDIS_PORT

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        django_settings.KOJO_LOCK_BACKEND != "redis", reason="the SQLite try-out runs without Redis"
    ),
]


@pytest.fixture
def no_channels_url():
    """A Redis user that may use every key and command but no pub/sub channel."""
    user, password = f"kojo-test-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    admin = redis.Redis(host="127.0.0.1", port=REDIS_PORT)
    admin.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "resetchannels", "+@all")
    yield f"redis://{user}:{password}@127.0.0.1:{REDIS_PORT}/0"
    admin.execute_command("ACL", "DELUSER", user)
    admin.close()


def use_redis(settings, url: str) -> None:
    settings.CACHES = {**settings.CACHES, "default": {**settings.CACHES["default"], "LOCATION": url}}


def test_a_scheduled_job_is_not_reported_failed_when_redis_refuses_its_events(
    settings, make_job_type, no_channels_url, caplog
):
    kind = make_job_type()
    use_redis(settings, no_channels_url)
    messaging.throttled.next_at.clear()
    with caplog.at_level(logging.WARNING, logger="kojo.messaging"):
        job = kojo.schedule(kind.type_code)  # committed, then the wake-up and events are refused
        assert messaging.sender.flush(10)  # sent from the process's sender thread
    assert job.pk is not None
    assert "lacks a permission" in caplog.text


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("no_channels", "lacks a permission"),
        (f"redis://kojo-nobody:wrong-password@127.0.0.1:{REDIS_PORT}/0", "credentials"),
    ],
)
def test_a_server_refused_by_redis_keeps_running_jobs_on_polling(
    start_server, make_job_type, no_channels_url, url, said
):
    kind = make_job_type(worker="tests.kojo_jobs.noop")
    url = no_channels_url if url == "no_channels" else url
    server = start_server("--concurrency", "2", KOJO_TEST_REDIS_URL=url)
    for _ in range(5):
        kojo.schedule(kind.type_code)
    wait_for(lambda: all_finished(kind), timeout=30, message="the jobs to run on polling")
    time.sleep(1.0)
    assert server.process.poll() is None, server.output()
    output = server.output()
    assert said in output, output
    assert "Traceback" not in output, output
