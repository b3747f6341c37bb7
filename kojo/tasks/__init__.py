"""kojo as a Django Tasks backend: ``TASKS = {"default": {"BACKEND": "kojo.tasks.KojoBackend"}}``.

Works with Django 6's ``django.tasks`` and with the ``django-tasks`` backport on Django 5.2 (see
``compat``). Names are imported lazily so that ``kojo.tasks.worker`` can be imported, and its worker
registered, even where Django Tasks is not installed.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_PUBLIC = {"KojoBackend": "kojo.tasks.backend", "KojoTask": "kojo.tasks.backend"}

__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'kojo.tasks' has no attribute {name!r}")
