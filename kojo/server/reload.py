"""SIGHUP: run the code now on disk, without a supervisor ever seeing the server exit.

A server cannot load new job code into itself: modules already imported stay as they were. So on
SIGHUP it first starts a probe, the same command with ``--probe`` (Django set up, every app's kojo_jobs
imported, system checks run, then exit), and waits for it between its own rounds. When the probe
fails, the server keeps running its current code and logs why: a deploy with a syntax error leaves
the fleet running. When it succeeds, the server drains as for SIGTERM (running jobs get
GRACEFUL_TIMEOUT to finish; what is left is interrupted and handed back, charged nothing) and then
``exec``s the same command line: the same pid, new code, a new server row. During a rolling deploy,
servers claim only jobs whose worker their code registers (kojo.claims), so jobs of a type that only
the new code defines wait for a server running it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time

from django.db import connections

logger = logging.getLogger(__name__)

# Seconds a probe may take to set Django up before the reload is given up.
PROBE_TIMEOUT = 120.0
# Bytes of a failed probe's output kept for the log.
OUTPUT_TAIL = 2000


def command_line() -> list[str]:
    """This process's command line as it was started (``python manage.py kojo_server ...``)."""
    return [sys.executable, *sys.orig_argv[1:]]


class Probe:
    """The command started again with ``--probe``. The arbiter reaps every child with
    ``waitpid(-1)``, so it hands the probe's exit status over (``exited``) instead of this object
    waiting for it."""

    def __init__(self) -> None:
        self.output = tempfile.TemporaryFile()
        self.started = time.monotonic()
        self.status: int | None = None
        process = subprocess.Popen(
            [*command_line(), "--probe"],
            stdin=subprocess.DEVNULL,
            stdout=self.output,
            stderr=subprocess.STDOUT,
        )
        self.pid = process.pid
        process.returncode = 0  # reaped by the arbiter: the object must never wait for it itself

    def exited(self, status: int) -> None:
        self.status = status

    def overdue(self) -> bool:
        return self.status is None and time.monotonic() - self.started > PROBE_TIMEOUT

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    @property
    def succeeded(self) -> bool:
        return self.status is not None and os.waitstatus_to_exitcode(self.status) == 0

    def failure(self) -> str:
        """Why it failed, from the end of what it printed."""
        self.output.seek(0, os.SEEK_END)
        self.output.seek(max(0, self.output.tell() - OUTPUT_TAIL))
        tail = self.output.read().decode(errors="replace").strip()
        code = (
            "still running" if self.status is None else f"exit code {os.waitstatus_to_exitcode(self.status)}"
        )
        return f"{code}: {tail}" if tail else code

    def close(self) -> None:
        self.output.close()


def reexec() -> None:
    """Replace this process with the same command line (the drain is done: nothing runs)."""
    logger.info("server[%s] starting again with the code on disk", os.getpid())
    for handler in logging.getLogger().handlers + logging.getLogger("kojo").handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    connections.close_all()
    # Handlers go back to their defaults across exec, and SIGHUP's default is to die: a second reload
    # during the new image's start-up must not kill it. Ignored survives exec; run() takes it back.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    os.execv(sys.executable, command_line())
