"""Server settings with kojo's tables on a second database (``KOJO_DATABASE = "jobs"``, the test
database) and a "default" that does not exist: any kojo query that forgets the alias fails loudly."""

from tests.server_settings import *  # noqa: F403
from tests.server_settings import DATABASES

DATABASES = {
    "jobs": dict(DATABASES["default"]),
    "default": {**DATABASES["default"], "NAME": "kojo_no_such_database", "TEST": {}},
}
KOJO_DATABASE = "jobs"
DATABASE_ROUTERS = ["kojo.routers.KojoRouter"]
