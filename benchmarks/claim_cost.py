"""What one claim costs as the queue grows: 10,000 and 1,000,000 waiting jobs.

For each size, in a scratch PostgreSQL database of its own (``test_bench_claims``, dropped, re-created and
migrated at every run through tests.server_settings with ``KOJO_TEST_DB_NAME=bench_claims``):

* the waiting jobs are inserted by one ``INSERT ... SELECT ... FROM generate_series`` (every column
  filled from the model's own defaults), then ``VACUUM ANALYZE``d, as autovacuum would have;
* ``EXPLAIN (ANALYZE, BUFFERS)`` of the claim's statement (captured from a real ``claim(10)``, run in a
  transaction rolled back; on PostgreSQL one statement reads the candidates with ``FOR UPDATE SKIP
  LOCKED``, marks them working and writes the state-change rows) is printed, with whether it uses the
  partial index ``kojo_job_in_sight``; its execution time is reported beside the timings;
* ``kojo.claims.claim(1)``, ``claim(10)`` and ``claim(64)`` (what a pooled worker claiming ahead takes
  at most, by default) are timed, each call committed on its own, ``--claims`` calls per batch size;
  the jobs claimed are a small part of the queue;
* a bucket's backlog: a type limited to one working job per ``params["customer"]``, customer ``a`` at
  its limit with 100,000 jobs waiting (``--backlog``) ahead of ``--claims`` jobs of other customers.
  The first claims shelve the backlog (kojo.shelving, a one-time cost reported as such); then each
  ``claim(1)`` is timed as above, its job ended before the next (so working jobs stay few).

Run ``cd /work/main && .venv/bin/python benchmarks/claim_cost.py [--claims N] [--sizes 10000,1000000]``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DB_KEY = "bench_claims"
os.environ.update(
    {
        "DJANGO_SETTINGS_MODULE": "tests.server_settings",
        "KOJO_TEST_DB": "postgres",
        "KOJO_TEST_DB_NAME": DB_KEY,
    }
)

import django  # noqa: E402

django.setup()

import psycopg  # noqa: E402
from django.conf import settings as django_settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from kojo.claims import claim  # noqa: E402
from kojo.models import Job, JobStateChange, JobType  # noqa: E402
from kojo.readiness import limit_to  # noqa: E402
from kojo.states import JobState  # noqa: E402

DB_NAME = django_settings.DATABASES["default"]["NAME"]
SIZES = (10_000, 1_000_000)
CLAIMS = 100  # calls per batch size and queue size
BACKLOG = 100_000  # jobs of one full bucket ahead of the ready ones
INDEX = "kojo_job_in_sight"


class Rollback(Exception):
    pass


def prepare_database() -> JobType:
    db = django_settings.DATABASES["default"]
    admin = {"host": db["HOST"], "port": db["PORT"], "user": db["USER"], "dbname": "test", "autocommit": True}
    connection.close()
    with psycopg.connect(**admin) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    call_command("migrate", verbosity=0, interactive=False)
    return JobType.objects.create(type_code="noop", name="No-op", worker="tests.kojo_jobs.noop")


def fill(job_type: JobType, waiting: int, params: str = "") -> float:
    """Empty the job tables and insert `waiting` due jobs in one statement; return the seconds taken.
    ``params`` is an SQL expression of the series number ``g`` for each job's params."""
    template = Job(job_type=job_type)
    columns, values = [], []
    for field in Job._meta.concrete_fields:
        if field.primary_key or field.name in ("start_after", "created_at", "state_changed_at"):
            continue
        if params and field.name == "params":
            continue
        columns.append(connection.ops.quote_name(field.column))
        values.append(field.get_db_prep_save(getattr(template, field.attname), connection))
    # Due in creation order, a millisecond apart, all in the past.
    stamps = ["start_after", "created_at", "state_changed_at"]
    columns += stamps
    placeholders = ", ".join(["%s"] * len(values) + ["now() - interval '1 hour' + g * interval '1 ms'"] * 3)
    if params:
        columns.append("params")
        placeholders += f", {params}"
    tables = ", ".join(model._meta.db_table for model in (JobStateChange, Job))
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
        cursor.execute(
            f"INSERT INTO {Job._meta.db_table} ({', '.join(columns)}) "
            f"SELECT {placeholders} FROM generate_series(1, %s) AS g",
            [*values, waiting],
        )
    seconds = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {Job._meta.db_table}")
        cursor.execute("CHECKPOINT")  # so the insert's writes are not flushed while claims are timed
    return seconds


def explain(slots: int) -> str:
    """EXPLAIN ANALYZE of the statement (with SKIP LOCKED) a real claim(slots) sends, all rolled back."""
    try:
        with transaction.atomic():
            with CaptureQueriesContext(connection) as queries:
                claim(slots, host="bench", pid=os.getpid())
            query = next(q["sql"] for q in queries if "SKIP LOCKED" in q["sql"])
            with connection.cursor() as cursor:
                cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {query}")
                plan = "\n".join(row[0] for row in cursor.fetchall())
            raise Rollback
    except Rollback:
        pass
    return plan


def time_claims(slots: int, calls: int) -> list[float]:
    claim(slots, host="bench", pid=os.getpid())  # warm up
    seconds = []
    for _ in range(calls):
        started = time.perf_counter()
        got = claim(slots, host="bench", pid=os.getpid())
        seconds.append(time.perf_counter() - started)
        if len(got) != slots:
            raise RuntimeError(f"claim({slots}) returned {len(got)} jobs")
    return seconds


def bucket_backlog(backlog: int, calls: int) -> tuple[list[float], list[float], list[float]]:
    """Seconds of each claim that shelved part of the backlog, then of each timed claim(1), before and
    after a VACUUM of the job table (shelving updates every backlog row once: until autovacuum has
    been, the claim's index still holds their dead entries)."""
    job_type = JobType.objects.create(
        type_code=f"per_customer_{backlog}",
        name="One per customer",
        worker="tests.kojo_jobs.noop",
        readiness=limit_to(1, key="customer"),
    )
    # Job 1 is customer a's working job, jobs 2..backlog+1 wait behind it, then the other customers'.
    customer = f"CASE WHEN g <= {backlog + 1} THEN 'a' ELSE 'c' || g END"
    fill(job_type, backlog + 1 + 2 * calls + 1, params=f"jsonb_build_object('customer', {customer})")
    if len(claim(1, host="bench", pid=os.getpid())) != 1:
        raise RuntimeError("customer a's first job was not claimed")
    shelving = []
    while True:
        started = time.perf_counter()
        got = claim(1, host="bench", pid=os.getpid())
        shelving.append(time.perf_counter() - started)
        if got:
            Job.objects.filter(pk=got[0].pk).update(state=JobState.COMPLETE_SUCCESS)
            break
    before = time_bucket_claims(calls)
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {Job._meta.db_table}")
    return shelving, before, time_bucket_claims(calls)


def time_bucket_claims(calls: int) -> list[float]:
    timed = []
    for _ in range(calls):
        started = time.perf_counter()
        got = claim(1, host="bench", pid=os.getpid())
        timed.append(time.perf_counter() - started)
        if [job.params["customer"] for job in got] == ["a"] or len(got) != 1:
            raise RuntimeError(f"claim(1) returned {got}")
        # Ended before the next claim (not timed), as on a server: the claim counts working jobs.
        Job.objects.filter(pk=got[0].pk).update(state=JobState.COMPLETE_SUCCESS)
    return timed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=CLAIMS, help=f"calls per batch size ({CLAIMS})")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="waiting-queue sizes")
    parser.add_argument("--backlog", type=int, default=BACKLOG, help=f"a full bucket's jobs ({BACKLOG:,})")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    job_type = prepare_database()
    print(f"database {DB_NAME} ready", flush=True)
    rows = []
    for size in sizes:
        seconds = fill(job_type, size)
        print(
            f"\n== {size:,} waiting jobs (inserted in {seconds:.1f} s, {size / seconds:,.0f} rows/s)",
            flush=True,
        )
        plan = explain(10)
        print(plan)
        uses = INDEX in plan
        query_ms = float(re.search(r"Execution Time: ([0-9.]+) ms", plan).group(1))
        print(f"-> the claim {'uses' if uses else 'DOES NOT use'} {INDEX}", flush=True)
        for slots in (1, 10, 64):
            times = [s * 1000 for s in time_claims(slots, args.claims)]
            p50 = statistics.median(times)
            p95 = statistics.quantiles(times, n=20, method="inclusive")[18]
            rows.append((size, slots, statistics.mean(times), p50, p95, query_ms, uses))
            print(f"claim({slots}): mean {rows[-1][2]:.2f} ms, p50 {p50:.2f}, p95 {p95:.2f}", flush=True)
        left = Job.objects.filter(state=JobState.WAITING).count()
        print(f"{left:,} jobs still waiting after the timed claims")

    print(f"\nclaim() cost, {args.claims} committed calls per row, PostgreSQL local, {os.cpu_count()} CPUs\n")
    headers = [
        "waiting jobs",
        "claim of",
        "mean ms",
        "p50 ms",
        "p95 ms",
        "ms per job",
        "statement ms",
        "uses index",
    ]
    print("| " + " | ".join(headers) + " |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for size, slots, mean, p50, p95, query_ms, uses in rows:
        figures = " | ".join(f"{value:.2f}" for value in (mean, p50, p95, mean / slots))
        print(f"| {size:,} | {slots} | {figures} | {query_ms:.3f} | {uses} |")
    print("\n(statement ms: the EXPLAIN ANALYZE execution time of claim(10)'s statement with SKIP LOCKED)")

    shelving, before, after = bucket_backlog(args.backlog, args.claims)
    print(
        f"\n== {args.backlog:,} jobs of one full bucket ahead of {args.claims * 2} ready jobs: the backlog "
        f"was shelved by {len(shelving) - 1} claims ({sum(shelving[:-1]):.2f} s in all, once); the claim "
        f"that reached the first ready job took {shelving[-1] * 1000:.2f} ms"
    )
    for label, timed in (("before VACUUM", before), ("after VACUUM", after)):
        times = [s * 1000 for s in timed]
        p95 = statistics.quantiles(times, n=20, method="inclusive")[18]
        print(
            f"claim(1) behind the shelved backlog, {label}: mean {statistics.mean(times):.2f} ms, "
            f"p50 {statistics.median(times):.2f}, p95 {p95:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
