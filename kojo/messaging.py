"""Cross-node messages over Redis pub/sub: wake idle servers, deliver aborts, publish job events.

Messages only make things faster. Every server still polls the database (``POLL_INTERVAL``) and
checks abort requests with its heartbeat, so a lost message (Redis down, a subscriber reconnecting)
delays work by at most those intervals and loses nothing. Messages are sent after the transaction
that caused them commits, so a server never wakes for a job it cannot see yet. Without Redis
(``KOJO_LOCK_BACKEND = "local"``) nothing is sent and servers poll.

Channels are ``<prefix>:{messages}:wake|abort|events``. On a Redis Cluster (kojo.redis_cluster) they
go by sharded pub/sub: the hash tag puts them in one slot, so a message travels to one shard only
(classic PUBLISH is copied to every node) and a subscriber needs one connection, one socket for the
arbiter's ``select()``.
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import operator
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from kojo import redis_errors
from kojo.conf import settings
from kojo.redis_cluster import is_cluster
from kojo.states import JobState

logger = logging.getLogger(__name__)
throttled = redis_errors.Throttled(logger)

WAKE, ABORT, EVENTS = "wake", "abort", "events"


def enabled() -> bool:
    return settings.LOCK_BACKEND == "redis"


def channel_prefix() -> str:
    return f"{settings.KEY_PREFIX}:{{messages}}:"


def channel(name: str) -> str:
    return channel_prefix() + name


def client():
    from django_redis import get_redis_connection

    return get_redis_connection(settings.REDIS_CACHE)


def publish(name: str, payload: Mapping[str, Any]) -> None:
    """Best effort: a message that cannot be sent is logged, never raised (its cause committed
    already); polling covers for it."""
    publish_all(f"a {name} message", [(name, payload)])


# Job changes one events message carries at most (a few hundred bytes each).
CHANGES_PER_MESSAGE = 1000


def publish_changes(changes: list[dict[str, Any]], *, wake: bool = False) -> None:
    """Publish committed state changes, one wake-up if any job became waiting: in one round trip on a
    single Redis; on a cluster one after the other, as a cluster client pipelines no PUBLISH."""
    if not changes:
        return
    # One message per commit, however many jobs it changed (in parts of CHANGES_PER_MESSAGE, so a
    # transaction of a million jobs stays under Redis's output buffer limit for a subscriber);
    # listen() hands out one event each.
    at = time.time()
    messages: list[tuple[str, Mapping[str, Any]]] = [
        (EVENTS, {"at": at, "changes": changes[start : start + CHANGES_PER_MESSAGE]})
        for start in range(0, len(changes), CHANGES_PER_MESSAGE)
    ]
    woken = next((c for c in changes if c["to_state"] == JobState.WAITING), None)
    if woken is None and wake:
        woken = changes[0]  # a slot of a limited type freed: claim now, here or elsewhere
    if woken is not None:
        messages.append((WAKE, {"job_id": woken["job_id"], "type_code": woken["type_code"]}))
    publish_all(f"{len(changes)} job changes", messages)


def publish_events(events: list[dict[str, Any]]) -> None:
    """Publish lifecycle events (kojo.lifecycle): one message, in parts of CHANGES_PER_MESSAGE."""
    if events:
        at = time.time()
        messages: list[tuple[str, Mapping[str, Any]]] = [
            (EVENTS, {"at": at, "events": events[start : start + CHANGES_PER_MESSAGE]})
            for start in range(0, len(events), CHANGES_PER_MESSAGE)
        ]
        publish_all(f"{len(events)} lifecycle events", messages)


def publish_all(what: str, messages: list[tuple[str, Mapping[str, Any]]]) -> None:
    """Send now, or hand to this process's sender thread (``KOJO_PUBLISH_IN_BACKGROUND``): a view's
    commit then never waits for Redis. Either way a message leaves after the commit that caused it,
    to the channels and the Redis the settings named when it was handed over."""
    if not enabled():
        return
    try:
        prepared = [(channel(name), json.dumps(payload)) for name, payload in messages]
    except Exception as error:  # noqa: BLE001 - whatever fails, the caller's change has committed
        not_sent(what, error)
        return
    if settings.PUBLISH_IN_BACKGROUND and not synchronous:
        sender.put(what, settings.REDIS_CACHE, prepared)
    else:
        send_now(what, settings.REDIS_CACHE, prepared)


def send_now(what: str, cache: str, prepared: list[tuple[str, str]]) -> None:
    """Publish (channel, text) pairs: in one round trip on a single Redis; on a cluster one after
    the other, as a cluster client pipelines no PUBLISH."""
    from django_redis import get_redis_connection

    try:
        redis = get_redis_connection(cache)
        if is_cluster(redis):
            for name, text in prepared:
                redis.spublish(name, text)
            return
        pipeline = redis.pipeline(transaction=False)
        for name, text in prepared:
            pipeline.publish(name, text)
        pipeline.execute()
    except Exception as error:  # noqa: BLE001 - whatever fails, the caller's change has committed
        not_sent(what, error)


# Set by kojo_server and kojo_run before they start: a process that forks holds no thread of its own
# (a child forked while the sender held a lock would inherit the lock held), so they send in line.
synchronous = False
# Messages the sender thread pipelines at most in one round trip.
SENT_TOGETHER = 64


class Sender:
    """This process's sender thread, started at the first message (and again in a forked child):
    messages leave in the order they were handed over, those queued meanwhile in one round trip."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.queue: queue.Queue = queue.Queue()
        self.thread: threading.Thread | None = None

    def put(self, what: str, cache: str, prepared: list[tuple[str, str]]) -> None:
        if self.pid != os.getpid() or self.thread is None or not self.thread.is_alive():
            self.start()
        self.queue.put((what, cache, prepared))

    def start(self) -> None:
        self.pid, self.queue = os.getpid(), queue.Queue()
        self.thread = threading.Thread(target=self.run, args=(self.queue,), name="kojo-sender", daemon=True)
        self.thread.start()

    def run(self, waiting: queue.Queue) -> None:
        while True:
            batch = [waiting.get()]
            while len(batch) < SENT_TOGETHER:
                try:
                    batch.append(waiting.get_nowait())
                except queue.Empty:
                    break
            try:
                # Consecutive batches for one Redis go in one round trip, in order.
                for cache, together in itertools.groupby(batch, key=operator.itemgetter(1)):
                    together = list(together)
                    what = together[0][0] if len(together) == 1 else f"{len(together)} batches of messages"
                    send_now(what, cache, [message for *_, prepared in together for message in prepared])
            finally:
                for _ in batch:
                    waiting.task_done()

    def flush(self, timeout: float = 2.0) -> bool:
        """Wait up to ``timeout`` for what was handed over to be sent; at exit, and for tests."""
        if self.pid != os.getpid() or self.thread is None:
            return True
        done = threading.Event()
        threading.Thread(target=lambda: (self.queue.join(), done.set()), daemon=True).start()
        return done.wait(timeout)


sender = Sender()
atexit.register(sender.flush)


def not_sent(what: str, error: BaseException) -> None:
    described = redis_errors.describe(error)
    if not isinstance(error, redis_errors.ANY):
        logger.debug("publishing %s failed", what, exc_info=error)
    throttled.warning("publish", "could not publish %s; servers poll meanwhile: %s", what, described)


class Subscriber:
    """A pub/sub subscription whose socket can sit in the arbiter's ``select()``; reconnects lazily."""

    def __init__(self, *names: str):
        self.channels = [channel(name) for name in names]
        self.pubsub = None
        self.sharded = False  # on a Redis Cluster: SSUBSCRIBE, on the node of the channels' slot
        self.retry_at = 0.0
        self.problem = "ok"  # or what Redis said last, while messaging is down

    def fileno(self) -> int | None:
        if self.pubsub is None and time.monotonic() >= self.retry_at:
            self.connect()
        connection = self.connection()
        sock = connection._sock if connection is not None else None
        return sock.fileno() if sock is not None else None

    def connection(self):
        """The one connection messages arrive on: on a cluster, that to the node of the channels' slot."""
        if self.pubsub is None:
            return None
        if self.sharded:
            node_pubsubs = list(self.pubsub.node_pubsub_mapping.values())
            return node_pubsubs[0].connection if node_pubsubs else None
        return self.pubsub.connection

    def connect(self) -> None:
        try:
            redis = client()
            self.sharded = is_cluster(redis)
            self.pubsub = redis.pubsub(ignore_subscribe_messages=True)
            if self.sharded:
                self.pubsub.ssubscribe(*self.channels)
            else:
                self.pubsub.subscribe(*self.channels)
            self.problem = "ok"
        except redis_errors.ANY as error:
            self.failed("messaging unavailable", error)

    def failed(self, what: str, error: BaseException) -> None:
        """Any Redis failure (a refusal to subscribe comes with the next read): say what is wrong, at
        most once a minute, poll meanwhile and try again in 5 s."""
        self.problem = redis_errors.describe(error)
        throttled.warning("subscribe", "%s, polling only: %s", what, self.problem)
        self.drop()

    def drop(self) -> None:
        if self.pubsub is not None:
            try:
                self.pubsub.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail any way it likes
                pass
        self.pubsub = None
        self.retry_at = time.monotonic() + 5.0

    def messages(self, timeout: float = 0.0) -> list[tuple[str, dict]]:
        """Messages waiting now (or within ``timeout``), as (name, payload) pairs."""
        if self.pubsub is None:
            return []
        found = []
        prefix = channel_prefix()
        read = self.pubsub.get_sharded_message if self.sharded else self.pubsub.get_message
        try:
            while (message := read(timeout=timeout)) is not None:
                timeout = 0.0
                name = message["channel"].decode().removeprefix(prefix)
                try:
                    found.append((name, json.loads(message["data"])))
                except (TypeError, ValueError):
                    logger.warning("ignoring a malformed message on %s", name)
            if self.sharded and self.connection() is None:
                # The channels' slot moved to another node, which unsubscribed us: subscribe there.
                raise redis_errors.errors.ConnectionError("the node of kojo's channels unsubscribed it")
        except redis_errors.ANY as error:
            self.failed("messaging lost", error)
        return found


def listen(
    callback: Callable[[dict], Any],
    filter: Mapping[str, Any] | Callable[[dict], bool] | None = None,  # noqa: A002 - the public name
    *,
    timeout: float | None = None,
    lifecycle: bool = False,
) -> None:
    """Follow job events (one dict per state change) until ``callback`` returns False or ``timeout``.

    ``filter`` is a dict of field values that must match (a list or set allows any of its values),
    or a predicate. Events come from every node; this needs the Redis backend. Each event names
    itself in ``event``: "job_state_changed", and with ``lifecycle`` also "worker_started",
    "worker_stopped" and "job_postponed" (kojo.lifecycle).
    """
    if not enabled():
        raise RuntimeError("listen() needs KOJO_LOCK_BACKEND = 'redis' (events travel over Redis pub/sub)")
    subscriber = Subscriber(EVENTS)
    subscriber.connect()
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while deadline is None or time.monotonic() < deadline:
            wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
            if subscriber.pubsub is None:
                time.sleep(wait)
                subscriber.fileno()
                continue
            for _, message in subscriber.messages(timeout=wait):
                for event in events_in(message, lifecycle):
                    if matches(event, filter) and callback(event) is False:
                        return
    finally:
        subscriber.drop()


def events_in(message: dict, lifecycle: bool) -> list[dict]:
    """One message per commit (or per batch of lifecycle events); a message that is itself one change
    came from an older node."""
    if "events" in message:
        return [{**event, "at": message.get("at")} for event in message["events"]] if lifecycle else []
    changes = message["changes"] if "changes" in message else [message]
    return [{"event": "job_state_changed", **change, "at": message.get("at")} for change in changes]


def matches(event: dict, filter: Mapping[str, Any] | Callable[[dict], bool] | None) -> bool:  # noqa: A002
    if filter is None:
        return True
    if callable(filter):
        return bool(filter(event))
    for key, wanted in filter.items():
        value = event.get(key)
        if isinstance(wanted, list | tuple | set | frozenset):
            if value not in wanted:
                return False
        elif value != wanted:
            return False
    return True
