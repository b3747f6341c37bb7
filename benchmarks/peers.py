"""kojo beside its peers: the same no-op workload on each, on this machine, in one run.

For every system: N no-op jobs are enqueued from one process, one call per job (the jobs/s of that loop
is the enqueue figure); then the system's workers are started (2 processes running jobs, for every
system) and drain them. The processing figure is N over the time from the first job's start to the last
job's end, both stamped by the job itself in Redis (one pipelined round trip per job, the same for
every system); the time from starting the workers to the last job's end (start-up included) is shown too.

Systems (one small module each in benchmarks/peer_apps/):

* kojo static (pre-forked pool) and kojo ondemand (fork per job): one ``kojo_server --concurrency 2``,
  through benchmarks/throughput.py (scratch database ``test_bench``);
* Celery (Redis broker, prefork pool of 2), RQ (2 ``rq worker``, a fork per job), Dramatiq (Redis broker,
  2 processes x 1 thread), Huey (Redis, 2 worker processes), Procrastinate (PostgreSQL, 2 workers of
  concurrency 1), django-q2 (Redis broker, cluster of 2 workers), django-tasks-db (2 ``db_worker``).

Scratch stores, emptied before every system's run: Redis db 9 (``KOJO_PEERS_REDIS_URL``) and the
PostgreSQL database ``kojo_bench_peers`` (dropped and re-created).

The peers are not dependencies of kojo: ``--setup`` creates benchmarks/.peers-venv (python3.11) and
installs each of them there, one pip call per peer, plus this project (``pip install -e``). Every system
then runs in a child process on that virtualenv's interpreter. A system that failed to install or to run
is listed in the table with the reason.

Run ``cd /work/main && .venv/bin/python benchmarks/peers.py --setup`` once, then
``.venv/bin/python benchmarks/peers.py [--jobs N] [--only kojo-static,celery,...]``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
VENV = BENCHMARKS / ".peers-venv"
VENV_PYTHON = VENV / "bin" / "python"
INSTALL_STATUS = VENV / "install-status.json"
DEFAULT_JOBS = 1000  # the whole run stays near 2 minutes on a 2-CPU machine
DRAIN_TIMEOUT = 180.0
POLL = 0.02

# name: (module in peer_apps, class, pip requirements or () for kojo itself)
SYSTEMS = {
    "kojo-static": ("kojo_app", "Static", ()),
    "kojo-ondemand": ("kojo_app", "Ondemand", ()),
    "celery": ("celery_app", "Peer", ("celery[redis]",)),
    "rq": ("rq_app", "Peer", ("rq",)),
    "dramatiq": ("dramatiq_app", "Peer", ("dramatiq[redis]",)),
    "huey": ("huey_app", "Peer", ("huey",)),
    "procrastinate": ("procrastinate_app", "Peer", ("procrastinate",)),
    "django-q2": ("django_app", "DjangoQ2", ("django-q2",)),
    "django-tasks-db": ("django_app", "DjangoTasksDB", ("django-tasks-db[compat]",)),
}
KOJO = ("kojo-static", "kojo-ondemand")


def setup() -> None:
    """Create the peers' virtualenv and install the project, then each peer on its own (failures noted)."""
    if not VENV_PYTHON.exists():
        subprocess.run(["python3.11", "-m", "venv", str(VENV)], check=True)
    pip = [str(VENV_PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    result = subprocess.run([*pip, "-e", str(REPO)], capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"pip install -e {REPO} failed:\n{result.stderr[-3000:]}")
    status = {}
    for name, (_, _, requirements) in SYSTEMS.items():
        if not requirements:
            continue
        print(f"installing {name}: {' '.join(requirements)}", flush=True)
        result = subprocess.run([*pip, *requirements], capture_output=True, text=True)
        lines = [line for line in result.stderr.splitlines() if line.startswith("ERROR")] or [""]
        status[name] = "ok" if result.returncode == 0 else f"pip install failed: {lines[-1][:200]}"
        print(f"  {status[name]}", flush=True)
    INSTALL_STATUS.write_text(json.dumps(status, indent=2))


def run_one(name: str, jobs: int) -> dict:
    """In the child: run `name` once and return its figures (the peer_apps modules need sys.path)."""
    sys.path.insert(0, str(BENCHMARKS))
    import peer_apps

    module, cls, _ = SYSTEMS[name]
    system = getattr(importlib.import_module(f"peer_apps.{module}"), cls)()
    peer_apps.flush_redis()
    system.clean()
    started = time.perf_counter()
    system.enqueue(jobs)
    enqueue_seconds = time.perf_counter() - started
    system.start()
    try:
        started = time.perf_counter()
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while (done := peer_apps.done()) < jobs:
            system.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {done} of {jobs} jobs ran within {DRAIN_TIMEOUT:.0f} s")
            time.sleep(POLL)
        wall = time.perf_counter() - started
    finally:
        system.stop()
    span = peer_apps.span()
    time.sleep(0.2)
    return {
        "label": system.label,
        "jobs": jobs,
        "ran": peer_apps.done(),
        "enqueue": jobs / enqueue_seconds,
        "process": jobs / span,
        "span": span,
        "wall": wall,
    }


def child(name: str, jobs: int) -> dict:
    """Run one system in a child process on the peers' interpreter; failures come back as a reason."""
    status = json.loads(INSTALL_STATUS.read_text()) if INSTALL_STATUS.exists() else {}
    if name not in KOJO and status.get(name, "not installed: run with --setup") != "ok":
        return {"error": status.get(name, "not installed: run with --setup")}
    python = VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable)
    command = [str(python), __file__, "--child", name, "--jobs", str(jobs)]
    try:
        result = subprocess.run(
            command, cwd=REPO, capture_output=True, text=True, timeout=DRAIN_TIMEOUT + 120
        )
    except subprocess.TimeoutExpired:
        return {"error": "timed out"}
    lines = result.stdout.strip().splitlines()
    if result.returncode == 0 and lines:
        return json.loads(lines[-1])
    errors = [line for line in result.stderr.strip().splitlines() if line.strip()] or ["no output"]
    print(result.stderr[-3000:], file=sys.stderr)
    return {"error": f"failed: {errors[-1][:160]}"}


def ratio(kojo: dict, peer: dict, key: str) -> str:
    if "error" in kojo or "error" in peer:
        return "-"
    return f"{kojo[key] / peer[key]:.2f}"


def print_table(results: dict[str, dict], jobs: int, load: float) -> None:
    static, ondemand = (results.get(name, {"error": "not run"}) for name in KOJO)
    enqueuer = ondemand if "error" in static else static  # both enqueue through kojo.schedule()
    headers = [
        "system",
        "enqueue jobs/s",
        "process jobs/s",
        "drain s (incl. start-up)",
        "enqueue kojo/peer",
        "process static/peer",
        "process ondemand/peer",
    ]
    rows = []
    for name, result in results.items():
        if "error" in result:
            rows.append([name, result["error"], "", "", "", "", ""])
            continue
        label = result["label"] + ("" if result["ran"] == jobs else f" ({result['ran']} runs!)")
        rows.append(
            [
                label,
                f"{result['enqueue']:,.0f}",
                f"{result['process']:,.0f}",
                f"{result['wall']:.2f}",
                ratio(enqueuer, result, "enqueue"),
                ratio(static, result, "process"),
                ratio(ondemand, result, "process"),
            ]
        )
    print(
        f"\n{jobs:,} no-op jobs per system, 2 processes running jobs each, {os.cpu_count()} CPUs "
        f"(1-minute load average {load:.1f} before the run, {os.getloadavg()[0]:.1f} after)\n"
    )
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join(" --- " for _ in headers) + "|")
    for row in rows:
        if row[2] == "":  # a failure: its reason spans the figures
            print(f"| {row[0]} | {row[1]} | | | | | |")
        else:
            print("| " + " | ".join(row) + " |")


def exit_on_signal(signum, frame) -> None:
    raise SystemExit(128 + signum)


def main() -> int:
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, exit_on_signal)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS, help=f"jobs per system ({DEFAULT_JOBS})")
    parser.add_argument("--only", help=f"comma-separated systems among {', '.join(SYSTEMS)}")
    parser.add_argument("--setup", action="store_true", help="create/refresh the peers' virtualenv first")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child, args.jobs)))
        return 0
    names = [name.strip() for name in args.only.split(",")] if args.only else list(SYSTEMS)
    unknown = set(names) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown system(s) {', '.join(sorted(unknown))}; choose among {', '.join(SYSTEMS)}")
    if args.setup:
        setup()
    results, load = {}, os.getloadavg()[0]
    for name in names:
        began = time.perf_counter()
        results[name] = child(name, args.jobs)
        result = results[name]
        summary = (
            result.get("error") or f"enqueue {result['enqueue']:,.0f}/s, process {result['process']:,.0f}/s"
        )
        print(f"{name}: {summary} ({time.perf_counter() - began:.0f} s)", flush=True)
    print_table(results, args.jobs, load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
