"""Job callables used by the tests, registered the way a project registers its own."""

import kojo


@kojo.job_type("noop", name="No-op")
def noop(job):
    return None


@kojo.worker
def echo(job):
    return job.params
