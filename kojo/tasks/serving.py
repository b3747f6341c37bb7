"""What a kojo_server needs to import any module the enqueuers could, with no TASKS setting.

A task is checked against its backend as its module is imported: ``@task(queue_name="emails")``
fails on Django's default ImmediateBackend (one queue), and ``@task(max_attempts=3)`` where the
backend's task class takes no kojo options. A project whose servers run with settings that say
nothing of TASKS would see every task of such a module fail. So, in the server only and only then,
kojo is the default backend with every queue open: the same answer the enqueuer's kojo backend gives.
"""

from __future__ import annotations

import logging

from asgiref.local import Local
from django.conf import settings

logger = logging.getLogger(__name__)

SERVER_DEFAULT = {"default": {"BACKEND": "kojo.tasks.KojoBackend", "QUEUES": []}}


def default_to_kojo() -> bool:
    """Make KojoBackend the default Tasks backend when the settings define no TASKS; return whether
    they did not (and Django Tasks is installed)."""
    if settings.is_overridden("TASKS"):
        return False
    try:
        from kojo.tasks import compat
    except ImportError:
        return False  # no Django Tasks here: nothing to run
    settings.TASKS = SERVER_DEFAULT
    backends = compat.task_backends
    backends._settings = backends.settings = backends.configure_settings(None)
    backends._connections = Local(backends.thread_critical)
    logger.debug("no TASKS setting: kojo serves Django tasks of every queue as the default backend")
    return True
