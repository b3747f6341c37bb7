"""Job types that keep N instances: the leading housekeeper tops each up to ``keep_instances`` jobs
waiting, held or working, once a pass.

This is the seeds' "continuous singleton" without its fragility: a type with parallel work off and
``keep_instances = 1`` always has exactly one job in flight, and a job that ends (well or not) is
followed by the next on the following pass, without the job having to schedule its successor. The
count is made under the type's allowance lock (kojo.scheduling), never waiting for it; schedule()
takes that lock only for a type with an allowance, so a job scheduled by hand at the same moment may
make the count N+1 for a while (never fewer than N: nothing is lost).
"""

from __future__ import annotations

import logging

from django.db import transaction

from kojo.conf import settings
from kojo.exceptions import WaitingLimitReached
from kojo.models import Job, JobType
from kojo.scheduling import AllowanceBusy, check_allowance, create_job, lock_allowance
from kojo.states import PENDING

logger = logging.getLogger(__name__)


def keep_instances(*, actor: str = "") -> list[Job]:
    """Create the jobs that bring every enabled type with ``keep_instances`` up to its count."""
    created: list[Job] = []
    for job_type in JobType.objects.filter(is_enabled=True, keep_instances__gt=0):
        created += top_up(job_type, actor=actor)
    return created


def top_up(job_type: JobType, *, actor: str = "") -> list[Job]:
    using = settings.DATABASE
    with transaction.atomic(using=using):
        try:
            lock_allowance(job_type, wait=False, using=using)
        except AllowanceBusy:
            return []
        pending = Job.objects.using(using).filter(job_type=job_type, state__in=PENDING).count()
        missing = job_type.keep_instances - pending
        if missing <= 0:
            return []
        try:
            check_allowance(job_type, adding=missing, wait=False, using=using)
        except (WaitingLimitReached, AllowanceBusy) as refused:
            logger.warning(
                "job type %s: cannot keep %s instances: %s", job_type, job_type.keep_instances, refused
            )
            return []
        reason = f"kept: {job_type.keep_instances} instance(s) of the type"
        fields = {"job_type": job_type, "importance": job_type.default_importance}
        return [create_job(dict(fields), actor=actor, reason=reason, using=using) for _ in range(missing)]
