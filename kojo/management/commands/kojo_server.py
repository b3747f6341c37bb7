"""``manage.py kojo_server``: run this node's process tree until stopped (SIGTERM/SIGINT)."""

import logging
import sys

from django.core.management.base import BaseCommand, CommandError

from kojo import messaging
from kojo.checks import unapplied_migrations
from kojo.conf import settings
from kojo.registry import registry
from kojo.server import exitcodes
from kojo.server.arbiter import Arbiter
from kojo.server.reload import reexec
from kojo.tasks.serving import default_to_kojo

MODES = ("ondemand", "static", "dynamic")


LOG_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s %(message)s"


def show_kojo_logs() -> None:
    """Unless the project configured the ``kojo`` logger itself (LOGGING), the server's lines from
    INFO up are shown: through the root logger's handlers where they show them, and on stderr, in
    kojo's format, for the levels none of them shows (all, when the root logger has no handler), so
    an operator always sees the server start and stop, and nothing twice."""
    kojo_logger = logging.getLogger("kojo")
    if kojo_logger.handlers or kojo_logger.level != logging.NOTSET:
        return
    kojo_logger.setLevel(logging.INFO)
    shown_from = min((handler.level for handler in logging.getLogger().handlers), default=None)
    if shown_from is not None and shown_from <= logging.INFO:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    if shown_from is not None:
        handler.addFilter(lambda record: record.levelno < shown_from)
    kojo_logger.addHandler(handler)


class Command(BaseCommand):
    help = "Run kojo's job server on this node: claims due jobs and runs each in its own process."

    def add_arguments(self, parser):
        parser.add_argument("--mode", choices=MODES, help="ondemand: fork per job; static, dynamic: pooled")
        parser.add_argument("--concurrency", type=int, help="most jobs this node runs at once")
        parser.add_argument(
            "--queue", action="append", dest="queues", default=[], help="serve only this queue (repeatable)"
        )
        parser.add_argument(
            "--probe",
            action="store_true",
            help="set up, import the job code and run the system checks, then exit: what SIGHUP runs "
            "before it reloads",
        )

    def handle(self, *args, mode=None, concurrency=None, queues=(), probe=False, **options):
        concurrency = settings.CONCURRENCY if concurrency is None else concurrency
        if concurrency < 1:
            raise CommandError("--concurrency must be at least 1")
        messaging.synchronous = True  # this process forks: no sender thread
        default_to_kojo()  # before any task module is imported: kojo_server needs no TASKS setting
        if probe:
            # A reload whose new code needs migrations not yet applied would only stop: refuse it.
            if missing := unapplied_migrations():
                raise CommandError(
                    f"the database lacks kojo's migrations {', '.join(missing)}: run migrate first"
                )
            self.stdout.write(f"kojo_server: the code starts ({len(registry.worker_paths())} workers)")
            return
        show_kojo_logs()
        arbiter = Arbiter(mode=mode or settings.MODE, concurrency=concurrency, queues=list(queues))
        code = arbiter.run()
        if arbiter.reexec and code == exitcodes.OK:
            reexec()
        sys.exit(code)
