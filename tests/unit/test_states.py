import pytest

from kojo.states import PENDING, TERMINAL, TRANSITIONS, JobState, is_legal, sources

LEGAL = {
    ("waiting", "working"),
    ("waiting", "hold"),
    ("waiting", "canceled"),
    ("working", "complete_success"),
    ("working", "complete_failed"),
    ("working", "waiting"),
    ("working", "hold"),
    ("working", "canceled"),
    ("hold", "waiting"),
    ("hold", "canceled"),
    ("complete_failed", "waiting"),
    ("canceled", "waiting"),
}


def test_table_covers_every_state():
    assert set(TRANSITIONS) == set(JobState)


@pytest.mark.parametrize("current", list(JobState))
@pytest.mark.parametrize("target", list(JobState))
def test_each_pair_is_legal_exactly_when_listed(current, target):
    assert is_legal(current, target) == ((current.value, target.value) in LEGAL)


def test_success_is_final_and_terminal_states_only_retry():
    assert TRANSITIONS[JobState.COMPLETE_SUCCESS] == frozenset()
    for state in TERMINAL:
        assert TRANSITIONS[state] <= {JobState.WAITING}


def test_sources_is_the_inverse_of_the_table():
    assert sources(JobState.WORKING) == {JobState.WAITING}
    assert sources(JobState.CANCELED) == {JobState.WAITING, JobState.WORKING, JobState.HOLD}


def test_pending_and_terminal_partition_the_states():
    assert PENDING | TERMINAL == set(JobState)
    assert not PENDING & TERMINAL
