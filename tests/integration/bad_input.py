"""Shared data for the bad-input tests: rows that must survive every refused input, and hostile text."""

from __future__ import annotations

from datetime import timedelta

import pytest

import kojo
from kojo.models import Job, JobDependency, JobStateChange, JobType, Recurrence

# Text that is valid wherever free text is (params, names, known_as) and must come back unchanged.
HOSTILE_TEXT = [
    "'; DROP TABLE kojo_job; --",
    "Robert'); DROP TABLE kojo_job_type; --",
    '" OR 1=1 --',
    "1; DELETE FROM kojo_recurrence",
    "emoji 😀🎉👩‍👩‍👧‍👦",
    "שלום עולם مرحبا",
    "\u202eRTL override\u202c",
    "zero\u200bwidth\u200djoiner\ufeff",
    "combining e\u0301 and Ω",
    "tab\tnew\nline\rreturn",
    "back\\slash and C:\\u0000 literally",
    "<script>alert(1)</script>",
    "x" * 10_000,
]


def snapshot() -> dict:
    """Every stored row kojo owns, so a test can prove a refused input changed nothing."""
    return {
        "job_types": list(JobType.objects.order_by("pk").values()),
        "jobs": list(Job.objects.order_by("pk").values()),
        "recurrences": list(Recurrence.objects.order_by("pk").values()),
        "changes": list(JobStateChange.objects.order_by("pk").values()),
        "dependencies": list(JobDependency.objects.order_by("pk").values()),
    }


@pytest.fixture
def stored(make_job_type):
    """An enabled type, a disabled one, a waiting job with awkward params and a recurrence."""
    report = make_job_type("report", name="Report ☃ '; --", default_importance=3)
    paused = make_job_type("paused", is_enabled=False)
    job = kojo.schedule("report", {"note": HOSTILE_TEXT[0], "who": "😀"})
    recurrence = kojo.recur("report", {"day": "mon"}, known_as="weekly ✓", interval=timedelta(hours=1))
    return {"report": report, "paused": paused, "job": job, "recurrence": recurrence}
