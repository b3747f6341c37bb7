"""kojo.locks on every backend, with real processes, real signals, the real Redis and PostgreSQL.

One parametrised fixture runs every shared test on the redis, the postgres (on PostgreSQL) and the
local backend, whatever else KOJO_TEST_DB says; tests of lease expiry run on the two leased backends,
those of a Redis restart or failover on Redis only. Every test uses its own lock names, key prefix and
lock directory, so runs never collide.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
import redis
from django.db import connections

from kojo.conf import settings as kojo_settings
from kojo.exceptions import KojoConfigurationError, LockError, LockNotOwned, LockTimeout
from kojo.locks import get_backend, holders, mutex, semaphore
from kojo.locks import tokens as lock_tokens
from kojo.locks.base import Owner, machine_identity, process_start_time
from tests.integration.lock_helper import Helper
from tests.services import REDIS_PORT, redis_answers, start_redis, stop_redis

# The Redis backend draws its fencing tokens from the database's sequence where it is PostgreSQL.
pytestmark = pytest.mark.django_db

REPO = Path(__file__).resolve().parents[2]
LEASE = 2.0  # seconds; short so that renewal happens several times within a test


def unique(prefix: str = "lock") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def wait_until(condition, timeout: float, interval: float = 0.02, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def _use_backend(settings, kind: str, tmp_path: Path):
    settings.KOJO_LOCK_BACKEND = kind
    settings.KOJO_KEY_PREFIX = unique("kojo-test-locks")
    settings.KOJO_LOCK_DIR = str(tmp_path / "locks")
    settings.KOJO_LOCK_LEASE = LEASE

    def clear_holds(backend):
        backend._run(lambda connection: connection.execute("DELETE FROM kojo_lock_hold"))

    if kind == "postgres":
        first = get_backend()
        clear_holds(first)
    yield kind
    if kind == "postgres":
        # A setting the test changed built another backend; both close their connections, or the
        # test database could not be dropped at the end.
        last = get_backend()
        clear_holds(last)
        last.close()
        first.close()
    if kind == "redis":
        with contextlib.suppress(redis.exceptions.ConnectionError):
            client = get_backend().client
            keys = list(client.scan_iter(match=f"{kojo_settings.KEY_PREFIX}:*"))
            if keys:
                client.delete(*keys)


def _available(kind: str) -> None:
    from django.db import connection

    if kind == "postgres" and connection.vendor != "postgresql":
        pytest.skip("the postgres lock backend needs PostgreSQL")


@pytest.fixture(params=["redis", "postgres", "local"])
def backend(request, settings, tmp_path):
    """Runs a test once per lock backend."""
    _available(request.param)
    yield from _use_backend(settings, request.param, tmp_path)


@pytest.fixture(params=["redis", "postgres"])
def leased_backend(request, settings, tmp_path):
    """For behaviour of the fleet-wide backends only: leases that run out."""
    _available(request.param)
    yield from _use_backend(settings, request.param, tmp_path)


@pytest.fixture
def redis_backend(settings, tmp_path):
    """For behaviour only Redis has: a server that restarts, a replica promoted."""
    yield from _use_backend(settings, "redis", tmp_path)


@pytest.fixture
def postgres_backend(settings, tmp_path):
    """For behaviour only the postgres backend has: sessions, transactions, advisory locks."""
    _available("postgres")
    yield from _use_backend(settings, "postgres", tmp_path)


@pytest.fixture
def spawn(settings, tmp_path):
    """Start lock_helper processes configured like this test; they are killed at teardown."""
    started: list[Helper] = []
    helper_settings = {
        name: getattr(settings, name)
        for name in (
            "CACHES",
            "DATABASES",
            "KOJO_LOCK_BACKEND",
            "KOJO_KEY_PREFIX",
            "KOJO_LOCK_DIR",
            "KOJO_LOCK_LEASE",
        )
    }
    env = dict(os.environ, KOJO_LOCK_HELPER_SETTINGS=json.dumps(helper_settings))

    def start(mode: str, name: str, **options) -> Helper:
        stderr_path = tmp_path / f"helper-{len(started)}.stderr"
        with open(stderr_path, "wb") as stderr:
            command = ["unshare", "--pid", "--fork", "--mount-proc"] if options.get("namespace") else []
            process = subprocess.Popen(
                [
                    *command,
                    sys.executable,
                    "-u",
                    "-m",
                    "tests.integration.lock_helper",
                    json.dumps({"mode": mode, "name": name, **options}),
                ],
                cwd=REPO,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                bufsize=0,
                start_new_session=True,
            )
        helper = Helper(process, stderr_path)
        started.append(helper)
        return helper

    yield start
    for helper in started:
        helper.stop()


def test_mutex_excludes_a_second_holder(backend):
    name = unique()
    first, second = mutex(name), mutex(name)
    assert first.acquire()
    assert first.held and first.token is not None
    assert not second.acquire(blocking=False)
    first.release()
    assert not first.held and first.token is None
    assert second.acquire(blocking=False)
    second.release()
    with mutex(name, timeout=1) as held:
        assert held.held
        assert not mutex(name).acquire(blocking=False)
    assert mutex(name).acquire(blocking=False)


def test_try_once_returns_false_while_another_process_holds(backend, spawn):
    name = unique()
    holder = spawn("hold", name)
    holder.expect("held")
    lock = mutex(name)
    assert lock.acquire(blocking=False) is False
    holder.send("release")
    holder.expect("released")
    assert lock.acquire(blocking=False) is True
    lock.release()


def test_blocking_acquire_waits_until_release_or_timeout(backend):
    name = unique()
    holder, waiter = mutex(name), mutex(name)
    holder.acquire()

    started = time.monotonic()
    assert waiter.acquire(timeout=0.3) is False
    assert 0.3 <= time.monotonic() - started < 2.0
    with pytest.raises(LockTimeout), mutex(name, timeout=0.1):
        pass
    with pytest.raises(ValueError):
        waiter.acquire(blocking=False, timeout=1)

    releaser = threading.Timer(0.2, holder.release)
    releaser.start()
    started = time.monotonic()
    try:
        assert waiter.acquire(timeout=10) is True
    finally:
        releaser.join()
    assert time.monotonic() - started < 5
    with pytest.raises(LockError):
        waiter.acquire(blocking=False)  # one object, one hold
    waiter.release()


def test_semaphore_admits_exactly_its_limit(backend):
    name = unique()
    locks = [semaphore(name, 3) for _ in range(4)]
    assert [lock.acquire(blocking=False) for lock in locks] == [True, True, True, False]
    tokens = [lock.token for lock in locks[:3]]
    assert len(set(tokens)) == 3
    locks[1].release()
    assert locks[3].acquire(blocking=False)
    assert len(holders(name)) == 3
    for lock in (locks[0], locks[2], locks[3]):
        lock.release()
    assert holders(name) == []


def test_twenty_processes_never_exceed_a_semaphore_of_three(backend, spawn, tmp_path):
    name, counter = unique(), tmp_path / "inside"
    options = {"limit": 3, "rounds": 3, "hold_seconds": 0.04, "timeout": 30, "counter": str(counter)}
    contenders = [spawn("contend", name, **options) for _ in range(20)]
    for contender in contenders:
        contender.expect("ready")
    for contender in contenders:
        contender.send("go")
    peaks = [int(contender.expect("peak", timeout=40)[1]) for contender in contenders]
    assert max(peaks) == 3, peaks  # the limit was reached, and never passed
    assert counter.read_text() == "0"
    assert [contender.process.wait(timeout=10) for contender in contenders] == [0] * 20


def test_killed_holder_frees_its_slot_at_once_on_its_host(backend, spawn):
    name = unique()
    holder = spawn("hold", name)
    holder.expect("held")
    lock = mutex(name)
    assert not lock.acquire(blocking=False)
    holder.kill()
    # local: the kernel dropped the flock; redis: this host sees pid + start time are gone.
    assert lock.acquire(blocking=False)
    lock.release()


def test_killed_holder_on_a_vanished_host_is_freed_by_its_lease(leased_backend, spawn):
    name, lease, host = unique(), 1.0, unique("vanished-host")
    holder = spawn("hold", name, lease=lease, host=host)
    holder.expect("held")
    [hold] = holders(name)
    assert (hold.host, hold.pid) == (host, holder.pid)
    holder.kill()
    lock = mutex(name)
    assert not lock.acquire(blocking=False)  # no process here can tell that holder is dead
    started = time.monotonic()
    assert lock.acquire(timeout=lease + 5)
    assert time.monotonic() - started <= lease + 0.5
    lock.release()


@pytest.mark.skipif(not shutil.which("unshare") or os.geteuid() != 0, reason="needs unshare as root")
def test_a_holder_in_another_pid_namespace_with_the_same_host_name_is_never_judged_by_pid(
    leased_backend, spawn
):
    """A container sharing this host's name (host networking) but not its pids: its holder's pid means
    nothing here (pid 1 in its namespace is another process here). Its live hold must stand."""
    name = unique()
    holder = spawn("hold", name, lease=30.0, namespace=True)
    _, _, pid = holder.expect("held")
    [hold] = holders(name)
    assert hold.host == Owner.current().host and hold.owner.machine != machine_identity()
    assert int(pid) == hold.pid == 1  # the first process of its namespace
    lock = mutex(name)
    assert not lock.acquire(blocking=False), "a live hold in another PID namespace was freed"
    assert get_backend().reclaim_dead(name) == 0
    holder.send("status")
    assert holder.expect("held") == ["held"]


def test_lease_is_renewed_while_the_owner_lives(backend):
    name = unique()
    lock = mutex(name, lease=0.6)
    lock.acquire()
    first_expiry = lock.hold.expires
    end = time.monotonic() + 1.5  # more than two leases
    while time.monotonic() < end:
        assert not mutex(name).acquire(blocking=False)
        time.sleep(0.05)
    assert lock.held and not lock.lost
    if backend == "redis":
        assert lock.hold.expires > first_expiry
    lock.renew()
    lock.release()
    with pytest.raises(LockNotOwned):
        lock.renew()


def test_stale_owner_cannot_release_a_lock_another_holds(backend):
    name = unique()
    stale, current = mutex(name), mutex(name)
    stale.acquire()
    stale_hold = stale.hold
    stale.release()
    current.acquire()
    with pytest.raises(LockNotOwned):
        stale.release()
    with pytest.raises(LockNotOwned):
        stale.renew()
    with pytest.raises(LockNotOwned):
        get_backend().release(stale_hold)  # the hold itself is gone
    foreign = dataclasses.replace(current.hold, owner=Owner("elsewhere", 1, 1))
    with pytest.raises(LockNotOwned):
        get_backend().release(foreign)  # a hold that claims another owner
    assert [hold.token for hold in holders(name)] == [current.token]
    current.release()


def test_paused_holder_loses_its_lease_and_cannot_release(leased_backend, spawn):
    name = unique()
    holder = spawn("hold", name, lease=1.0)
    stale_token = int(holder.expect("held")[1])
    holder.kill(signal.SIGSTOP)  # alive (so not reclaimable) but not renewing
    try:
        lock = mutex(name)
        assert lock.acquire(timeout=5)
    finally:
        holder.kill(signal.SIGCONT)
    assert lock.token > stale_token
    holder.send("status")
    holder.expect("lost")
    holder.send("release")
    holder.expect("refused")
    assert [hold.pid for hold in holders(name)] == [os.getpid()]
    lock.release()


def test_fencing_tokens_strictly_increase(backend, spawn):
    name = unique()
    tokens = []
    for _ in range(3):
        with mutex(name) as lock:
            tokens.append(lock.token)
    helper = spawn("hold", name)
    tokens.append(int(helper.expect("held")[1]))
    helper.send("release")
    helper.expect("released")
    shared = [semaphore(name, 2) for _ in range(2)]
    for lock in shared:
        lock.acquire()
        tokens.append(lock.token)
    for lock in shared:
        lock.release()
    assert tokens == sorted(set(tokens)), tokens


@pytest.mark.parametrize("forgotten_by", ["a restart that lost its data", "a replica that is behind"])
def test_tokens_keep_increasing_across_processes_when_redis_forgets_the_last(
    redis_backend, spawn, forgotten_by
):
    """Another process's hold came last, then Redis lost its record of that token: this process's
    next hold must still get a larger one, so nothing this process drew earlier may be offered."""
    if not lock_tokens.durable():
        pytest.skip("durable fencing tokens come from PostgreSQL's sequence")
    name = unique()
    with mutex(name) as lock:
        mine = lock.token
    helper = spawn("hold", name)
    theirs = int(helper.expect("held")[1])
    helper.send("release")
    helper.expect("released")
    token_key = get_backend()._keys(name)[2]
    if forgotten_by == "a restart that lost its data":
        get_backend().client.delete(token_key)
    else:
        get_backend().client.set(token_key, mine)
    with mutex(name) as lock:
        assert lock.token > theirs > mine


def test_holds_taken_at_once_by_threads_of_one_process_never_share_a_token(redis_backend):
    if not lock_tokens.durable():
        pytest.skip("durable fencing tokens come from PostgreSQL's sequence")
    names = [unique() for _ in range(8)]
    start = threading.Barrier(len(names))

    def take(name: str) -> int:
        try:
            start.wait()
            with mutex(name, timeout=5) as lock:
                return lock.token
        finally:
            connections.close_all()  # this thread's own connection to the test database

    with ThreadPoolExecutor(len(names)) as pool:
        tokens = list(pool.map(take, names))
    assert len(set(tokens)) == len(names), tokens


def _last_token_drawn() -> int:
    with connections["default"].cursor() as cursor:
        cursor.execute(f"SELECT last_value FROM {lock_tokens.SEQUENCE}")
        return cursor.fetchone()[0]


def test_a_waiter_polling_a_taken_lock_draws_no_tokens_until_a_slot_is_free(redis_backend, spawn):
    """A blocking acquire polls many times a second; only the try that finds a slot free may cost a
    draw from the database's sequence (the first try, finding it taken, costs one)."""
    if not lock_tokens.durable():
        pytest.skip("durable fencing tokens come from PostgreSQL's sequence")
    name = unique()
    helper = spawn("hold", name)
    theirs = int(helper.expect("held")[1])
    before = _last_token_drawn()
    assert not mutex(name).acquire(timeout=1.5)
    assert (_last_token_drawn() - before) // 1000 <= 1  # the sequence steps by 1000
    helper.send("release")
    helper.expect("released")
    with mutex(name, timeout=5) as lock:
        assert lock.token > theirs
    assert (_last_token_drawn() - before) // 1000 <= 2


def test_a_postgres_lock_call_waiting_on_a_stalled_session_gives_up_as_unavailable(
    postgres_backend, monkeypatch
):
    """A session that took a name's advisory lock and stalled (a paused process mid-transaction) makes
    a renewal fail fast as unavailable rather than hang while its lease runs out."""
    from kojo.locks import postgres as postgres_locks
    from kojo.locks.base import BackendUnavailable

    monkeypatch.setattr(postgres_locks, "WAIT_BOUND_MS", 300)
    name = unique()
    lock = mutex(name)
    assert lock.acquire(blocking=False)
    params = connections["default"].settings_dict
    stalled = psycopg.connect(
        dbname=params["NAME"], user=params["USER"], host=params["HOST"], port=params["PORT"]
    )
    try:
        stalled.execute(postgres_locks.ACQUIRE_LOCK, [name])  # and then nothing, in its transaction
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="lock timeout|canceling statement"):
            get_backend().renew(lock.hold, LEASE)
        assert time.monotonic() - started < 3
    finally:
        stalled.close()
    lock.release()


def test_a_postgres_lock_session_stalled_in_its_transaction_is_cut_off_and_frees_the_name(
    postgres_backend, monkeypatch
):
    """The backend's own session paused while it holds a name's advisory lock loses that session
    once it has sat idle in the transaction for IDLE_BOUND_MS; another process's acquire goes on."""
    from kojo.locks import postgres as postgres_locks
    from kojo.locks.base import BackendUnavailable

    monkeypatch.setattr(postgres_locks, "IDLE_BOUND_MS", 300)
    name = unique()
    paused = postgres_locks.PostgresBackend()
    outcome: list[BaseException] = []

    def pause_mid_transaction(connection):
        connection.execute(postgres_locks.ACQUIRE_LOCK, [name])
        time.sleep(1.5)  # the process stops here, as under SIGSTOP
        connection.execute("SELECT 1")

    def run() -> None:
        try:
            paused._run(pause_mid_transaction)
        except BaseException as error:  # noqa: BLE001 - the outcome is asserted below
            outcome.append(error)

    pauser = threading.Thread(target=run)
    pauser.start()
    time.sleep(0.8)
    try:
        with mutex(name, timeout=0.5) as lock:  # another session: waits for no stalled one
            assert lock.token
    finally:
        pauser.join()
        paused.close()
    assert len(outcome) == 1 and isinstance(outcome[0], BackendUnavailable), outcome


def test_holders_show_owner_process(backend, spawn):
    name = unique()
    helper = spawn("hold", name, limit=2)
    helper_token = int(helper.expect("held")[1])
    mine = semaphore(name, 2)
    mine.acquire()
    holds = holders(name)
    expected = [(helper.pid, helper_token), (os.getpid(), mine.token)]
    assert [(hold.pid, hold.token) for hold in holds] == expected
    me = holds[1]
    assert (me.name, me.limit, me.host) == (name, 2, Owner.current().host)
    assert me.owner.started == process_start_time(os.getpid())
    assert me.since <= (me.expires or me.since)
    assert (me.expires is None) == (backend == "local")
    assert {hold.name for hold in holders()} == {name}
    mine.release()
    assert [hold.pid for hold in holders(name)] == [helper.pid]


def test_holders_list_every_lock_by_its_own_name(backend):
    """Names with braces and colons, which the Redis keys tag for their hash slot, come back as given;
    on a cluster their holds live on different nodes, and every node is asked."""
    base = unique()
    names = [f"{base}-{n}" for n in range(12)] + [f"}}{base}", f"{base}{{a}}b", f"{base}:holds:owners"]
    locks = [mutex(name) for name in names]
    for lock in locks:
        assert lock.acquire(blocking=False)
    try:
        assert [hold.name for hold in holders()] == sorted(names)
        assert [hold.name for hold in holders(names[-2])] == [names[-2]]
    finally:
        for lock in locks:
            lock.release()
    assert holders() == []


def test_the_keys_of_a_redis_lock_share_one_hash_slot(redis_backend):
    """A Redis Cluster runs a script only on keys of one slot (CROSSSLOT otherwise)."""
    from redis.cluster import key_slot

    backend = get_backend()
    for name in ["billing", "}starts-with-a-brace", "a{b}c", "{}", "x}"]:
        slots = {key_slot(key.encode()) for key in backend._keys(name)}
        assert len(slots) == 1, (name, backend._keys(name))
    assert len({key_slot(backend._keys(f"lock-{n}")[0].encode()) for n in range(50)}) > 40, "names spread"


def test_forked_child_owns_nothing_of_its_parents_hold(backend, spawn):
    helper = spawn("fork-check", unique())
    assert helper.expect("fork") == ["fork", "0", "parent-holds"]


def test_zombie_and_reused_pids_are_not_owners():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner = Owner(Owner.current().host, child.pid, process_start_time(child.pid), machine_identity())
        assert not owner.is_dead_here()
        assert dataclasses.replace(owner, started=owner.started + 1).is_dead_here()  # a reused pid
        # Recorded by an older version, or on another machine: never judged, whatever its pid says.
        assert not dataclasses.replace(owner, started=owner.started + 1, machine="").is_dead_here()
        assert not dataclasses.replace(owner, started=owner.started + 1, machine="other").is_dead_here()
        child.kill()
        wait_until(owner.is_dead_here, 5, message="the zombie to count as dead")
    finally:
        child.kill()
        child.wait()


def test_a_missing_fencing_token_sequence_is_refused_by_name():
    """Locks used before ``migrate`` (or by a role without USAGE on the sequence) say so."""
    from django.db import connection

    from kojo.locks.base import BackendRefused
    from kojo.locks.tokens import SEQUENCE, draw

    if connection.vendor != "postgresql":
        pytest.skip("the sequence is PostgreSQL's")
    with connection.cursor() as cursor:
        cursor.execute(f"DROP SEQUENCE {SEQUENCE}")  # in the test's transaction, rolled back after it
    with pytest.raises(BackendRefused, match="run manage.py migrate"):
        draw()


def test_a_draw_in_a_read_only_transaction_is_refused_and_leaves_it_usable():
    from django.db import connection, transaction

    from kojo.locks.base import BackendRefused
    from kojo.locks.tokens import draw

    if connection.vendor != "postgresql":
        pytest.skip("the sequence is PostgreSQL's")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET TRANSACTION READ ONLY")
        with pytest.raises(BackendRefused, match="read-only"):
            draw()
        cursor.execute("SELECT 1")  # the caller's transaction goes on
        assert cursor.fetchone() == (1,)


def test_unknown_backend_is_a_configuration_error(settings):
    settings.KOJO_LOCK_BACKEND = "zookeeper"
    with pytest.raises(KojoConfigurationError):
        mutex(unique()).acquire()


def test_redis_restart_holder_learns_it_lost_and_waiters_recover(redis_backend, spawn, settings):
    if settings.CACHES[kojo_settings.REDIS_CACHE]["LOCATION"] not in (
        f"redis://127.0.0.1:{REDIS_PORT}/0",
        f"redis://localhost:{REDIS_PORT}/0",
    ):
        pytest.skip("restarts only the local Redis on port 6379")
    name = unique()
    holder = spawn("hold", name, lease=1.5)
    stale_token = int(holder.expect("held")[1])
    waiter = spawn("hold", name, timeout=30)
    waiter.expect("waiting")
    try:
        stop_redis()
        start_redis()
        # Redis forgot every hold: the holder finds out at its next renewal (or lease end) ...
        holder.send("wait-lost 10")
        holder.expect("lost")
        # ... the waiter rode out the outage and gets the mutex, with a larger token ...
        token = int(waiter.expect("held", timeout=20)[1])
        assert token > stale_token
        # ... and there is never a second holder.
        assert [hold.pid for hold in holders(name)] == [waiter.pid]
        holder.send("release")
        holder.expect("refused")
        assert not mutex(name).acquire(blocking=False)
        waiter.send("release")
        waiter.expect("released")
        with mutex(name, timeout=5) as lock:
            assert lock.token > token
    finally:
        if not redis_answers():
            start_redis()


@pytest.fixture
def primary_and_replica(tmp_path):
    """A Redis primary and its replica of our own (ports 6391 and 6392), as a Sentinel pair runs."""
    ports = (6391, 6392)
    primary = ["--repl-diskless-sync-delay", "0"]  # a replica's first sync at once, not after 5 s
    for port, extra in ((ports[0], primary), (ports[1], ["--replicaof", "127.0.0.1", str(ports[0])])):
        subprocess.run(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "yes", "--save", "",
             "--appendonly", "no", "--dir", str(tmp_path), "--logfile", str(tmp_path / f"redis-{port}.log"),
             *extra],
            check=True, capture_output=True, timeout=10,
        )  # fmt: skip
    clients = [redis.Redis(host="127.0.0.1", port=port) for port in ports]
    try:
        for client in clients:
            wait_until(lambda c=client: _answers(c), 10, message="a Redis of the pair to answer")
        wait_until(lambda: clients[1].info("replication")["master_link_status"] == "up", 10)
        yield ports, clients
    finally:
        for client in clients:
            with contextlib.suppress(redis.exceptions.RedisError):
                client.shutdown(nosave=True, now=True)  # no wait for a replica to catch up
            client.close()


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.exceptions.RedisError:
        return False


def test_fencing_tokens_never_repeat_after_a_failover_to_a_replica_that_is_behind(
    primary_and_replica, redis_backend, settings
):
    """A promoted replica that missed the primary's last holds knows an older last token: the next
    holds must still get tokens never given before (kojo.locks.tokens), larger than all of them."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("durable fencing tokens come from PostgreSQL's sequence")
    (primary_port, replica_port), (primary, replica) = primary_and_replica
    settings.CACHES = {
        **settings.CACHES,
        **{
            alias: {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": f"redis://127.0.0.1:{port}/0"}
            for alias, port in (("primary", primary_port), ("promoted", replica_port))
        },
    }
    settings.KOJO_REDIS_CACHE = "primary"
    name = unique()

    def take(count: int) -> list[int]:
        taken = []
        for _ in range(count):
            with mutex(name, timeout=5) as lock:
                taken.append(lock.token)
        return taken

    seen_by_replica = take(5)
    # The replica has every one of those (WAIT would only wait for this client's own writes).
    written = primary.info("replication")["master_repl_offset"]
    wait_until(lambda: replica.info("replication")["slave_repl_offset"] >= written, 10, message="the sync")
    replica.execute_command("REPLICAOF", "NO", "ONE")  # cut off: it sees nothing more ...
    missed_by_replica = take(5)  # ... of these
    token_key = get_backend()._keys(name)[2]
    assert int(replica.get(token_key)) < max(missed_by_replica), "the promoted replica must be behind"

    settings.KOJO_REDIS_CACHE = "promoted"  # the failover: clients now talk to the old replica
    after_failover = take(5)

    before = seen_by_replica + missed_by_replica
    assert len(set(before + after_failover)) == 15, (before, after_failover)
    assert min(after_failover) > max(before), (before, after_failover)
    assert after_failover == sorted(after_failover)
