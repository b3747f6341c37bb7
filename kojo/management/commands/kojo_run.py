"""``manage.py kojo_run <job id>``: run one job here, in the foreground, for a debugger."""

import json

from django.core.management.base import BaseCommand, CommandError

from kojo import messaging
from kojo.server.foreground import NotRunnable, run_in_foreground
from kojo.states import JobState
from kojo.tasks.serving import default_to_kojo


class Command(BaseCommand):
    help = (
        "Run one waiting job in this process, without forking, so breakpoint() and debuggers work; "
        "its ending is recorded like any run's."
    )

    def add_arguments(self, parser):
        parser.add_argument("job_id", type=int)

    def handle(self, *args, job_id, **options):
        messaging.synchronous = True  # this process forks: no sender thread
        default_to_kojo()
        try:
            job = run_in_foreground(job_id)
        except NotRunnable as refusal:
            raise CommandError(f"job {job_id} cannot run here: {refusal}") from None
        self.stdout.write(f"job {job.pk}: {job.state}, attempt {job.attempts}")
        if job.state == JobState.COMPLETE_SUCCESS:
            self.stdout.write(f"result: {json.dumps(job.result)}")
        elif job.error:
            self.stdout.write(f"error: {job.error}")
