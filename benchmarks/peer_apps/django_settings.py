"""Django settings for the Django-based peers (django-q2, django-tasks-db) on the scratch database."""

from urllib.parse import urlsplit

from peer_apps import PG, PG_DB, REDIS_URL, WORKERS

SECRET_KEY = "kojo-bench-peers"
DEBUG = False
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["django.contrib.contenttypes", "django_q", "django_tasks", "django_tasks_db"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": PG_DB,
        "USER": PG["user"],
        "HOST": PG["host"],
        "PORT": PG["port"],
        # persistent connections, as a worker would be configured (and as kojo's are)
        "CONN_MAX_AGE": None,
    }
}

_redis = urlsplit(REDIS_URL)
Q_CLUSTER = {
    "name": "kojo_bench",
    "workers": WORKERS,
    "timeout": 60,
    "retry": 120,
    "redis": {"host": _redis.hostname, "port": _redis.port or 6379, "db": int(_redis.path.strip("/") or 0)},
}
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
