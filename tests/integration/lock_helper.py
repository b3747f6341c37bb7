"""A separate process that takes kojo locks on behalf of tests/integration/test_locks.py.

The test side drives it through the Helper class at the bottom of this module.

Run as ``python -m tests.integration.lock_helper '<JSON options>'`` with the test's Django settings,
as JSON, in KOJO_LOCK_HELPER_SETTINGS. It prints one line per event and obeys commands read from
stdin, so the test can hold locks in real processes, then kill, pause or question them.

Modes:
  hold        acquire, print "held <token> <pid>", then serve commands: "release", "status",
              "wait-lost <seconds>"
  contend     print "ready", wait for "go", then take the lock `rounds` times, counting holders in a
              shared counter file under flock; print "peak <most holders seen>"
  fork-check  acquire, fork, and check that the child owns nothing of its parent's hold and does not
              keep it alive once the parent releases it
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    options = json.loads(sys.argv[1])
    if options.get("host"):
        # Pretend to run on another host, whose processes this host cannot check.
        socket.gethostname = lambda: options["host"]
        import kojo.locks.base

        kojo.locks.base.machine_identity = lambda: f"elsewhere:{options['host']}"

    import django
    from django.conf import settings

    settings.configure(INSTALLED_APPS=[], **json.loads(os.environ["KOJO_LOCK_HELPER_SETTINGS"]))
    django.setup()
    return {"hold": hold, "contend": contend, "fork-check": fork_check}[options["mode"]](options)


def say(*words: object) -> None:
    print(*words, flush=True)


def hold(options: dict) -> int:
    from kojo.exceptions import LockNotOwned
    from kojo.locks import semaphore

    lock = semaphore(options["name"], options.get("limit", 1), lease=options.get("lease"))
    say("waiting")
    if not lock.acquire(timeout=options.get("timeout", 10)):
        say("timeout")
        return 1
    say("held", lock.token, os.getpid())
    for line in sys.stdin:
        command, *args = line.split()
        if command == "release":
            try:
                lock.release()
            except LockNotOwned as exc:
                say("refused", exc)
            else:
                say("released")
        elif command == "status":
            say("lost" if lock.lost else "held" if lock.held else "free")
        elif command == "wait-lost":
            deadline = time.monotonic() + float(args[0])
            while not lock.lost and time.monotonic() < deadline:
                time.sleep(0.01)
            say("lost" if lock.lost else "not-lost")
    return 0


def bump(counter_path: str, step: int) -> int:
    """Add `step` to the number in the counter file, under its own flock; return the new value."""
    with open(counter_path, "a+b") as counter:
        fcntl.flock(counter, fcntl.LOCK_EX)
        counter.seek(0)
        value = int(counter.read() or b"0") + step
        counter.seek(0)
        counter.truncate()
        counter.write(b"%d" % value)
        return value


def contend(options: dict) -> int:
    from kojo.locks import semaphore

    lock = semaphore(options["name"], options["limit"])
    say("ready")
    if sys.stdin.readline().strip() != "go":
        return 2
    peak = 0
    for _ in range(options["rounds"]):
        if not lock.acquire(timeout=options["timeout"]):
            say("timeout")
            return 1
        try:
            peak = max(peak, bump(options["counter"], +1))
            time.sleep(options["hold_seconds"])  # stay inside so that holders overlap
            bump(options["counter"], -1)
        finally:
            lock.release()
    say("peak", peak)
    return 0


def fork_check(options: dict) -> int:
    from kojo.exceptions import LockNotOwned
    from kojo.locks import mutex

    name = options["name"]
    lock = mutex(name)
    if not lock.acquire(timeout=10):
        say("timeout")
        return 1
    child_checked, parent_released = os.pipe(), os.pipe()
    child = os.fork()
    if child == 0:
        problems = 0
        try:
            lock.release()
            problems |= 1  # the child released its parent's hold
        except LockNotOwned:
            pass
        if lock.acquire(blocking=False) or mutex(name).acquire(blocking=False):
            problems |= 2  # the child took a lock its parent holds
        os.write(child_checked[1], b".")
        os.read(parent_released[0], 1)
        fresh = mutex(name)
        if fresh.acquire(timeout=5):
            fresh.release()
        else:
            problems |= 4  # something the child inherited kept the parent's hold alive
        os._exit(problems)
    os.read(child_checked[0], 1)
    parent_still_holds = lock.held and not mutex(name).acquire(blocking=False)
    lock.release()
    os.write(parent_released[1], b".")
    _, status = os.waitpid(child, 0)
    for fd in (*child_checked, *parent_released):
        os.close(fd)
    say("fork", os.waitstatus_to_exitcode(status), "parent-holds" if parent_still_holds else "parent-lost")
    return 0


class Helper:
    """A lock_helper process: send it commands, read its lines against deadlines."""

    def __init__(self, process: subprocess.Popen, stderr_path: Path):
        self.process = process
        self.stderr_path = stderr_path
        self._buffer = b""
        self.lines: list[str] = []

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, line: str) -> None:
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def expect(self, first_word: str, timeout: float = 15.0) -> list[str]:
        """Read lines until one starts with `first_word`; return its words."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                self.lines.append(line.decode())
                words = line.decode().split()
                if words and words[0] == first_word:
                    return words
            remaining = deadline - time.monotonic()
            fd = self.process.stdout.fileno()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise AssertionError(f"helper {self.pid}: no {first_word!r} in {timeout}s; {self.describe()}")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"helper {self.pid} exited before {first_word!r}; {self.describe()}")
            self._buffer += chunk

    def describe(self) -> str:
        return f"lines {self.lines}, stderr: {self.stderr_path.read_text()[-2000:]}"

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.process.send_signal(sig)
        if sig == signal.SIGKILL:
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process.stdin.close()
        self.process.stdout.close()


if __name__ == "__main__":
    sys.exit(main())
