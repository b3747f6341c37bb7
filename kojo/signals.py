"""Django signals kojo sends. Receivers run after the transaction that made the change commits.

``job_state_changed`` is sent for every change. The named signals below say what happened, so a
receiver of ``job_canceled`` never hears about a job that timed out. Each receives ``job_id``,
``type_code``, ``from_state``, ``to_state``, ``outcome`` and ``reason``.
"""

from __future__ import annotations

from django.dispatch import Signal, receiver

# Every state change, including creation (from_state "").
job_state_changed = Signal()

job_scheduled = Signal()  # created, waiting
job_started = Signal()  # claimed by a server: working
job_succeeded = Signal()  # complete_success
job_failed = Signal()  # complete_failed, no attempt left (or the job asked for it)
job_retrying = Signal()  # an attempt ended without success; another one will follow
job_held = Signal()  # parked until released
job_released = Signal()  # back to waiting from hold, or retried by an operator after it ended
job_canceled = Signal()  # canceled before it ran (by a request or a failed dependency)
job_aborted = Signal()  # stopped while working, at someone's request
# What ended an attempt, sent beside job_retrying or job_failed:
job_timed_out = Signal()
job_crashed = Signal()  # its process died, or its server stopped heartbeating
job_panicked = Signal()  # its code raised

# A server's pooled workers (``static`` and ``dynamic`` modes), sent in the server's own process as it
# starts one and as it reaps one: keep receivers quick. Each receives ``pid``, ``index`` (its slot),
# ``server_pid`` and ``host``; ``worker_stopped`` also ``reason``: "recycled after N jobs", "memory
# above M MiB", "idle", "stop", "timeout", "abort", "lease lapsed", or "crashed: ..." with how it died.
worker_started = Signal()
worker_stopped = Signal()

# A due job a claim passed over, sent in the claiming process once the claim committed, at most once a
# minute per job and reason per process (kojo.lifecycle). Receives ``job_id``, ``type_code`` and
# ``reason``: "limited" (a limit or bucket is full), "not ready" (a readiness check), "rate-limited".
job_postponed = Signal()

# A job first projected to miss its ``finish_by``, sent once fleet-wide by the leading housekeeper
# (kojo.deadlines). Receives ``job_id``, ``type_code``, ``finish_by`` and ``projected_end`` (ISO 8601).
job_deadline_at_risk = Signal()

OUTCOME_SIGNALS = {
    "timed_out": job_timed_out,
    "crashed": job_crashed,
    "orphaned": job_crashed,
    "panicked": job_panicked,
}


def named_signals(from_state: str, to_state: str, outcome: str) -> list[Signal]:
    """The named signals one state change fires, in order."""
    found = [OUTCOME_SIGNALS[outcome]] if outcome in OUTCOME_SIGNALS else []
    if to_state == "waiting":
        if from_state == "":
            found.append(job_scheduled)
        elif from_state == "working":
            found.append(job_retrying)
        else:
            found.append(job_released)
    elif to_state == "working":
        found.append(job_started)
    elif to_state == "complete_success":
        found.append(job_succeeded)
    elif to_state == "complete_failed":
        found.append(job_failed)
    elif to_state == "hold":
        found.append(job_held)
    elif to_state == "canceled":
        found.append(job_aborted if outcome == "aborted" else job_canceled)
    return found


@receiver(job_state_changed, dispatch_uid="kojo.signals.send_named")
def send_named(sender, *, from_state, to_state, outcome="", signal=None, **kwargs) -> None:
    from kojo.transitions import log_receiver_error

    for named in named_signals(from_state, to_state, outcome):
        results = named.send_robust(
            sender=sender, from_state=from_state, to_state=to_state, outcome=outcome, **kwargs
        )
        for failed, result in results:
            if isinstance(result, Exception):
                item = {"from_state": from_state, "to_state": to_state, **kwargs}
                log_receiver_error(failed, result, item)
