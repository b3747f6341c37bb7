"""Settings for kojo_server processes started by the tests: the test database, not the real one."""

import os

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES

DATABASES["default"]["NAME"] = DATABASES["default"]["TEST"]["NAME"]
KOJO_GRACEFUL_TIMEOUT = float(os.environ.get("KOJO_TEST_GRACEFUL_TIMEOUT", "5"))
KOJO_CONCURRENCY = 4

# KOJO_TEST_SET_<NAME>=<value> in a server's environment sets KOJO_<NAME> for that server only.
for _name, _value in os.environ.items():
    if _name.startswith("KOJO_TEST_SET_"):
        for _kind in (int, float, str):
            try:
                _parsed = _kind(_value)
                break
            except ValueError:
                continue
        globals()["KOJO_" + _name.removeprefix("KOJO_TEST_SET_")] = _parsed

# KOJO_TEST_PGBOUNCER_PORT: servers reach PostgreSQL through PgBouncer in transaction pooling, set up
# as the README says (the test process itself stays direct: it creates and drops the database).
if os.environ.get("KOJO_TEST_PGBOUNCER_PORT"):
    DATABASES["default"]["PORT"] = os.environ["KOJO_TEST_PGBOUNCER_PORT"]
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True

# KOJO_TEST_DB_PORT: reach PostgreSQL through a test's proxy on that port (in plain text, so the proxy
# can read the protocol).
if os.environ.get("KOJO_TEST_DB_PORT"):
    DATABASES["default"]["PORT"] = os.environ["KOJO_TEST_DB_PORT"]
    DATABASES["default"].setdefault("OPTIONS", {})["sslmode"] = "disable"

# KOJO_TEST_CLOCK_OFFSET=<seconds>: this server's own clock runs that far ahead (negative: behind),
# as a node's would whose time is off.
if os.environ.get("KOJO_TEST_CLOCK_OFFSET"):
    import datetime as _datetime

    from django.utils import timezone as _timezone

    _offset = _datetime.timedelta(seconds=float(os.environ["KOJO_TEST_CLOCK_OFFSET"]))
    _real_now = _timezone.now
    _timezone.now = lambda: _real_now() + _offset

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "INFO"},
}

# KOJO_TEST_ROOT_LOGGING=WARNING: a project whose logging sends only warnings to its root handler and
# says nothing of kojo's loggers.
if _root_level := os.environ.get("KOJO_TEST_ROOT_LOGGING"):
    LOGGING = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"console": {"class": "logging.StreamHandler", "level": _root_level}},
        "root": {"handlers": ["console"], "level": _root_level},
    }
