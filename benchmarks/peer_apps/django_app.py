"""django-q2 (Redis broker, a cluster of 2 workers) and django-tasks-db (2 ``db_worker`` processes).

Both run on Django with ``peer_apps.django_settings`` on the scratch database.
"""

import os
import sys

os.environ["DJANGO_SETTINGS_MODULE"] = "peer_apps.django_settings"

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django_q.tasks import async_task  # noqa: E402
from django_tasks import task  # noqa: E402

from peer_apps import WORKERS, Processes, noop, recreate_pg_database  # noqa: E402

DJANGO = [sys.executable, "-m", "django"]


@task()
def tasks_noop():
    noop()


def clean_database() -> None:
    connection.close()
    recreate_pg_database()
    call_command("migrate", verbosity=0, interactive=False)


class DjangoQ2(Processes):
    label = "django-q2 (Redis broker)"
    env = {"DJANGO_SETTINGS_MODULE": "peer_apps.django_settings"}
    commands = [[*DJANGO, "qcluster"]]

    def clean(self) -> None:
        clean_database()

    def enqueue(self, jobs: int) -> None:
        for _ in range(jobs):
            async_task("peer_apps.noop")


class DjangoTasksDB(Processes):
    label = "django-tasks-db (db_worker)"
    env = {"DJANGO_SETTINGS_MODULE": "peer_apps.django_settings"}
    commands = [[*DJANGO, "db_worker", "--no-startup-delay"]] * WORKERS

    def clean(self) -> None:
        clean_database()

    def enqueue(self, jobs: int) -> None:
        for _ in range(jobs):
            tasks_noop.enqueue()
