"""``manage.py kojo_locks``: who holds which kojo mutex or semaphore, since when."""

from django.core.management.base import BaseCommand
from django.utils import timezone

from kojo.locks import holders


class Command(BaseCommand):
    help = "List held kojo locks with their owners (host, pid), age, lease and fencing token."

    def add_arguments(self, parser):
        parser.add_argument("name", nargs="?", help="only this lock")

    def handle(self, *args, name=None, **options):
        rows = holders(name)
        if not rows:
            self.stdout.write("no locks held")
            return
        now = timezone.now()
        self.stdout.write(
            f"{'lock':30} {'limit':>5} {'owner':30} {'held for':>10} {'lease left':>10} {'token':>8}"
        )
        for hold in rows:
            held = (now - hold.since).total_seconds()
            left = "-" if hold.expires is None else f"{(hold.expires - now).total_seconds():.1f} s"
            owner = f"{hold.host}:{hold.owner.pid}"
            self.stdout.write(
                f"{hold.name:30} {hold.limit:>5} {owner:30} {held:>8.1f} s {left:>10} {hold.token:>8}"
            )
