"""Django signals kojo sends. Receivers run after the transaction that made the change commits."""

from django.dispatch import Signal

# Sent for every state change, including creation (from_state ""). Arguments: job_id, type_code,
# from_state, to_state, outcome, reason.
job_state_changed = Signal()
