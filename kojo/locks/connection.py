"""kojo's own PostgreSQL connection, beside Django's: one per process, in autocommit.

A lock hold must never ride on the caller's transaction: taken inside it, it would be invisible to
the others until it commits and undone if it rolls back, and one failed statement would abort the
caller's work (Django then refuses every query until the block ends). The connection is built from
the Django settings of the database alias, without prepared statements, which a transaction pooler
(PgBouncer before 1.21) cannot keep.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from django.db import connections

T = TypeVar("T")

# Django's own OPTIONS for its PostgreSQL backend, which are not libpq's.
DJANGO_OPTIONS = {"isolation_level", "server_side_binding", "pool", "assume_role", "cursor_factory"}


def connection_params(using: str, application_name: str) -> dict[str, Any]:
    """libpq parameters of the Django database ``using``."""
    settings_dict = connections[using].settings_dict
    options = settings_dict.get("OPTIONS") or {}
    params = {key: value for key, value in options.items() if key not in DJANGO_OPTIONS}
    for key, name in (("NAME", "dbname"), ("USER", "user"), ("PASSWORD", "password"), ("HOST", "host")):
        if settings_dict.get(key):
            params[name] = settings_dict[key]
    if settings_dict.get("PORT"):
        params["port"] = int(settings_dict["PORT"])
    params.setdefault("application_name", application_name)
    params["prepare_threshold"] = None
    return params


class OwnConnection:
    """A lazily opened autocommit connection to the Django database ``using``, one per process and
    shared by its threads under a guard. A broken connection is dropped and the next call opens
    another; a forked child opens its own and never touches (nor closes) its parent's."""

    def __init__(self, using: str, application_name: str):
        self.using = using
        self.application_name = application_name
        self._guard = threading.Lock()
        self._connection: psycopg.Connection | None = None
        self._pid = os.getpid()
        # Objects inherited across a fork, kept unused: freeing one would say goodbye to the server
        # on the parent's behalf.
        self._inherited: list[psycopg.Connection] = []

    def run(self, work: Callable[[psycopg.Connection], T]) -> T:
        """``work(connection)`` under the guard; raises psycopg's error, having dropped a connection
        that is lost or broken."""
        self._forget_parents()
        with self._guard:
            connection = self._open()
            try:
                return work(connection)
            except psycopg.Error as error:
                if isinstance(error, psycopg.OperationalError) or connection.broken:
                    connection.close()
                    self._connection = None
                raise

    def close(self) -> None:
        """Close this process's connection (the next call opens another)."""
        self._forget_parents()
        with self._guard:
            if self._connection is not None:
                self._connection.close()
            self._connection = None

    def _forget_parents(self) -> None:
        if self._pid != os.getpid():
            # The pid last: a thread that sees it is this process's sees the new guard and no
            # inherited connection.
            self._guard = threading.Lock()
            if self._connection is not None:
                self._inherited.append(self._connection)
            self._connection = None
            self._pid = os.getpid()

    def _open(self) -> psycopg.Connection:
        if self._connection is None or self._connection.closed:
            params = connection_params(self.using, self.application_name)
            self._connection = psycopg.connect(**params, autocommit=True)
        return self._connection
