"""``manage.py kojo_server``: run this node's process tree until stopped (SIGTERM/SIGINT)."""

import logging
import sys

from django.core.management.base import BaseCommand, CommandError

from kojo.conf import settings
from kojo.server.arbiter import Arbiter

MODES = ("ondemand", "static", "dynamic")


LOG_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s %(message)s"


def show_kojo_logs() -> None:
    """Unless the project configured the ``kojo`` logger itself (LOGGING), the server's own lines go
    to stderr from INFO up, whatever the root logger's level or handlers: an operator always sees the
    server start and stop."""
    kojo_logger = logging.getLogger("kojo")
    if kojo_logger.handlers or kojo_logger.level != logging.NOTSET:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    kojo_logger.addHandler(handler)
    kojo_logger.setLevel(logging.INFO)
    kojo_logger.propagate = False


class Command(BaseCommand):
    help = "Run kojo's job server on this node: claims due jobs and runs each in its own process."

    def add_arguments(self, parser):
        parser.add_argument("--mode", choices=MODES, help="ondemand: fork per job; static, dynamic: pooled")
        parser.add_argument("--concurrency", type=int, help="most jobs this node runs at once")
        parser.add_argument(
            "--queue", action="append", dest="queues", default=[], help="serve only this queue (repeatable)"
        )

    def handle(self, *args, mode=None, concurrency=None, queues=(), **options):
        concurrency = settings.CONCURRENCY if concurrency is None else concurrency
        if concurrency < 1:
            raise CommandError("--concurrency must be at least 1")
        show_kojo_logs()
        arbiter = Arbiter(mode=mode or settings.MODE, concurrency=concurrency, queues=list(queues))
        sys.exit(arbiter.run())
