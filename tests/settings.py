"""Test settings: PostgreSQL and Redis by default; KOJO_TEST_DB=sqlite for the SQLite pass."""

import os
import re
import tempfile
from pathlib import Path

SECRET_KEY = "kojo-tests"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "kojo",
    "tests",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DB_VENDOR = os.environ.get("KOJO_TEST_DB", "postgres")
# Each test run (and each tox env) gets its own database name so parallel runs never collide.
DB_NAME = re.sub(r"\W", "_", os.environ.get("KOJO_TEST_DB_NAME", "kojo"))
if DB_VENDOR == "sqlite":
    _dir = Path(os.environ.get("KOJO_TEST_SQLITE_DIR", tempfile.gettempdir()))
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(_dir / f"{DB_NAME}.sqlite3"),
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20},
            "TEST": {"NAME": str(_dir / f"test_{DB_NAME}.sqlite3")},
        }
    }
    KOJO_LOCK_BACKEND = "local"
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "test",
            "USER": os.environ.get("PGUSER", "root"),
            "HOST": os.environ.get("PGHOST", "127.0.0.1"),
            "PORT": os.environ.get("PGPORT", "5432"),
            "TEST": {"NAME": f"test_{DB_NAME}"},
        }
    }
    KOJO_LOCK_BACKEND = "redis"

REDIS_URL = os.environ.get("KOJO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
    }
}
# KOJO_TEST_REDIS_SENTINEL=<host>:<port>: Redis through that Sentinel, which watches the service
# "kojotest" (tests/server/test_sentinel.py starts such a set and forces failovers).
if _sentinel := os.environ.get("KOJO_TEST_REDIS_SENTINEL"):
    _host, _port = _sentinel.rsplit(":", 1)
    CACHES["default"] = {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://kojotest/0",
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.SentinelClient",
            "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
            "SENTINELS": [(_host, int(_port))],
            "SOCKET_CONNECT_TIMEOUT": 1,
            "SOCKET_TIMEOUT": 2,
        },
    }
# KOJO_TEST_REDIS_CLUSTER=<host:port of one node>: the cache is a Redis Cluster, as the README sets it up.
if _cluster_node := os.environ.get("KOJO_TEST_REDIS_CLUSTER"):
    CACHES["default"]["LOCATION"] = f"redis://{_cluster_node}"
    CACHES["default"]["OPTIONS"]["CONNECTION_FACTORY"] = "kojo.redis_cluster.ClusterConnectionFactory"
KOJO_KEY_PREFIX = f"kojo-test-{DB_NAME}"
KOJO_LOCK_DIR = os.environ.get(
    "KOJO_TEST_LOCK_DIR", str(Path(tempfile.gettempdir()) / f"kojo-locks-{DB_NAME}")
)
KOJO_HEARTBEAT_INTERVAL = 0.5
KOJO_HEARTBEAT_TIMEOUT = 3.0
KOJO_POLL_INTERVAL = 0.2
KOJO_HOUSEKEEPING_INTERVAL = 0.5
KOJO_GRACEFUL_TIMEOUT = 5.0
KOJO_KILL_GRACE = 1.0
KOJO_PROGRESS_MIN_INTERVAL = 0.0

STATIC_URL = "/static/"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"kojo": {"handlers": ["console"], "level": os.environ.get("KOJO_LOG_LEVEL", "WARNING")}},
}
