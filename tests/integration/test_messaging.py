"""kojo.messaging against the real Redis (or Redis Cluster, KOJO_TEST_REDIS_CLUSTER): messages reach a
subscriber whose socket wakes select(), and no Redis failure ever reaches the sender."""

from __future__ import annotations

import logging
import select
import time
import uuid

import pytest

from kojo import messaging


@pytest.fixture
def redis_messaging(settings):
    settings.KOJO_LOCK_BACKEND = "redis"
    settings.KOJO_KEY_PREFIX = f"kojo-test-messaging-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def subscriber(redis_messaging):
    subscriber = messaging.Subscriber(messaging.WAKE, messaging.ABORT, messaging.EVENTS)
    subscriber.connect()
    assert subscriber.problem == "ok"
    # Redis may serve a PUBLISH before the SUBSCRIBE sent just before it on another connection:
    # until a message arrives, the subscription is not made yet.
    deadline = time.monotonic() + 10
    while not received(subscriber, 1, timeout=0.2):
        assert time.monotonic() < deadline, "the subscription was never made"
        messaging.publish(messaging.WAKE, {"probe": True})
    while received(subscriber, 1, timeout=0.2):
        pass
    yield subscriber
    subscriber.drop()


def received(subscriber: messaging.Subscriber, count: int, timeout: float = 5.0) -> list[tuple[str, dict]]:
    """What arrives within ``timeout``, waiting in select() on the subscriber's socket as the arbiter does."""
    found: list[tuple[str, dict]] = []
    deadline = time.monotonic() + timeout
    while len(found) < count and time.monotonic() < deadline:
        fileno = subscriber.fileno()
        assert fileno is not None, subscriber.problem
        select.select([fileno], [], [], max(0.0, deadline - time.monotonic()))
        found += subscriber.messages()
    return found


def test_a_published_message_wakes_select_and_arrives(subscriber):
    messaging.publish(messaging.WAKE, {"job_id": 7, "type_code": "send"})
    messaging.publish(messaging.ABORT, {"job_id": 8, "by": "test"})
    assert received(subscriber, 2) == [
        ("wake", {"job_id": 7, "type_code": "send"}),
        ("abort", {"job_id": 8, "by": "test"}),
    ]


def test_committed_changes_are_one_event_message_and_one_wake_up(subscriber):
    changes = [
        {"job_id": 1, "type_code": "send", "from_state": "", "to_state": "waiting"},
        {"job_id": 2, "type_code": "send", "from_state": "waiting", "to_state": "canceled"},
    ]
    messaging.publish_changes(changes)
    found = received(subscriber, 2)
    assert [name for name, _ in found] == ["events", "wake"]
    assert found[0][1]["changes"] == changes
    assert found[1][1] == {"job_id": 1, "type_code": "send"}


def test_a_huge_commit_is_announced_in_parts_with_one_wake_up(subscriber):
    changes = [
        {"job_id": n, "type_code": "send", "from_state": "", "to_state": "waiting"} for n in range(2500)
    ]
    messaging.publish_changes(changes)
    found = received(subscriber, 4)
    assert [name for name, _ in found] == ["events", "events", "events", "wake"]
    assert [len(payload["changes"]) for _, payload in found[:3]] == [1000, 1000, 500]
    assert [item for _, payload in found[:3] for item in payload["changes"]] == changes


def test_listen_follows_published_changes(redis_messaging):
    import threading

    seen: list[dict] = []
    listener = threading.Thread(
        target=messaging.listen,
        args=(lambda event: seen.append(event) or len(seen) < 2, {"type_code": "send"}),
        kwargs={"timeout": 10},
    )
    listener.start()
    change = {"job_id": 3, "type_code": "send", "from_state": "", "to_state": "waiting"}
    deadline = time.monotonic() + 10
    while listener.is_alive() and time.monotonic() < deadline:
        # Until the listener's subscription is made, messages go nowhere: send again.
        messaging.publish_changes([change, {**change, "type_code": "other"}])
        time.sleep(0.2)
    listener.join(10)
    assert [(event["job_id"], event["type_code"]) for event in seen] == [(3, "send"), (3, "send")]


@pytest.mark.parametrize("factory", ["plain", "cluster"])
def test_an_unreachable_redis_never_fails_the_sender(redis_messaging, settings, caplog, factory):
    options = {"CONNECTION_FACTORY": "kojo.redis_cluster.ClusterConnectionFactory"}
    if factory == "plain":
        options = {}
    settings.CACHES = {
        **settings.CACHES,
        "nowhere": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1",
            "OPTIONS": {**options, "SOCKET_CONNECT_TIMEOUT": 0.5},
        },
    }
    settings.KOJO_REDIS_CACHE = "nowhere"
    messaging.throttled.next_at.clear()
    with caplog.at_level(logging.WARNING, logger="kojo.messaging"):
        messaging.publish(messaging.WAKE, {"job_id": 1})
        messaging.publish_changes([{"job_id": 1, "type_code": "t", "from_state": "", "to_state": "waiting"}])
        subscriber = messaging.Subscriber(messaging.WAKE)
        assert subscriber.fileno() is None
        assert messaging.sender.flush(10)
    assert "could not publish" in caplog.text
    assert "unreachable" in subscriber.problem


@pytest.mark.django_db
@pytest.mark.parametrize("limited", [True, False])
def test_the_end_of_a_limited_types_run_wakes_the_fleet(
    subscriber, make_job_type, django_capture_on_commit_callbacks, limited
):
    """A slot of a limited type is free once a run ends: every server hears it and claims now, not at
    its next poll. An unlimited type's ending wakes no one (nothing was waiting for it)."""
    import kojo
    from kojo.claims import claim
    from kojo.runtime import JobContext

    kind = make_job_type(schedule_limit=1 if limited else 0)
    with django_capture_on_commit_callbacks(execute=True):
        kojo.schedule(kind.type_code)
    received(subscriber, 2)  # its own events and wake-up
    with django_capture_on_commit_callbacks(execute=True):
        (job,) = claim(1, host="here", pid=1)
    received(subscriber, 1, timeout=1)
    with django_capture_on_commit_callbacks(execute=True):
        JobContext(job).complete_success()
    names = [name for name, _ in received(subscriber, 2, timeout=2)]
    assert names == (["events", "wake"] if limited else ["events"])


def test_messages_leave_from_the_sender_thread_in_order(subscriber, monkeypatch):
    """KOJO_PUBLISH_IN_BACKGROUND: the caller hands messages over and goes on; one thread sends them."""
    import threading

    senders = []
    original = messaging.send_now

    def recording(what, cache, prepared):
        senders.append(threading.current_thread().name)
        original(what, cache, prepared)

    monkeypatch.setattr(messaging, "send_now", recording)
    for n in range(3):
        messaging.publish(messaging.WAKE, {"job_id": n})
    assert messaging.sender.flush(10)
    assert set(senders) == {"kojo-sender"}
    assert received(subscriber, 3) == [("wake", {"job_id": n}) for n in range(3)]
    monkeypatch.setattr(messaging, "synchronous", True)  # as in kojo_server's processes
    senders.clear()
    messaging.publish(messaging.WAKE, {"job_id": 9})
    assert senders == [threading.current_thread().name]
    assert received(subscriber, 1) == [("wake", {"job_id": 9})]


def test_a_forked_child_gets_a_sender_of_its_own(subscriber):
    import os

    messaging.publish(messaging.WAKE, {"from": "parent"})  # the parent's thread is running now
    assert messaging.sender.flush(10)
    pid = os.fork()
    if pid == 0:  # the child: no thread was inherited; its first message starts its own
        try:
            messaging.publish(messaging.WAKE, {"from": "child"})
            os._exit(0 if messaging.sender.flush(10) and messaging.sender.pid == os.getpid() else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [payload for _, payload in received(subscriber, 2)] == [{"from": "parent"}, {"from": "child"}]
