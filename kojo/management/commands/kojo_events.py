"""``manage.py kojo_events``: follow job state changes across the fleet as they happen."""

import json

from django.core.management.base import BaseCommand, CommandError

from kojo.messaging import enabled, listen


class Command(BaseCommand):
    help = "Print job events (one JSON line per state change) from every node; needs the Redis backend."

    def add_arguments(self, parser):
        parser.add_argument("--type", dest="type_code", help="only jobs of this type code")
        parser.add_argument("--job", type=int, dest="job_id", help="only this job")
        parser.add_argument("--seconds", type=float, help="stop after this long (default: until Ctrl-C)")
        parser.add_argument(
            "--lifecycle",
            action="store_true",
            help="also workers started and stopped, and due jobs a claim postponed",
        )

    def handle(self, *args, type_code=None, job_id=None, seconds=None, lifecycle=False, **options):
        if not enabled():
            raise CommandError("job events travel over Redis: set KOJO_LOCK_BACKEND = 'redis'")
        wanted = {key: value for key, value in (("type_code", type_code), ("job_id", job_id)) if value}

        def show(event):
            self.stdout.write(json.dumps(event, sort_keys=True))
            self.stdout.flush()

        try:
            listen(show, wanted or None, timeout=seconds, lifecycle=lifecycle)
        except KeyboardInterrupt:
            pass
