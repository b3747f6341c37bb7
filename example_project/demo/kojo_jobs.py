"""The demo's job types, registered in code; operators tune them in the admin afterwards."""

import logging

import kojo

logger = logging.getLogger(__name__)


@kojo.job_type("demo_greet", name="Greet someone", auto_delete_interval_duration="P1D", max_attempts=3)
def greet(job):
    """Say hello to whoever the params name, and keep the greeting as the job's result."""
    name = job.params.get("name", "world")
    logger.info("hello, %s", name)
    return {"greeting": f"hello, {name}"}
