"""``manage.py kojo_status``: the fleet view of ``kojo.fleet`` in a terminal, or as JSON."""

from __future__ import annotations

import json
import time

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from kojo.fleet import Snapshot, snapshot
from kojo.server import health

# Exit statuses, so the command can serve as a health check: no server has a fresh heartbeat (or,
# with --server, no such server runs on this machine); the database did not answer; a server's loop
# is stuck (its health file went stale).
NO_LIVE_SERVER = 3
DATABASE_UNAVAILABLE = 4
STUCK = 5
CLEAR_SCREEN = "\033[H\033[2J"
STATE_COLUMNS = (
    ("waiting", "waiting"),
    ("working", "working"),
    ("hold", "hold"),
    ("complete_success", "success"),
    ("complete_failed", "failed"),
    ("canceled", "canceled"),
)


class Command(BaseCommand):
    help = (
        "Show kojo servers with their children and the jobs they run, held locks, jobs per type and "
        "state, and the last hour's throughput, failures and scheduling latency. "
        f"Exits with status {NO_LIVE_SERVER} when no server has a fresh heartbeat (one-shot mode only), "
        "so it can serve as a health check."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="print JSON (one document per refresh)"
        )
        parser.add_argument(
            "--watch", type=float, metavar="SECONDS", help="refresh every SECONDS until interrupted"
        )
        parser.add_argument(
            "--iterations", type=int, metavar="N", help="with --watch: stop after N refreshes"
        )
        parser.add_argument(
            "--server",
            metavar="PID|self",
            help="liveness of one server on this machine (self: any), from its health file, without "
            f"the database: exit 0 when its loop runs (degraded or not), {NO_LIVE_SERVER} when it does "
            f"not run here, {STUCK} when its loop is stuck",
        )

    def handle(self, *args, as_json=False, watch=None, iterations=None, server=None, **options):
        if watch is not None and watch <= 0:
            raise CommandError("--watch takes a positive number of seconds")
        if server is not None:
            return self.probe(server, as_json=as_json)
        if watch is None:
            try:
                view = snapshot()
            except DatabaseError as error:
                raise CommandError(
                    f"database unavailable: {str(error).strip()}", returncode=DATABASE_UNAVAILABLE
                ) from None
            self.show(view, as_json=as_json)
            if not view.live_servers:
                raise CommandError("no live kojo server", returncode=NO_LIVE_SERVER)
            return
        shown = 0
        try:
            while iterations is None or shown < iterations:
                if shown:
                    time.sleep(watch)
                if not as_json and self.stdout.isatty():
                    self.stdout.write(CLEAR_SCREEN, ending="")
                self.show(snapshot(), as_json=as_json, compact=True)
                shown += 1
        except KeyboardInterrupt:
            pass

    def probe(self, server: str, *, as_json: bool) -> None:
        """One server's health file: alive, degraded (what it cannot reach), stuck or absent."""
        if server != "self" and not server.isdigit():
            raise CommandError("--server takes a process id or 'self'")
        records = health.servers_here(None if server == "self" else int(server))
        if not records:
            raise CommandError(f"no kojo server {server} runs on this machine", returncode=NO_LIVE_SERVER)
        stuck = [record for record in records if record["age"] > health.stale_after()]
        for record in records:
            if as_json:
                self.stdout.write(json.dumps(record))
                continue
            parts = ("database", "messaging")
            problems = [
                f"{part}: {' '.join(str(record[part]).split())}"  # one line, whatever the error said
                for part in parts
                if record[part] not in ("ok", "off")
            ]
            verdict = "stuck" if record in stuck else "degraded" if problems else "alive"
            said = f"; {'; '.join(problems)}" if problems else ""
            self.stdout.write(
                f"server {record['pid']}: {verdict}, {record['running']} jobs running, "
                f"last seen {record['age']:.1f} s ago{said}"
            )
        if stuck:
            pids = ", ".join(str(record["pid"]) for record in stuck)
            raise CommandError(f"kojo server {pids} is stuck", returncode=STUCK)

    def show(self, view: Snapshot, *, as_json: bool, compact: bool = False) -> None:
        if as_json:
            self.stdout.write(json.dumps(view.as_dict(), indent=None if compact else 2))
        else:
            self.stdout.write("\n".join(render(view)))


def render(view: Snapshot) -> list[str]:
    """The snapshot as text lines: servers and children, locks, jobs, the last hour."""
    lines = [f"kojo fleet at {view.taken_at:%Y-%m-%d %H:%M:%S %Z}", ""]
    lines += render_servers(view)
    lines += ["", *render_locks(view), "", *render_jobs(view), "", *render_window(view)]
    return lines


def render_servers(view: Snapshot) -> list[str]:
    live = len(view.live_servers)
    lines = [f"Servers: {live} live, {len(view.servers) - live} stale"]
    if not view.servers:
        return [*lines, "  no server has registered"]
    lines.append(f"  {'host':24} {'pid':>7} {'mode':9} {'busy':>9} {'heartbeat':>10}  status")
    for server in view.servers:
        busy = f"{server.busy}/{server.concurrency}"
        lines.append(
            f"  {server.host:24} {server.pid:>7} {server.mode:9} {busy:>9} "
            f"{server.heartbeat_age:>8.1f} s  {server.status}"
        )
        for child in server.children:
            if child.job_id is None:
                lines.append(f"      {child.kind} {child.pid}: idle")
                continue
            doing = f"job {child.job_id} ({child.type_code})"
            if child.job_state:
                doing += f" {child.job_state}"
            if child.job_started_at is not None:
                doing += f" for {(view.taken_at - child.job_started_at).total_seconds():.1f} s"
            if child.progress is not None:
                doing += f", {child.progress}%"
            lines.append(f"      {child.kind} {child.pid}: {doing}")
    return lines


def render_locks(view: Snapshot) -> list[str]:
    if view.locks_error:
        return [f"Locks: lock backend unreachable ({view.locks_error})"]
    if not view.locks:
        return ["Locks: none held"]
    lines = [f"Locks: {len(view.locks)} held", f"  {'lock':30} {'owner':30} {'held for':>10} {'token':>8}"]
    for hold in view.locks:
        held = (view.taken_at - hold.since).total_seconds()
        owner = f"{hold.host}:{hold.pid}"
        lines.append(f"  {hold.name:30} {owner:30} {held:>8.1f} s {hold.token:>8}")
    return lines


def render_jobs(view: Snapshot) -> list[str]:
    if not view.jobs:
        return ["Jobs: no job types"]
    width = max(24, *(len(code) for code in view.jobs))
    header = " ".join(f"{title:>9}" for _, title in STATE_COLUMNS)
    lines = ["Jobs by type and state", f"  {'type':{width}} {header}"]
    for code, states in view.jobs.items():
        counts = " ".join(f"{states.get(state, 0):>9}" for state, _ in STATE_COLUMNS)
        lines.append(f"  {code:{width}} {counts}")
    for code, why in view.unserved.items():
        lines.append(f"  {code}: its waiting jobs wait for a server: {why}")
    return lines


def render_window(view: Snapshot) -> list[str]:
    hours = view.window.total_seconds() / 3600
    span = "hour" if hours == 1 else f"{hours:g} hours"
    lines = [f"Last {span}"]
    for code, states in view.finished.items():
        failures = view.failures.get(code, {})
        if not any(states.values()) and not failures:
            continue
        done = ", ".join(f"{n} {state}" for state, n in states.items() if n) or "none finished"
        failed = ", ".join(f"{n} {outcome}" for outcome, n in failures.items())
        lines.append(f"  {code}: {done}" + (f"; failed attempts: {failed}" if failed else ""))
    if len(lines) == 1:
        lines.append("  no job finished")
    latency = view.latency
    if latency.samples:
        lines.append(
            f"  scheduling latency over {latency.samples} starts: p50 {latency.p50:.3f} s, "
            f"p95 {latency.p95:.3f} s, max {latency.max:.3f} s"
        )
    else:
        lines.append("  scheduling latency: no job started")
    return lines
