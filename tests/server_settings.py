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
        try:
            _parsed = float(_value)
        except ValueError:
            _parsed = _value
        globals()["KOJO_" + _name.removeprefix("KOJO_TEST_SET_")] = _parsed
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "INFO"},
}
