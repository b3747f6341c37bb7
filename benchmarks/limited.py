"""A type limited to one job at a time, 20 ms jobs, two servers: how close to 1/(20 ms) it gets.

Kōjō's point is limits: the server that frees a slot claims the next job at once, and the others
hear of the freed slot by message rather than at their next poll. In the throughput benchmark's own
database (``test_bench``, re-created and migrated), JOBS jobs of a type with ``schedule_limit=1``
whose worker sleeps 20 ms are run by two ``kojo_server`` processes (``ondemand``, concurrency 2);
prints jobs/s from the first claim to the last ending, its share of 40 jobs/s (80% is the target),
and the gaps between one job's end and the next one's start (p50, p95, max).

Run ``.venv/bin/python benchmarks/limited.py [--jobs N] [--mode ondemand|static]``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import throughput  # noqa: E402  (sets Django up on test_bench)

from kojo.models import Job, JobType  # noqa: E402

JOBS = 300
RUN_SECONDS = 0.02


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=JOBS)
    parser.add_argument("--mode", default="ondemand", choices=["ondemand", "static"])
    args = parser.parse_args()
    throughput.prepare_database()
    kind = JobType.objects.create(
        type_code="limited", name="limited", worker="tests.kojo_jobs.sleep", schedule_limit=1
    )
    Job.objects.bulk_create(Job(job_type=kind, params={"seconds": RUN_SECONDS}) for _ in range(args.jobs))
    servers = throughput.Servers()
    try:
        servers.start(args.mode, 2)
        throughput.wait_all_done(servers, args.jobs)
    finally:
        servers.stop()
        shutil.rmtree(throughput.SETTINGS_DIR, ignore_errors=True)
    spans = sorted(Job.objects.values_list("started_at", "finished_at"))
    seconds = (spans[-1][1] - spans[0][0]).total_seconds()
    pairs = zip(spans, spans[1:], strict=False)
    gaps = sorted((start - end).total_seconds() * 1000 for (_, end), (start, _) in pairs)
    rate = args.jobs / seconds
    overlapping = sum(1 for gap in gaps if gap < 0)
    print(f"limited type (schedule_limit=1, {RUN_SECONDS * 1000:.0f} ms jobs), 2 servers {args.mode} x 2")
    print(f"  {rate:,.1f} jobs/s over {seconds:.2f} s: {rate * RUN_SECONDS:.0%} of 1/(run time)")
    print(
        f"  gap from one end to the next start: p50 {gaps[len(gaps) // 2]:.1f} ms, "
        f"p95 {gaps[int(len(gaps) * 0.95)]:.1f} ms, max {gaps[-1]:.1f} ms; overlaps {overlapping}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
