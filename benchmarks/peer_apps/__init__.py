"""What every system in benchmarks/peers.py shares: the scratch stores, the task body, worker processes.

Each system has one small module beside this one defining its app and task plus a ``Peer`` class with
``clean()`` (empty its scratch store), ``enqueue(jobs)`` (one call per job, the documented way) and
``commands`` (its worker processes); ``Peer.start()``/``stop()`` come from ``Processes`` below.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

BENCHMARKS = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("KOJO_PEERS_REDIS_URL", "redis://127.0.0.1:6379/9")
PG = {
    "host": os.environ.get("PGHOST", "127.0.0.1"),
    "port": os.environ.get("PGPORT", "5432"),
    "user": os.environ.get("PGUSER", "root"),
}
PG_DB = "kojo_bench_peers"
PG_DSN = " ".join(f"{key}={value}" for key, value in {**PG, "dbname": PG_DB}.items())
WORKERS = 2  # processes running jobs, for every system
STAMPS = "kojo-bench:stamps"  # sorted set: "first" = earliest task start, "last" = latest task end
DONE = "kojo-bench:done"  # tasks run

_client: redis.Redis | None = None
_client_pid = 0


def client() -> redis.Redis:
    """A Redis client on the scratch db, one per process (forked workers make their own)."""
    global _client, _client_pid
    if _client is None or _client_pid != os.getpid():
        _client, _client_pid = redis.Redis.from_url(REDIS_URL), os.getpid()
    return _client


def noop() -> None:
    """The job every system runs: nothing, except noting when it ran, in one Redis round trip."""
    now = time.time()
    pipe = client().pipeline(transaction=False)
    pipe.zadd(STAMPS, {"first": now}, lt=True)
    pipe.zadd(STAMPS, {"last": now}, gt=True)
    pipe.incr(DONE)
    pipe.execute()


def done() -> int:
    return int(client().get(DONE) or 0)


def span() -> float:
    """Seconds from the first task's start to the last task's end."""
    stamps = dict(client().zrange(STAMPS, 0, -1, withscores=True))
    return stamps[b"last"] - stamps[b"first"]


def flush_redis(wait: float = 30.0) -> None:
    """Empty the scratch db, waiting up to `wait` s for a Redis that is (re)starting."""
    deadline = time.monotonic() + wait
    while True:
        try:
            client().flushdb()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def recreate_pg_database() -> None:
    """Drop and create the scratch PostgreSQL database ``kojo_bench_peers``."""
    import psycopg

    with psycopg.connect(**PG, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{PG_DB}"')


class Processes:
    """Worker processes started from ``commands``, each leading its own session, killed on ``stop()``."""

    commands: list[list[str]] = []
    env: dict[str, str] = {}

    def start(self) -> None:
        self.logs = Path(tempfile.mkdtemp(prefix="kojo-bench-peers-"))
        env = {**os.environ, **self.env, "PYTHONPATH": str(BENCHMARKS), "PYTHONUNBUFFERED": "1"}
        self.processes = []
        for number, command in enumerate(self.commands):
            with open(self.logs / f"worker-{number}.log", "w") as log:
                self.processes.append(
                    subprocess.Popen(
                        command,
                        cwd=BENCHMARKS,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )

    def check_alive(self) -> None:
        for number, process in enumerate(self.processes):
            if process.poll() is not None:
                log = (self.logs / f"worker-{number}.log").read_text()[-3000:]
                raise RuntimeError(
                    f"worker {command_name(self.commands[number])} exited with {process.returncode}:\n{log}"
                )

    def stop(self, timeout: float = 10.0) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes:
            try:
                process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(process.pid, signal.SIGKILL)  # the whole group: pool children too
            except ProcessLookupError:
                pass
            process.wait(10)
        shutil.rmtree(self.logs, ignore_errors=True)


def command_name(command: list[str]) -> str:
    return " ".join(Path(part).name if index == 0 else part for index, part in enumerate(command))


def bin_path(name: str) -> str:
    """A console script of the interpreter running this (the peers' virtualenv)."""
    return str(Path(sys.executable).parent / name)
