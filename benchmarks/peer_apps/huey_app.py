"""Huey on Redis: one consumer with 2 worker processes."""

from huey import RedisHuey

from peer_apps import REDIS_URL, WORKERS, Processes, bin_path, noop

huey = RedisHuey("kojo_bench", url=REDIS_URL)


@huey.task(name="noop")
def huey_noop():
    noop()


class Peer(Processes):
    label = "Huey (Redis)"
    commands = [
        [
            bin_path("huey_consumer"),
            "peer_apps.huey_app.huey",
            "--workers",
            str(WORKERS),
            "--worker-type",
            "process",
            "--no-periodic",
            "--quiet",
        ],
    ]

    def clean(self) -> None:
        pass  # its only store is the scratch Redis db, flushed before every run

    def enqueue(self, jobs: int) -> None:
        for _ in range(jobs):
            huey_noop()
