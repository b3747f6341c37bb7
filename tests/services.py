"""Stopping and starting the real PostgreSQL and Redis, for the tests that prove kojo rides out restarts.

Both are started with the same commands CI uses; Redis keeps nothing on disk, so a restart forgets all.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

import redis

REDIS_PORT = 6379


def wait_until(predicate, timeout: float, *, interval: float = 0.05, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def redis_answers() -> bool:
    client = redis.Redis(host="127.0.0.1", port=REDIS_PORT, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.exceptions.RedisError:
        return False
    finally:
        client.close()


def start_redis() -> None:
    command = shlex.split(
        f'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port {REDIS_PORT} --save "" '
        "--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log"
    )
    subprocess.run(command, check=True, capture_output=True, timeout=10)
    wait_until(redis_answers, 10, message="Redis to answer PING")


def stop_redis() -> None:
    command = ["redis-cli", "-p", str(REDIS_PORT), "shutdown", "nosave"]
    subprocess.run(command, capture_output=True, timeout=10)
    wait_until(lambda: not redis_answers(), 10, message="Redis to stop")


def postgres_answers() -> bool:
    result = subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"], capture_output=True)
    return result.returncode == 0


def postgres_cluster(action: str) -> None:
    """``pg_ctlcluster <version> main <action>``, as CI starts it (fast mode ends every session)."""
    version = sorted(path.name for path in Path("/etc/postgresql").iterdir())[0]
    command = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action]
    if action in ("stop", "restart"):
        command += ["-m", "fast"]
    subprocess.run(command, check=True, capture_output=True, timeout=60)


def ensure_services() -> None:
    """Put back whatever a failed test left stopped."""
    if not redis_answers():
        start_redis()
    if not postgres_answers():
        postgres_cluster("start")
        wait_until(postgres_answers, 30, message="PostgreSQL to accept connections")
