"""Resident memory of an idle kojo_server process tree, in ondemand mode and in static mode.

Starts one ``kojo_server`` (through benchmarks/throughput.py: its scratch database ``test_bench`` and
its settings; concurrency 4), waits until it has registered and its tree has settled (no process came
or went and the total RSS moved less than 2% over the last 2 s, at least ``--settle`` seconds after
registration), then reads ``/proc/<pid>/smaps_rollup`` of every process in the tree and prints RSS, PSS
(shared pages divided among the processes sharing them, so PSS adds up across a forked tree) and
private memory, per process and in total. No job runs: this is the footprint of a waiting server.

Run ``cd /work/main && .venv/bin/python benchmarks/memory.py [--concurrency N] [--settle S]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import throughput  # noqa: E402  (sets Django up on test_bench)

MODES = ("ondemand", "static")
CONCURRENCY = 4
SETTLE = 5.0
TIMEOUT = 60.0


def children_of() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def process_tree(root: int) -> list[int]:
    tree, pids, todo = children_of(), [], [root]
    while todo:
        pid = todo.pop(0)
        pids.append(pid)
        todo.extend(sorted(tree.get(pid, [])))
    return pids


def memory(pid: int) -> dict[str, int]:
    """kB figures from smaps_rollup: Rss, Pss, and Private (clean + dirty)."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0])
    return {
        "rss": fields["Rss"],
        "pss": fields["Pss"],
        "private": fields["Private_Clean"] + fields["Private_Dirty"],
    }


def title(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()


def settle(root: int, minimum: float) -> list[int]:
    """Wait `minimum` seconds, then until the tree is stable; return its pids."""
    time.sleep(minimum)
    deadline = time.monotonic() + TIMEOUT
    before = process_tree(root)
    total = sum(memory(pid)["rss"] for pid in before)
    while True:
        time.sleep(2)
        pids = process_tree(root)
        now = sum(memory(pid)["rss"] for pid in pids)
        if pids == before and abs(now - total) < 0.02 * total:
            return pids
        if time.monotonic() > deadline:
            print(f"tree of {root} still changing after {TIMEOUT:.0f} s; measuring anyway", file=sys.stderr)
            return pids
        before, total = pids, now


def measure(
    servers: throughput.Servers, mode: str, concurrency: int, minimum: float
) -> list[tuple[int, str, dict[str, int]]]:
    throughput.truncate_jobs()
    servers.start(mode, 1, concurrency)
    try:
        servers.wait_registered()
        root = servers.processes[0][0].pid
        return [(pid, title(pid), memory(pid)) for pid in settle(root, minimum)]
    finally:
        servers.stop()


def mib(kb: int) -> str:
    return f"{kb / 1024:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--concurrency", type=int, default=CONCURRENCY, help=f"server concurrency ({CONCURRENCY})"
    )
    parser.add_argument(
        "--settle", type=float, default=SETTLE, help=f"seconds idle before measuring ({SETTLE:g})"
    )
    args = parser.parse_args()
    servers = throughput.Servers()
    totals = []
    try:
        throughput.prepare_database()
        for mode in MODES:
            rows = measure(servers, mode, args.concurrency, args.settle)
            print(
                f"\nidle kojo_server --mode {mode} --concurrency {args.concurrency}: {len(rows)} processes\n"
            )
            print("| pid | process | RSS MiB | PSS MiB | private MiB |")
            print("| --- | --- | --- | --- | --- |")
            for pid, name, figures in rows:
                kinds = " | ".join(mib(figures[key]) for key in ("rss", "pss", "private"))
                print(f"| {pid} | {name[:60]} | {kinds} |")
            total = {key: sum(figures[key] for _, _, figures in rows) for key in ("rss", "pss", "private")}
            print(f"| | **total** | {mib(total['rss'])} | {mib(total['pss'])} | {mib(total['private'])} |")
            totals.append((mode, len(rows), total))
    finally:
        servers.kill_all()
        shutil.rmtree(throughput.SETTINGS_DIR, ignore_errors=True)
    print(f"\nidle kojo_server tree, concurrency {args.concurrency}, {os.cpu_count()} CPUs\n")
    print("| mode | processes | RSS MiB (sum) | PSS MiB (sum) | private MiB (sum) |")
    print("| --- | --- | --- | --- | --- |")
    for mode, count, total in totals:
        print(f"| {mode} | {count} | {mib(total['rss'])} | {mib(total['pss'])} | {mib(total['private'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
