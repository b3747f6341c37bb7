"""Redis failures named for what they are, and which of them waiting may cure."""

import pytest
import redis.exceptions as errors

from kojo.redis_errors import describe, is_transient


@pytest.mark.parametrize(
    ("error", "transient", "said"),
    [
        (errors.ConnectionError("Error 111 connecting"), True, "unreachable"),
        (errors.TimeoutError("Timeout reading"), True, "unreachable"),
        (ConnectionRefusedError(111, "refused"), True, "unreachable"),
        (errors.BusyLoadingError("LOADING"), True, "loading its data"),
        (errors.ReadOnlyError("READONLY You can't write against a read only replica."), True, "read-only"),
        (errors.AuthenticationError("invalid username-password pair"), False, "credentials"),
        (errors.NoPermissionError("NOPERM this user has no permissions"), False, "lacks a permission"),
        (errors.ResponseError("CROSSSLOT Keys in request don't hash to the same slot"), False, "hash slots"),
        (errors.ResponseError("EVALSHA - all keys must map to the same key slot"), False, "hash slots"),
        (
            errors.RedisClusterException("Redis Cluster cannot be connected. Please provide at least one"),
            True,
            "unreachable",
        ),
        (errors.RedisClusterException("No way to dispatch this command"), False, "refused a command"),
        (errors.ResponseError("ERR unknown command"), False, "refused a command"),
        (errors.OutOfMemoryError("OOM command not allowed when used memory > 'maxmemory'."), True, "refused"),
        (errors.ResponseError("MISCONF Redis is configured to save RDB snapshots"), True, "refused"),
    ],
)
def test_each_failure_is_named_and_judged(error, transient, said):
    assert is_transient(error) is transient
    assert said in describe(error)


def test_every_failure_redis_py_raises_is_caught_by_any():
    from kojo.redis_errors import ANY

    for error in (errors.RedisClusterException("no nodes"), errors.ChildDeadlockedError(), OSError()):
        assert isinstance(error, ANY)
