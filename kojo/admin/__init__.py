"""Admin: job types and recurring jobs are edited here; jobs, their changelog and servers are shown
read-only, because every change of a job goes through the state machine. One module per page."""

from kojo.admin import job_types, jobs, recurrences, servers  # noqa: F401 - importing registers them
