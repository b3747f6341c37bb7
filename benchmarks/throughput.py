"""How many no-op jobs kojo pushes through real servers, and how long a new job waits to start.

Measures, against the PostgreSQL and Redis that tests/settings.py names, in a database of its own
(``test_bench``, dropped and re-created and migrated at every run, so it never touches ``test_kojo``):

* throughput: N no-op jobs inserted at once, then 1 and K ``kojo_server`` processes (concurrency 2 each)
  started in ``ondemand`` (fork per job) and ``static`` (pre-forked pool) mode; wall time from starting
  the servers (Django start-up included, nothing subtracted) until every job is ``complete_success``,
  polled every 20 ms, and the steady rate from the first claim to the last ending (both stamped by
  kojo);
* enqueue rate: ``kojo.schedule()`` called in a loop, one transaction per job, no server running; and
  ``kojo.schedule_many()`` with 500 params objects per call (one transaction per batch);
* enqueue-to-start latency on an idle server (120 samples per mode by default): one job at a time,
  the next scheduled only after the last finished, ``started_at - created_at`` (both stamped by kojo;
  ``started_at`` at claim, before any fork), p50/p95/p99 beside the poll interval, since an idle server
  only looks for due jobs every ``KOJO_POLL_INTERVAL``; the gap between samples is 20 ms plus a random
  part of up to one poll interval, so arrivals do not lock onto the server's polling phase;
* for comparison, this machine's raw ``os.fork()`` + child ``os._exit(0)`` + ``waitpid`` rate, from a
  process with Django set up and a database connection open.

Run ``cd /work/main && .venv/bin/python benchmarks/throughput.py [--jobs N] [--fleets 1,2,4] [--samples S]``.
Servers use a settings module written to a temporary directory (tests.server_settings with the database
``test_bench`` and logging at WARNING); their output goes to log files printed if a run fails. Every
server started is killed (its process group; its children die with it) on the way out, even on error.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DB_KEY = "bench"
DB_NAME = f"test_{DB_KEY}"
SETTINGS_MODULE = "kojo_bench_settings"
# tests.server_settings already points DATABASES at the test name (test_bench with KOJO_TEST_DB_NAME=bench)
# but logs everything at INFO from the root logger; benchmark servers should not spend their time logging.
SETTINGS_SOURCE = '''"""Benchmark settings: tests.server_settings on test_bench, logging at WARNING."""

from tests.server_settings import *  # noqa: F403

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
'''
SETTINGS_DIR = Path(tempfile.mkdtemp(prefix="kojo-bench-"))
(SETTINGS_DIR / f"{SETTINGS_MODULE}.py").write_text(SETTINGS_SOURCE)
sys.path[:0] = [str(SETTINGS_DIR), str(REPO)]
BENCH_ENV = {
    "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE,
    "KOJO_TEST_DB": "postgres",
    "KOJO_TEST_DB_NAME": DB_KEY,
    "KOJO_LOG_LEVEL": "WARNING",
}
os.environ.update(BENCH_ENV)

import django  # noqa: E402

django.setup()

import psycopg  # noqa: E402
from django.conf import settings as django_settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import Max, Min  # noqa: E402

import kojo  # noqa: E402
from kojo.conf import settings  # noqa: E402
from kojo.models import Job, JobStateChange, JobType, Server  # noqa: E402
from kojo.states import TERMINAL, JobState  # noqa: E402

TYPE_CODE = "noop"
WORKER = "tests.kojo_jobs.noop"
CONCURRENCY = 2
# The fork-per-job server is also measured with this many slots (see main()).
WIDE_CONCURRENCY = 16
POLL = 0.02  # seconds between looks at the database while waiting for jobs to finish
RUN_TIMEOUT = 120.0
DEFAULT_JOBS = {"ondemand": 1000, "static": 10000}
ENQUEUE_JOBS = 2000
# Jobs per kojo.schedule_many() call in the bulk enqueue figure, and how many jobs in all.
BULK_BATCH, BULK_JOBS = 500, 20000
# 120 per mode, not more: each sample costs ~0.25-0.3 s (latency + job + gap) and the run must stay
# under 4 minutes with the default job counts on a 2-CPU machine; raise it with --samples.
LATENCY_SAMPLES = 120
LATENCY_GAP = 0.02
FORKS = 2000


class Servers:
    """``kojo_server`` processes, each leading its own session; all killed by ``kill_all()``."""

    def __init__(self) -> None:
        self.processes: list[tuple[subprocess.Popen, Path]] = []

    def start(self, mode: str, count: int, concurrency: int = CONCURRENCY) -> None:
        env = {**os.environ, **BENCH_ENV, "PYTHONPATH": os.pathsep.join([str(SETTINGS_DIR), str(REPO)])}
        command = [sys.executable, "-m", "django", "kojo_server", "--mode", mode]
        for _ in range(count):
            log_path = SETTINGS_DIR / f"server-{len(self.processes)}-{mode}.log"
            with open(log_path, "w") as log:
                process = subprocess.Popen(
                    [*command, "--concurrency", str(concurrency)],
                    cwd=REPO,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.processes.append((process, log_path))

    def check_alive(self) -> None:
        for process, log_path in self.processes:
            if process.poll() is not None:
                raise RuntimeError(
                    f"kojo_server {process.pid} exited with {process.returncode}:\n{log_path.read_text()}"
                )

    def logs(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text()[-4000:]}" for _, path in self.processes)

    def wait_registered(self, timeout: float = 30.0) -> None:
        pids = [process.pid for process, _ in self.processes]
        deadline = time.monotonic() + timeout
        while Server.objects.filter(pid__in=pids).count() < len(pids):
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"servers {pids} did not register within {timeout} s\n{self.logs()}")
            time.sleep(POLL)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM every server and wait for it; whatever is still alive at the deadline is killed."""
        for process, _ in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process, _ in self.processes:
            try:
                process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                print(f"kojo_server {process.pid} ignored SIGTERM for {timeout} s; killing", file=sys.stderr)
        self.kill_all()

    def kill_all(self) -> None:
        for process, _ in self.processes:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(10)
        self.processes.clear()


def prepare_database() -> JobType:
    """(Re-)create test_bench from scratch, migrate it, and make the no-op job type."""
    db = django_settings.DATABASES["default"]
    admin = {"host": db["HOST"], "port": db["PORT"], "user": db["USER"], "dbname": "test", "autocommit": True}
    connection.close()
    with psycopg.connect(**admin) as conn:
        # Dropped every time: migrations may have been edited in place since the last run.
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    call_command("migrate", verbosity=0, interactive=False)
    defaults = {"name": "No-op", "worker": WORKER}
    return JobType.objects.get_or_create(type_code=TYPE_CODE, defaults=defaults)[0]


def truncate_jobs() -> None:
    tables = ", ".join(model._meta.db_table for model in (JobStateChange, Job, Server))
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


def wait_all_done(servers: Servers, total: int, timeout: float = RUN_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        done = Job.objects.filter(state__in=TERMINAL).count()
        if done >= total:
            break
        servers.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {done} of {total} jobs finished within {timeout} s\n{servers.logs()}")
        time.sleep(POLL)
    failed = Job.objects.exclude(state=JobState.COMPLETE_SUCCESS).count()
    if failed:
        raise RuntimeError(f"{failed} of {total} jobs did not end complete_success")


def throughput(
    servers: Servers, job_type: JobType, mode: str, count: int, jobs: int, concurrency: int = CONCURRENCY
) -> str:
    """`jobs` no-op jobs run by `count` fresh servers in `mode`: jobs/s from starting the servers, and
    from the first claim to the last ending (the steady rate, start-up left out)."""
    truncate_jobs()
    Job.objects.bulk_create((Job(job_type=job_type) for _ in range(jobs)), batch_size=1000)
    started = time.perf_counter()
    servers.start(mode, count, concurrency)
    try:
        wait_all_done(servers, jobs)
        seconds = time.perf_counter() - started
    finally:
        servers.stop()
    span = Job.objects.aggregate(first=Min("started_at"), last=Max("finished_at"))
    steady = jobs / (span["last"] - span["first"]).total_seconds()
    with_start = f"{jobs / seconds:,.0f} jobs/s with start-up ({jobs:,} jobs in {seconds:.2f} s)"
    return f"{steady:,.0f} jobs/s steady, {with_start}"


def enqueue_rate(jobs: int) -> float:
    truncate_jobs()
    kojo.schedule(TYPE_CODE)  # warm up: connection, job type lookup
    started = time.perf_counter()
    for _ in range(jobs):
        kojo.schedule(TYPE_CODE)
    seconds = time.perf_counter() - started
    if Job.objects.count() != jobs + 1:
        raise RuntimeError("kojo.schedule() did not create one row per call")
    return jobs / seconds


def bulk_enqueue_rate(jobs: int, batch: int = BULK_BATCH) -> float:
    truncate_jobs()
    kojo.schedule_many(TYPE_CODE, [{}])  # warm up
    started = time.perf_counter()
    for first in range(0, jobs, batch):
        kojo.schedule_many(TYPE_CODE, [{"n": n} for n in range(first, min(first + batch, jobs))])
    seconds = time.perf_counter() - started
    if Job.objects.count() != jobs + 1:
        raise RuntimeError("kojo.schedule_many() did not create one row per params object")
    return jobs / seconds


def wait_finished(job_id: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not Job.objects.filter(pk=job_id, state__in=TERMINAL).exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} did not finish within {timeout} s")
        time.sleep(0.005)


def start_latency(servers: Servers, mode: str, samples: int) -> list[float]:
    """Milliseconds from schedule() to claim for `samples` jobs scheduled one at a time on an idle server."""
    truncate_jobs()
    servers.start(mode, 1)
    try:
        servers.wait_registered()
        for _ in range(3):  # warm up: pool forked, connections open
            wait_finished(kojo.schedule(TYPE_CODE).pk)
        ids = []
        for _ in range(samples):
            time.sleep(LATENCY_GAP + random.uniform(0, settings.POLL_INTERVAL))
            job = kojo.schedule(TYPE_CODE)
            ids.append(job.pk)
            wait_finished(job.pk)
            servers.check_alive()
    finally:
        servers.stop()
    done = Job.objects.filter(pk__in=ids, state=JobState.COMPLETE_SUCCESS)
    rows = done.values_list("created_at", "started_at")
    if len(rows) != samples:
        raise RuntimeError(f"only {len(rows)} of {samples} latency jobs ended complete_success")
    return [(started - created).total_seconds() * 1000 for created, started in rows]


def fork_rate(iterations: int) -> float:
    connection.ensure_connection()  # as a kojo server forks: Django set up, a connection open
    started = time.perf_counter()
    for _ in range(iterations):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    return iterations / (time.perf_counter() - started)


def percentiles(values: list[float]) -> tuple[float, float, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[94], cuts[98]


def exit_on_signal(signum, frame) -> None:
    """SIGTERM/SIGHUP end the run through the ``finally`` that kills the servers."""
    raise SystemExit(128 + signum)


def main() -> int:
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, exit_on_signal)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, help="jobs per throughput run (1000 ondemand, 2000 static)")
    parser.add_argument("--fleets", default="1,2,4", help="server counts for throughput (default 1,2,4)")
    parser.add_argument("--samples", type=int, default=LATENCY_SAMPLES, help="latency samples per mode")
    args = parser.parse_args()
    fleets = sorted({max(int(count), 1) for count in args.fleets.split(",")})
    rows: list[tuple[str, str]] = []
    servers = Servers()
    begun = time.perf_counter()
    try:
        job_type = prepare_database()
        print(f"database {DB_NAME} ready; poll interval {settings.POLL_INTERVAL:g} s", flush=True)

        rate = fork_rate(FORKS)
        rows.append(("raw fork+_exit+waitpid (Django set up)", f"{rate:,.0f} /s ({FORKS:,} forks)"))
        print(f"{rows[-1][0]}: {rows[-1][1]}", flush=True)

        for mode in ("ondemand", "static"):
            jobs = args.jobs or DEFAULT_JOBS[mode]
            for count in fleets:
                label = f"throughput {mode}, {count} server{'s' if count > 1 else ''} x {CONCURRENCY}"
                rows.append((label, throughput(servers, job_type, mode, count, jobs)))
                print(f"{label}: {rows[-1][1]}", flush=True)
        # Short jobs leave most fork-per-job slots idle while the server claims and forks; with more
        # slots than CPUs, each claim takes several jobs at once.
        jobs = args.jobs or DEFAULT_JOBS["ondemand"]
        label = f"throughput ondemand, 1 server x {WIDE_CONCURRENCY}"
        rows.append((label, throughput(servers, job_type, "ondemand", 1, jobs, WIDE_CONCURRENCY)))
        print(f"{label}: {rows[-1][1]}", flush=True)

        rate = enqueue_rate(ENQUEUE_JOBS)
        rows.append(("enqueue kojo.schedule(), 1 process", f"{rate:,.0f} jobs/s ({ENQUEUE_JOBS:,} jobs)"))
        print(f"{rows[-1][0]}: {rows[-1][1]}", flush=True)
        rate = bulk_enqueue_rate(BULK_JOBS)
        label = f"enqueue kojo.schedule_many(), batches of {BULK_BATCH}"
        rows.append((label, f"{rate:,.0f} jobs/s ({BULK_JOBS:,} jobs)"))
        print(f"{rows[-1][0]}: {rows[-1][1]}", flush=True)

        poll_ms = settings.POLL_INTERVAL * 1000
        for mode in ("ondemand", "static"):
            p50, p95, p99 = percentiles(start_latency(servers, mode, args.samples))
            label = f"enqueue-to-start {mode}, idle, 1 server"
            rows.append(
                (label, f"p50 {p50:.0f} / p95 {p95:.0f} / p99 {p99:.0f} ms (poll interval {poll_ms:.0f} ms)")
            )
            print(f"{label}: {rows[-1][1]}", flush=True)
    finally:
        servers.kill_all()
        shutil.rmtree(SETTINGS_DIR, ignore_errors=True)

    width = max(len(label) for label, _ in rows)
    print(f"\nkojo throughput benchmark ({os.cpu_count()} CPUs, {time.perf_counter() - begun:.0f} s in all)")
    for label, figure in rows:
        print(f"  {label:<{width}}  {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
