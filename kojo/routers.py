"""A database router for kojo's tables on another database than "default" (``KOJO_DATABASE``).

kojo sends its own transactions and statements to ``KOJO_DATABASE``; the ORM's other queries (the
admin's, a related lookup's, a model saved by a form) follow the routers. Add this one, or route
kojo's models there in your own::

    KOJO_DATABASE = "jobs"
    DATABASE_ROUTERS = ["kojo.routers.KojoRouter"]

A system check (kojo.E018) says when the routers and ``KOJO_DATABASE`` disagree. Jobs scheduled in a
transaction on another database then commit on their own: scheduling is atomic with your writes only
when both live in one database.
"""

from __future__ import annotations

from typing import Any

from kojo.conf import settings

APP_LABEL = "kojo"


class KojoRouter:
    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return settings.DATABASE if model._meta.app_label == APP_LABEL else None

    db_for_write = db_for_read

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool | None:
        if APP_LABEL in (obj1._meta.app_label, obj2._meta.app_label):
            return obj1._state.db == obj2._state.db
        return None

    def allow_migrate(
        self, db: str, app_label: str, model_name: str | None = None, **hints: Any
    ) -> bool | None:
        if app_label == APP_LABEL:
            return db == settings.DATABASE
        return None
