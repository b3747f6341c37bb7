"""What one enqueue costs: kojo.schedule() beside a bare psycopg INSERT + COMMIT, with round trips.

Against the PostgreSQL and Redis that tests/settings.py names, in the throughput benchmark's own
database (``test_bench``, re-created and migrated at every run), no server running:

* a bare psycopg loop on the same database: one INSERT of a JSON row and one COMMIT per row;
* ``kojo.schedule()`` outside any transaction (autocommit), and inside ``transaction.atomic()`` (a view
  with ATOMIC_REQUESTS), one job per call;
* ten ``kojo.schedule()`` calls per transaction, and ``kojo.schedule_many()`` in batches of 500;
* for each, the SQL statements and Redis messages per job (counted, not estimated), and a cProfile
  of the autocommit loop (top functions by cumulative time).

Run ``.venv/bin/python benchmarks/enqueue.py [--jobs N]``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import throughput  # noqa: E402  (sets Django up on test_bench)
from django.db import connection, transaction  # noqa: E402

import kojo  # noqa: E402
from kojo import messaging  # noqa: E402
from kojo.models import Job  # noqa: E402

DEFAULT_JOBS = 3000


class Counted:
    """SQL statements sent by Django and Redis messages published, while in effect."""

    def __init__(self) -> None:
        self.statements = self.publishes = 0

    def __enter__(self) -> Counted:
        self.original = messaging.publish_all

        def publish_all(what, messages):
            self.publishes += 1
            return self.original(what, messages)

        messaging.publish_all = publish_all
        self.wrapper = connection.execute_wrapper(self.count)
        self.wrapper.__enter__()
        return self

    def count(self, execute, sql, params, many, context):
        self.statements += 1
        return execute(sql, params, many, context)

    def __exit__(self, *exc) -> None:
        self.wrapper.__exit__(*exc)
        messaging.publish_all = self.original


def bare_rate(rows: int) -> float:
    db = throughput.django_settings.DATABASES["default"]
    with throughput.psycopg.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=throughput.DB_NAME
    ) as bare:
        bare.execute("CREATE TABLE IF NOT EXISTS bench_bare (id bigserial PRIMARY KEY, params jsonb)")
        bare.commit()
        started = time.perf_counter()
        for n in range(rows):
            bare.execute("INSERT INTO bench_bare (params) VALUES (%s::jsonb)", [f'{{"n": {n}}}'])
            bare.commit()
        return rows / (time.perf_counter() - started)


def timed(label: str, jobs: int, enqueue) -> tuple[str, str]:
    throughput.truncate_jobs()
    kojo.schedule(throughput.TYPE_CODE)  # warm up
    before = Job.objects.count()
    with Counted() as counted:
        started = time.perf_counter()
        enqueue(jobs)
        seconds = time.perf_counter() - started
    made = Job.objects.count() - before
    if made != jobs:
        raise RuntimeError(f"{label}: {made} jobs made, not {jobs}")
    figure = (
        f"{jobs / seconds:,.0f} jobs/s; {counted.statements / jobs:.2f} SQL statements and "
        f"{counted.publishes / jobs:.2f} Redis messages per job"
    )
    return label, figure


def one_per_call(jobs: int) -> None:
    for _ in range(jobs):
        kojo.schedule(throughput.TYPE_CODE)


def one_per_transaction(jobs: int) -> None:
    for _ in range(jobs):
        with transaction.atomic():
            kojo.schedule(throughput.TYPE_CODE)


def ten_per_transaction(jobs: int) -> None:
    for _ in range(jobs // 10):
        with transaction.atomic():
            for _ in range(10):
                kojo.schedule(throughput.TYPE_CODE)


def in_batches(jobs: int, batch: int = 500) -> None:
    for first in range(0, jobs, batch):
        kojo.schedule_many(throughput.TYPE_CODE, [{"n": n} for n in range(first, min(first + batch, jobs))])


def profile(jobs: int) -> str:
    throughput.truncate_jobs()
    profiler = cProfile.Profile()
    profiler.enable()
    one_per_call(jobs)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(14)
    return out.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS)
    args = parser.parse_args()
    jobs = args.jobs - args.jobs % 10
    throughput.prepare_database()
    rows = [("bare psycopg INSERT + COMMIT per row", f"{bare_rate(jobs):,.0f} rows/s")]
    rows.append(timed("kojo.schedule(), autocommit", jobs, one_per_call))
    rows.append(timed("kojo.schedule(), one transaction.atomic() each", jobs, one_per_transaction))
    rows.append(timed("kojo.schedule(), ten per transaction", jobs, ten_per_transaction))
    rows.append(timed("kojo.schedule_many(), batches of 500", jobs * 10, in_batches))
    print(profile(min(jobs, 1000)))
    width = max(len(label) for label, _ in rows)
    print(f"kojo enqueue benchmark ({jobs:,} jobs per figure; schedule_many {jobs * 10:,})")
    for label, figure in rows:
        print(f"  {label:<{width}}  {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
