"""Reading what servers did, from the database: overlap of working intervals, states, changelogs."""

from __future__ import annotations

from kojo.models import Job, JobStateChange
from kojo.states import TERMINAL, JobState


def max_overlap(job_type) -> int:
    """Most jobs of ``job_type`` that were working at the same instant, from the changelog."""
    events = []
    for change in JobStateChange.objects.filter(job__job_type=job_type).order_by("id"):
        if change.to_state == JobState.WORKING:
            events.append((change.at, 1))
        elif change.from_state == JobState.WORKING:
            events.append((change.at, -1))
    # At equal times, count the ending first: a slot freed and taken in one instant is no overlap.
    events.sort(key=lambda event: (event[0], event[1]))
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def all_finished(job_type) -> bool:
    jobs = Job.objects.filter(job_type=job_type)
    return jobs.exists() and not jobs.exclude(state__in=TERMINAL).exists()


def states(job_type) -> dict[str, int]:
    found: dict[str, int] = {}
    for state in Job.objects.filter(job_type=job_type).values_list("state", flat=True):
        found[state] = found.get(state, 0) + 1
    return found
