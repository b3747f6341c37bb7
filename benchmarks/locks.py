"""How fast kojo.locks hands out a mutex, on each backend.

Prints acquire/release pairs per second, uncontended (one process) and contended (two processes
taking turns on one mutex), so a change to the scripts or the file layout can be judged by numbers.
Run ``.venv/bin/python benchmarks/locks.py [pairs]``. It uses the tests' server settings on a scratch
PostgreSQL database of its own (``test_bench_locks``, created and migrated when missing: the redis
backend draws its fencing tokens from its sequence, the postgres backend keeps its holds there) and
the Redis those settings name.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.update(
    {
        "DJANGO_SETTINGS_MODULE": "tests.server_settings",
        "KOJO_TEST_DB": "postgres",
        "KOJO_TEST_DB_NAME": "bench_locks",
    }
)

import django  # noqa: E402

django.setup()

import psycopg  # noqa: E402
from django.conf import settings as django_settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import override_settings  # noqa: E402

from kojo.locks import get_backend, mutex  # noqa: E402

logger = logging.getLogger(__name__)

UNCONTENDED_PAIRS = 5000
CONTENDED_PAIRS = 1000  # per process


def take_turns(name: str, pairs: int) -> float:
    """Acquire and release `name` `pairs` times; return the seconds it took."""
    lock = mutex(name)
    started = time.perf_counter()
    for _ in range(pairs):
        lock.acquire()
        lock.release()
    return time.perf_counter() - started


def uncontended(name: str, pairs: int) -> float:
    take_turns(name, 50)  # warm up: connection, script loading, directory creation
    return pairs / take_turns(name, pairs)


def contended(overrides: dict, name: str, pairs: int) -> tuple[float, list[float]]:
    """Two worker processes take `pairs` turns each; return total pairs/s and each worker's seconds."""
    options = {"settings": overrides, "name": name, "pairs": pairs}
    command = [sys.executable, __file__, "--worker", json.dumps(options)]
    workers = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
        for _ in range(2)
    ]
    for worker in workers:
        assert worker.stdout.readline().strip() == "ready"
    started = time.perf_counter()
    for worker in workers:
        worker.stdin.write("go\n")
        worker.stdin.flush()
    seconds = []
    for worker in workers:
        seconds.append(float(worker.stdout.readline()))
        worker.stdin.close()
        worker.stdout.close()
        worker.wait()
    return 2 * pairs / (time.perf_counter() - started), seconds


def worker(options: dict) -> None:
    with override_settings(**options["settings"]):
        take_turns(options["name"], 10)
        print("ready", flush=True)
        sys.stdin.readline()
        print(take_turns(options["name"], options["pairs"]), flush=True)


def prepare_database() -> None:
    db = django_settings.DATABASES["default"]
    admin = {"host": db["HOST"], "port": db["PORT"], "user": db["USER"], "dbname": "test", "autocommit": True}
    with psycopg.connect(**admin) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]]).fetchone():
            conn.execute(f'CREATE DATABASE "{db["NAME"]}"')
    call_command("migrate", verbosity=0, interactive=False)
    connection.close()


def main(pairs: int) -> None:
    prepare_database()
    with tempfile.TemporaryDirectory(prefix="kojo-bench-") as lock_dir:
        for backend in ("redis", "postgres", "local"):
            prefix = f"kojo-bench-{uuid.uuid4().hex[:8]}"
            overrides = {"KOJO_LOCK_BACKEND": backend, "KOJO_KEY_PREFIX": prefix, "KOJO_LOCK_DIR": lock_dir}
            with override_settings(**overrides):
                rate = uncontended("bench", pairs)
                print(f"{backend:8} mutex, 1 process  : {rate:8,.0f} pairs/s ({pairs:,} pairs)")
                total, seconds = contended(overrides, "bench-contended", CONTENDED_PAIRS)
                each = ", ".join(f"{s:.2f}" for s in seconds)
                print(
                    f"{backend:8} mutex, 2 processes: {total:8,.0f} pairs/s "
                    f"({CONTENDED_PAIRS:,} pairs each; workers done after {each} s)"
                )
                if backend == "redis":
                    client = get_backend().client
                    for key in client.scan_iter(match=f"{prefix}:*"):
                        client.delete(key)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(json.loads(sys.argv[2]))
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else UNCONTENDED_PAIRS)
