"""``manage.py kojo_prune``: delete finished jobs past their type's retention, now, in batches.

Running servers do this on their own; the command serves deployments that prune from a scheduler.
"""

from django.core.management.base import BaseCommand

from kojo.pruning import prune_expired


class Command(BaseCommand):
    help = "Delete finished jobs whose auto_delete_interval_duration has passed."

    def add_arguments(self, parser):
        parser.add_argument("--max-batches", type=int, default=1000, help="stop after this many batches")

    def handle(self, *args, max_batches, **options):
        deleted = prune_expired(max_batches=max_batches)
        self.stdout.write(f"deleted {deleted} finished jobs")
