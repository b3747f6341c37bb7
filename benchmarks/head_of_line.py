"""Jobs claimed ahead behind a slow job: how long they wait with an idle pooled worker beside it.

A pooled worker whose recent jobs were short claims several at once (``KOJO_PREFETCH``); when one of
them turns out slow, the ones it claimed behind it go back to the queue for another worker. In the
throughput benchmark's own database (``test_bench``, re-created and migrated), one ``kojo_server``
with two pooled workers (``static`` x 2) runs ROUNDS rounds of QUICK jobs that return at once, one
job of SLOW seconds, then QUICK more, scheduled in one call. For the quick jobs behind the slow one
it prints the worst and median wait from scheduled (``created_at``) to started (when the job's code
began), for those the slow job's worker had claimed ahead with it, and for all of them.

Run ``.venv/bin/python benchmarks/head_of_line.py [--rounds N] [--slow SECONDS] [--quick N]``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import throughput  # noqa: E402  (sets Django up on test_bench)

import kojo  # noqa: E402
from kojo.conf import settings  # noqa: E402
from kojo.models import Job, JobStateChange, JobType  # noqa: E402
from kojo.states import TERMINAL, JobState, Outcome  # noqa: E402

ROUNDS = 5
SLOW_SECONDS = 3.0
QUICK = 60


def wait_round(servers: throughput.Servers, ids: list[int], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while Job.objects.filter(pk__in=ids).exclude(state__in=TERMINAL).exists():
        servers.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"a round did not finish within {timeout} s\n{servers.logs()}")
        time.sleep(throughput.POLL)
    if Job.objects.filter(pk__in=ids).exclude(state=JobState.COMPLETE_SUCCESS).exists():
        raise RuntimeError("a job of the round did not end complete_success")


def one_round(servers: throughput.Servers, kind: JobType, slow_seconds: float, quick: int):
    """Waits (seconds) of the quick jobs behind the slow one: claimed ahead with it, and all; the
    slow job's run time."""
    params = [{"seconds": 0}] * quick + [{"seconds": slow_seconds}] + [{"seconds": 0}] * quick
    jobs = kojo.schedule_many(kind.type_code, params)
    ids = [job.pk for job in jobs]
    wait_round(servers, ids)
    slow = Job.objects.get(pk=ids[quick])
    ran_by = JobStateChange.objects.filter(job=slow, to_state=JobState.WORKING).latest("id")
    ahead = set(
        JobStateChange.objects.filter(
            to_state=JobState.WORKING, at=ran_by.at, actor=ran_by.actor, job_id__gt=slow.pk
        ).values_list("job_id", flat=True)
    )
    behind = Job.objects.filter(pk__in=ids[quick + 1 :])
    waits = {job.pk: job.result["started"] - job.created_at.timestamp() for job in behind}
    ran = slow.result["ended"] - slow.result["started"]
    return [waits[pk] for pk in ahead], list(waits.values()), ran


def describe(waits: list[float]) -> str:
    if not waits:
        return "none"
    return (
        f"worst {max(waits) * 1000:,.0f} ms, median {statistics.median(waits) * 1000:,.0f} ms ({len(waits)})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--slow", type=float, default=SLOW_SECONDS)
    parser.add_argument("--quick", type=int, default=QUICK)
    args = parser.parse_args()
    throughput.prepare_database()
    kind = JobType.objects.create(type_code="timed", name="timed", worker="tests.kojo_jobs.timed_sleep")
    servers = throughput.Servers()
    ahead: list[float] = []
    behind: list[float] = []
    try:
        servers.start("static", 1)
        servers.wait_registered()
        # Warm up: both workers forked, connected, their averages trained on quick jobs.
        wait_round(servers, [job.pk for job in kojo.schedule_many(kind.type_code, [{"seconds": 0}] * 200)])
        for _ in range(args.rounds):
            round_ahead, round_behind, ran = one_round(servers, kind, args.slow, args.quick)
            ahead += round_ahead
            behind += round_behind
    finally:
        servers.stop()
        shutil.rmtree(throughput.SETTINGS_DIR, ignore_errors=True)
    handed_back = JobStateChange.objects.filter(outcome=Outcome.INTERRUPTED).count()
    print(
        f"jobs claimed ahead behind a slow job ({args.slow:g} s, ran {ran:.2f} s), 1 server static x 2, "
        f"window {settings.PREFETCH_WINDOW:g} s, {args.rounds} rounds of {args.quick} + 1 + {args.quick}"
    )
    print(f"  worst wait of a job claimed ahead behind a slow job: {describe(ahead)}")
    print(f"  all quick jobs behind the slow one: {describe(behind)}; {handed_back} hand-backs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
