"""The fleet view in Prometheus's text exposition format (version 0.0.4), from ``kojo.fleet``.

Every metric is a gauge, on purpose. Job rows are pruned, so "finished jobs in the database" can fall;
the last hour's figures fall as the window slides; a Prometheus counter must never decrease except at a
restart, and ``rate()`` would read every prune as a reset and invent throughput. A gauge is the honest
type for a value read from the database at scrape time. Latency is published as gauges of p50, p95 and
max rather than as a summary, because a summary's ``_sum`` and ``_count`` must be cumulative.

Access: with ``KOJO_METRICS_TOKEN`` set, a request must send ``Authorization: Bearer <token>`` (what
Prometheus's ``authorization`` scrape option sends); without it, only a logged-in staff user may read
the page, so that it is never public by accident. Anyone else gets 403.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable, Iterator

from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from kojo.conf import settings
from kojo.fleet import WINDOW, Snapshot, snapshot

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Sample = tuple[dict[str, str], float]


def escape_label(value: str) -> str:
    """A label value as the format wants it: backslash, double quote and line feed escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """HELP text escapes only backslash and line feed."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if value != value:  # NaN
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def family(name: str, help_text: str, samples: Iterable[Sample], kind: str = "gauge") -> Iterator[str]:
    """The lines of one metric family: HELP, TYPE, then one line per sample."""
    yield f"# HELP {name} {escape_help(help_text)}"
    yield f"# TYPE {name} {kind}"
    for labels, value in samples:
        label_text = ",".join(f'{key}="{escape_label(str(val))}"' for key, val in labels.items())
        yield (
            f"{name}{{{label_text}}} {format_value(value)}" if label_text else f"{name} {format_value(value)}"
        )


def exposition(view: Snapshot) -> str:
    """The whole page for one snapshot."""
    window = "hour" if view.window == WINDOW else f"{view.window.total_seconds():g} s"
    latency = view.latency
    lines = [
        *family(
            "kojo_jobs",
            "Jobs in the database by type and state (finished jobs leave when pruned).",
            (
                ({"type": code, "state": state}, n)
                for code, states in view.jobs.items()
                for state, n in states.items()
            ),
        ),
        *family("kojo_jobs_working", "Jobs working across the fleet.", [({}, view.total("working"))]),
        *family(
            "kojo_jobs_finished_last_hour",
            f"Jobs that reached a terminal state in the last {window}, by type and state.",
            (
                ({"type": code, "state": state}, n)
                for code, states in view.finished.items()
                for state, n in states.items()
            ),
        ),
        *family(
            "kojo_job_failures_last_hour",
            f"Attempts that ended in failure in the last {window}, retried ones included, by type and "
            "outcome.",
            (
                ({"type": code, "outcome": outcome}, n)
                for code, outcomes in view.failures.items()
                for outcome, n in outcomes.items()
            ),
        ),
        *family(
            "kojo_jobs_deadline_at_risk",
            "Jobs waiting or working that were projected to miss their finish_by, by type.",
            (({"type": code}, n) for code, n in sorted(view.at_risk.items())),
        ),
        *family(
            "kojo_servers_live",
            "Servers whose heartbeat is younger than KOJO_HEARTBEAT_TIMEOUT (stopping ones included).",
            [({}, len(view.live_servers))],
        ),
        *family(
            "kojo_servers_stale",
            "Server rows whose heartbeat is older than KOJO_HEARTBEAT_TIMEOUT.",
            [({}, len(view.servers) - len(view.live_servers))],
        ),
        *family(
            "kojo_server_busy_children",
            "Children of each live server running a job.",
            [({"host": s.host, "pid": str(s.pid)}, s.busy) for s in view.live_servers],
        ),
        *family(
            "kojo_server_concurrency",
            "Most jobs each live server runs at once.",
            [({"host": s.host, "pid": str(s.pid)}, s.concurrency) for s in view.live_servers],
        ),
        *family(
            "kojo_scheduling_latency_seconds",
            f"Seconds due jobs waited for a claim, over starts in the last {window} (stat: p50, p95, max).",
            (
                ({"stat": stat}, value)
                for stat, value in (("p50", latency.p50), ("p95", latency.p95), ("max", latency.max))
                if value is not None
            ),
        ),
        *family(
            "kojo_scheduling_latency_samples",
            f"Starts in the last {window} the latency figures were computed from.",
            [({}, latency.samples)],
        ),
        *family(
            "kojo_lock_backend_up",
            "1 when the lock backend answered, 0 when it could not be reached.",
            [({}, 0 if view.locks_error else 1)],
        ),
        *family("kojo_locks_held", "Lock slots held now.", [({}, len(view.locks))]),
    ]
    return "\n".join(lines) + "\n"


def allowed(request: HttpRequest) -> bool:
    """The bearer token when one is configured; otherwise a logged-in staff user."""
    token = settings.METRICS_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_active and user.is_staff)


@never_cache
@require_safe
def view(request: HttpRequest) -> HttpResponse:
    """The metrics page; see the module docstring for who may read it."""
    if not allowed(request):
        return HttpResponseForbidden("kojo metrics: forbidden\n", content_type="text/plain")
    return HttpResponse(exposition(snapshot()), content_type=CONTENT_TYPE)
