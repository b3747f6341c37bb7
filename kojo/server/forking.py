"""What a freshly forked child does before anything else (fork hygiene).

The child must never use a database or Redis connection inherited from its parent: both processes
would talk over one socket. It also must not close them, which would end the parent's session, so the
inherited connection objects are kept referenced until the child calls ``os._exit``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable

from django.db import connections

from kojo.server import exitcodes, lease

try:
    from setproctitle import setproctitle
except ImportError:  # pragma: no cover - optional at run time

    def setproctitle(title: str) -> None:
        return None


logger = logging.getLogger(__name__)
_inherited: list[object] = []
# The arbiter's own file descriptors (its wake-up pipe, the read end of the report pipe): a child
# closes them first thing, so only the arbiter ever reads what children report.
parent_only_fds: list[int] = []
_PR_SET_PDEATHSIG = 1


def set_title(path: str) -> None:
    """``kojo: server[12]/job[42 send_mail]`` in ps and top."""
    setproctitle(f"kojo: {path}")


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL us when the parent dies, so no child outlives a killed server."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(0)


def prepare_child(parent_pid: int, title: str, *, own_process_group: bool) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    for fd in parent_only_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    if own_process_group:
        os.setpgrp()  # abort, timeout and stop then kill the job's whole group
    die_with_parent(parent_pid)
    forget_inherited_connections()
    lease.bounded_waits = False  # job code runs here: its waits are its own
    set_title(title)


def forget_inherited_connections() -> None:
    for alias in list(connections):
        wrapper = connections[alias]
        if wrapper.connection is not None:
            _inherited.append(wrapper.connection)
            wrapper.connection = None
        del connections[alias]


def fork_child(
    server_pid: int, title: str, run: Callable[[], None], *, own_process_group: bool, failure_code: int
) -> int:
    """Fork; in the child, prepare it, call ``run`` and leave with ``os._exit`` (never returning into
    the parent's code). Return the child's pid to the parent."""
    pid = os.fork()
    if pid:
        return pid
    code = exitcodes.OK
    try:
        prepare_child(server_pid, f"server[{server_pid}]/{title}", own_process_group=own_process_group)
        run()
    except BaseException:
        logger.exception("%s failed", title)
        code = failure_code
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
