"""Real kojo_server processes for the server tests, stopped (or killed) at teardown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOGS = Path(os.environ.get("KOJO_TEST_ARTIFACTS", ROOT / "artifacts")) / "server-logs"


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05, message: str = "condition"):
    """Poll until ``predicate()`` is truthy; fail with ``message`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


class ServerProcess:
    def __init__(self, name: str, args: list[str], env: dict[str, str]):
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log_path = LOGS / f"{name}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "django", "kojo_server", *args],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.process.pid

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        return self.process.wait(timeout)

    def kill_tree(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)
        self.log.close()

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text()


@pytest.fixture
def start_server(transactional_db, request):
    """Start ``kojo_server`` processes against the test database; kill them all at teardown."""
    started: list[ServerProcess] = []

    def start(*args: str, **env_overrides: str) -> ServerProcess:
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.server_settings", "PYTHONPATH": str(ROOT)}
        env.update(env_overrides)
        name = f"{request.node.name}-{len(started)}".replace("/", "_")[:120]
        server = ServerProcess(name, list(args), env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill_tree()
    # Give the database a moment to notice closed sessions before the test flush.
    time.sleep(0.05)
