"""kojo itself: one ``kojo_server`` with concurrency 2, pooled (static) or fork per job (ondemand).

Reuses benchmarks/throughput.py: its scratch database ``test_bench`` (re-created per run) and its
``Servers``; the servers get this package as an extra installed app, for the ``peer_noop`` job type.
"""

import atexit
import shutil

import throughput  # sets Django up on test_bench

import kojo
from kojo.models import JobType
from peer_apps import WORKERS

throughput.CONCURRENCY = WORKERS
SETTINGS = "kojo_bench_peer_settings"
(throughput.SETTINGS_DIR / f"{SETTINGS}.py").write_text(
    "from kojo_bench_settings import *  # noqa: F403\n\n"
    'INSTALLED_APPS = [*INSTALLED_APPS, "benchmarks.peer_apps"]  # noqa: F405\n'
)
throughput.BENCH_ENV["DJANGO_SETTINGS_MODULE"] = SETTINGS
atexit.register(shutil.rmtree, throughput.SETTINGS_DIR, True)
TYPE_CODE = "peer_noop"
WORKER = "benchmarks.peer_apps.kojo_jobs.peer_noop"


class Kojo:
    mode = ""

    def __init__(self) -> None:
        self.label = f"kojo {self.mode} ({'pooled' if self.mode == 'static' else 'fork per job'})"
        self.servers = throughput.Servers()

    def clean(self) -> None:
        throughput.prepare_database()
        JobType.objects.create(type_code=TYPE_CODE, name="Peer benchmark no-op", worker=WORKER)

    def enqueue(self, jobs: int) -> None:
        for _ in range(jobs):
            kojo.schedule(TYPE_CODE)

    def start(self) -> None:
        self.servers.start(self.mode, 1)

    def check_alive(self) -> None:
        self.servers.check_alive()

    def stop(self) -> None:
        self.servers.stop()


class Static(Kojo):
    mode = "static"


class Ondemand(Kojo):
    mode = "ondemand"
