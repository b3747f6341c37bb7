"""Dramatiq with its Redis broker: 2 worker processes of 1 thread each."""

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from peer_apps import REDIS_URL, WORKERS, Processes, bin_path, noop

dramatiq.set_broker(RedisBroker(url=REDIS_URL))


@dramatiq.actor(actor_name="noop")
def dramatiq_noop():
    noop()


class Peer(Processes):
    label = "Dramatiq (Redis broker)"
    commands = [
        [bin_path("dramatiq"), "peer_apps.dramatiq_app", "--processes", str(WORKERS), "--threads", "1"],
    ]

    def clean(self) -> None:
        pass  # its only store is the scratch Redis db, flushed before every run

    def enqueue(self, jobs: int) -> None:
        for _ in range(jobs):
            dramatiq_noop.send()
