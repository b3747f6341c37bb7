"""The no-op job type kojo runs in benchmarks/peers.py (found by kojo in this app's ``kojo_jobs``)."""

import kojo

from . import noop


@kojo.job_type("peer_noop", name="Peer benchmark no-op")
def peer_noop(job):
    noop()
