"""Every kojo setting, read in one place.

Each attribute of ``Settings`` is a default; ``settings.NAME`` returns ``KOJO_NAME`` from Django's
settings when the project defines it. Values are read on access, never at import time, so tests
that override settings see the new value at once.
"""

from __future__ import annotations

from django.conf import settings as django_settings


class Settings:
    # Which lock backend serves kojo.mutex() and kojo.semaphore(): "redis" (fleet-wide, through
    # django-redis), "postgres" (fleet-wide, in the database: no Redis failover to fear; messages are
    # then off and servers poll) or "local" (file locks, one host only; the SQLite try-out default).
    LOCK_BACKEND = "local"
    # Alias in CACHES of the django-redis cache the redis lock backend and messaging use.
    REDIS_CACHE = "default"
    # Directory for the local lock backend's lock files ("" = a kojo folder in the temp directory).
    LOCK_DIR = ""
    # Seconds a lock lease lasts unless its owner renews it.
    LOCK_LEASE = 10.0
    # Alias in DATABASES of the database holding kojo's tables: every kojo query, transaction and
    # statement goes there. Another alias than "default" needs a router sending kojo's models there
    # too (kojo.routers.KojoRouter, or your own): the admin and related lookups follow the routers.
    DATABASE = "default"
    # Prefix of every Redis key and channel kojo uses, so several projects can share one Redis.
    KEY_PREFIX = "kojo"

    # Seconds between a server's heartbeats in the database.
    HEARTBEAT_INTERVAL = 2.0
    # Seconds without a heartbeat after which a server is presumed dead and its jobs rescued.
    HEARTBEAT_TIMEOUT = 15.0
    # Seconds an idle server waits between looks for due jobs when no wake-up message arrives.
    POLL_INTERVAL = 1.0
    # Outside kojo's own server processes, publish messages (wake-ups, events) from a thread of the
    # process's own after the commit, so that a view's commit never waits for Redis. False: in line.
    PUBLISH_IN_BACKGROUND = True
    # How the server runs jobs: "ondemand" (fork per job), "static" or "dynamic" (pre-forked workers).
    MODE = "ondemand"
    # Most jobs one server runs at once (fork-per-job children, or pre-forked workers).
    CONCURRENCY = 4
    # "dynamic" mode: pre-forked workers kept even when idle.
    MIN_WORKERS = 1
    # Most jobs a pre-forked worker claims at once, ahead of running them, when its recent jobs were
    # short and none of the candidates' types has a limit or readiness criteria (1 = one at a time).
    PREFETCH = 64
    # Seconds of work (by the worker's recent average run time) a pre-forked worker holds claimed ahead;
    # once a job has run longer than this, the worker hands its unstarted jobs back to the queue (while
    # that job still runs).
    PREFETCH_WINDOW = 0.05
    # Pre-forked workers are replaced after this many jobs (0 = never).
    MAX_JOBS_PER_WORKER = 0
    # Pre-forked workers are replaced once their resident memory passes this many MiB (0 = never).
    MAX_WORKER_MEMORY_MB = 0
    # Seconds running jobs may take to finish after SIGTERM before they are killed.
    GRACEFUL_TIMEOUT = 30.0
    # Seconds between SIGTERM and SIGKILL for a job past its timeout, aborted or stopped.
    KILL_GRACE = 5.0
    # Seconds between housekeeping passes (cron, orphan rescue, pruning).
    HOUSEKEEPING_INTERVAL = 1.0
    # Seconds between two progress writes of one job; quicker reports are kept in memory only.
    PROGRESS_MIN_INTERVAL = 1.0
    # Largest params object accepted at schedule time, in bytes of JSON.
    PARAMS_MAX_BYTES = 1024 * 1024
    # Finished jobs deleted per pruning batch.
    PRUNE_BATCH_SIZE = 1000
    # Directory where each server keeps its health file fresh, for ``kojo_status --server`` probes
    # ("" = a kojo-status folder in the temp directory).
    STATUS_DIR = ""
    # Bearer token the metrics view (kojo.urls) requires; "" = only logged-in staff may read it.
    METRICS_TOKEN = ""

    def __getattribute__(self, name: str):
        if name.isupper():
            return getattr(django_settings, f"KOJO_{name}", object.__getattribute__(self, name))
        return object.__getattribute__(self, name)


settings = Settings()
