"""RQ with its default ``Worker`` (a fork per job, as kojo's ondemand mode): 2 worker processes."""

from redis import Redis
from rq import Queue

from peer_apps import REDIS_URL, WORKERS, Processes, bin_path, noop

QUEUE = "kojo_bench"


class Peer(Processes):
    label = "RQ (fork per job)"
    commands = [[bin_path("rq"), "worker", "--url", REDIS_URL, "--quiet", QUEUE]] * WORKERS

    def clean(self) -> None:
        pass  # its only store is the scratch Redis db, flushed before every run

    def enqueue(self, jobs: int) -> None:
        queue = Queue(QUEUE, connection=Redis.from_url(REDIS_URL))
        for _ in range(jobs):
            queue.enqueue(noop)
