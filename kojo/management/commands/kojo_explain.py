"""``manage.py kojo_explain <job id>``: why a job is not running, first blocker first."""

import json

from django.core.management.base import BaseCommand, CommandError

from kojo.explain import explain
from kojo.models import Job


class Command(BaseCommand):
    help = "Say why a job is not running: the first rule of the claim that keeps it waiting, then the rest."

    def add_arguments(self, parser):
        parser.add_argument("job_id", type=int)
        parser.add_argument("--json", action="store_true", dest="as_json", help="one JSON object")

    def handle(self, *args, job_id, as_json=False, **options):
        try:
            explanation = explain(job_id)
        except Job.DoesNotExist:
            raise CommandError(f"there is no job {job_id}") from None
        if as_json:
            record = {
                "job_id": explanation.job_id,
                "state": explanation.state,
                "runnable": explanation.runnable,
                "blockers": explanation.blockers,
                "notes": explanation.notes,
                "outcomes": Job.objects.get(pk=job_id).outcome_counts(),
            }
            self.stdout.write(json.dumps(record))
        else:
            self.stdout.write("\n".join(explanation.lines()))
