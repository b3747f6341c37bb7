"""Celery 5 with its Redis broker, a prefork pool of 2 processes, no result backend."""

from celery import Celery

from peer_apps import REDIS_URL, WORKERS, Processes, bin_path, noop

app = Celery("kojo_bench", broker=REDIS_URL)
app.conf.update(worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)


@app.task(name="noop")
def celery_noop():
    noop()


class Peer(Processes):
    label = "Celery (Redis broker)"
    commands = [
        [
            bin_path("celery"),
            "-A",
            "peer_apps.celery_app",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            str(WORKERS),
            "--loglevel",
            "WARNING",
        ],
    ]

    def clean(self) -> None:
        pass  # its only store is the scratch Redis db, flushed before every run

    def enqueue(self, jobs: int) -> None:
        for _ in range(jobs):
            celery_noop.delay()
