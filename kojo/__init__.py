"""kojo: a distributed task manager for a fleet of Django servers.

The public API is imported lazily, so ``kojo`` can be listed in INSTALLED_APPS and imported from a
settings module before Django's app registry is ready.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "schedule": "kojo.scheduling",
    "schedule_many": "kojo.scheduling",
    "worker": "kojo.registry",
    "job_type": "kojo.registry",
    "register_job_type": "kojo.registry",
    "JobState": "kojo.states",
    "cancel": "kojo.control",
    "abort": "kojo.control",
    "release": "kojo.control",
    "retry": "kojo.control",
    "hold": "kojo.control",
    "run_now": "kojo.control",
    "listen": "kojo.messaging",
    "wait": "kojo.waiting",
    "recur": "kojo.recurrence",
    "stop_recurring": "kojo.recurrence",
    "readiness_check": "kojo.readiness",
    "mutex": "kojo.locks",
    "semaphore": "kojo.locks",
}

__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'kojo' has no attribute {name!r}")
