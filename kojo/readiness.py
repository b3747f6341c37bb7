"""Readiness criteria: when a waiting job of a type may be claimed, beyond its start time.

A type's ``readiness`` is a small tree stored as JSON, so operators can edit it in the admin and code
can build it with the helpers below:

- ``{"limit": 5}``: fewer than 5 jobs of this type are working, fleet-wide;
- ``{"limit": 2, "key": "customer"}``: fewer than 2 working jobs of this type have the same
  ``params["customer"]`` as this job (a bucket; ``"key"`` may list several keys);
- ``{"check": "myapp.checks.warehouse_open"}``: a function registered with ``@kojo.readiness_check``
  returns true for the job's params;
- ``{"all": [...]}`` and ``{"any": [...]}`` combine criteria; a bare list means ``all``.

A job that is not ready stays waiting, uses no attempt and blocks nothing behind it; the claim looks at
it again on its next pass. Limits are counted while the type's row is locked, in the same transaction
that marks the chosen jobs working, so two servers can never both take a bucket's last slot.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from django.core.exceptions import ValidationError

logger = logging.getLogger(__name__)

Criterion = dict[str, Any] | list[Any]

# Deeper trees are surely a mistake, and recursion on them must stay bounded.
MAX_DEPTH = 8

checks: dict[str, Callable[[dict[str, Any]], Any]] = {}


def readiness_check(function: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
    """Decorator: allow ``function(params) -> bool`` to be named in a type's readiness criteria."""
    checks[check_name(function)] = function
    return function


def check_name(function: Callable[..., Any]) -> str:
    return f"{function.__module__}.{function.__qualname__}"


# Builders, for code that declares job types.


def limit_to(count: int, key: str | Iterable[str] | None = None) -> dict[str, Any]:
    """At most ``count`` working jobs of the type (per value of ``params[key]`` when a key is given)."""
    criterion: dict[str, Any] = {"limit": count}
    if key is not None:
        criterion["key"] = key if isinstance(key, str) else list(key)
    return criterion


def check(function: Callable[[dict[str, Any]], Any] | str) -> dict[str, Any]:
    """Ready when the registered check returns true; a function passed here is registered."""
    if callable(function):
        readiness_check(function)
        return {"check": check_name(function)}
    return {"check": function}


def all_of(*criteria: Criterion) -> dict[str, Any]:
    return {"all": list(criteria)}


def any_of(*criteria: Criterion) -> dict[str, Any]:
    return {"any": list(criteria)}


# Validation, shared by the admin, the registrar and the system checks through kojo.validators.


def problems(criterion: Any, depth: int = 0) -> list[str]:
    """What is wrong with a readiness tree, in words; empty when it is valid."""
    if depth > MAX_DEPTH:
        return [f"criteria are nested more than {MAX_DEPTH} levels deep"]
    if isinstance(criterion, list):
        return [problem for item in criterion for problem in problems(item, depth + 1)]
    if not isinstance(criterion, dict) or len(criterion.keys() - {"key"}) != 1:
        return [
            f"{criterion!r} is not a criterion: use {{'limit': N}}, {{'limit': N, 'key': 'name'}}, "
            "{'check': 'dotted.name'}, {'all': [...]} or {'any': [...]}"
        ]
    if "limit" in criterion:
        return limit_problems(criterion)
    if "key" in criterion:
        return [f"{criterion!r}: 'key' belongs to a 'limit' criterion"]
    if "check" in criterion:
        name = criterion["check"]
        if name not in checks:
            known = ", ".join(sorted(checks)) or "none are registered"
            return [
                f"{name!r} is not a registered readiness check (registered: {known}); decorate it "
                "with @kojo.readiness_check in a kojo_jobs module"
            ]
        return []
    for combinator in ("all", "any"):
        if combinator in criterion:
            items = criterion[combinator]
            if not isinstance(items, list) or not items:
                return [f"'{combinator}' takes a non-empty list of criteria, not {items!r}"]
            return problems(items, depth + 1)
    return [f"{criterion!r}: unknown criterion {next(iter(criterion))!r}"]


def limit_problems(criterion: dict[str, Any]) -> list[str]:
    from kojo.validators import MAX_LIMIT

    count = criterion["limit"]
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_LIMIT:
        return [f"'limit' takes a whole number from 1 to {MAX_LIMIT}, not {count!r}"]
    key = criterion.get("key")
    if key is None:
        return []
    keys = [key] if isinstance(key, str) else key
    if not isinstance(keys, list) or not keys or not all(is_key(k) for k in keys):
        return [f"'key' takes a params key or a list of them, not {key!r}"]
    return []


def is_key(key: Any) -> bool:
    if not isinstance(key, str) or not 0 < len(key) <= 100 or "\x00" in key:
        return False  # PostgreSQL cannot store NUL in JSON
    try:
        key.encode()
    except UnicodeEncodeError:
        return False  # a lone surrogate, which no database stores either
    return True


# Evaluation, by the claim.


def bucket_keys(criterion: Any) -> set[tuple[str, ...]]:
    """Every bucket (tuple of params keys; ``()`` for the whole type) a tree limits."""
    if isinstance(criterion, list):
        return set().union(*(bucket_keys(item) for item in criterion))
    if not isinstance(criterion, dict):
        return set()
    if "limit" in criterion:
        return {keys_of(criterion)}
    return set().union(*(bucket_keys(item) for item in criterion.get("all", criterion.get("any", []))))


def required_limits(criterion: Any) -> list[dict[str, Any]]:
    """The limits every job of the type must meet: those reached from the root through lists and
    ``all`` alone. A job over one of them cannot be ready until that bucket has room, whatever the
    rest of the tree says."""
    if isinstance(criterion, list):
        return [limit for item in criterion for limit in required_limits(item)]
    if not isinstance(criterion, dict):
        return []
    if "limit" in criterion:
        return [criterion]
    if "all" in criterion and isinstance(criterion["all"], list):
        return required_limits(criterion["all"])
    return []


def keys_of(criterion: dict[str, Any]) -> tuple[str, ...]:
    key = criterion.get("key")
    if key is None:
        return ()
    return (key,) if isinstance(key, str) else tuple(key)


def bucket_of(params: dict[str, Any], keys: tuple[str, ...]) -> str:
    # Compared as text so that 1 and "1" (or a missing key and null) share a bucket predictably.
    return repr(tuple(params.get(key) for key in keys))


class Buckets:
    """Working jobs of one type per bucket: counted under the type's row lock, then kept up to date
    as the claim chooses more jobs of the type."""

    def __init__(self, criterion: Any, working_params: Iterable[dict[str, Any]]):
        self.criterion = criterion
        self.counts: dict[tuple[str, ...], Counter[str]] = {
            keys: Counter() for keys in bucket_keys(criterion)
        }
        for params in working_params:
            self.add(params)

    def add(self, params: dict[str, Any]) -> None:
        for keys, counter in self.counts.items():
            counter[bucket_of(params, keys)] += 1

    def admits(self, params: dict[str, Any]) -> bool:
        return is_ready(self.criterion, params, self)

    def room(self, keys: tuple[str, ...], bucket: str) -> int:
        """Jobs the bucket ``bucket`` of ``keys`` can still take under the required limits on those
        keys (0 when none limits them)."""
        limits = [limit for limit in required_limits(self.criterion) if keys_of(limit) == keys]
        if not limits:
            return 0
        return max(0, min(limit["limit"] for limit in limits) - self.counts[keys][bucket])

    def full_required(self, params: dict[str, Any]) -> tuple[tuple[str, ...], str, int] | None:
        """The first required limit on params keys whose bucket for ``params`` is full, as (keys,
        bucket, limit); None when there is none (the job may be not ready for another reason)."""
        for limit in required_limits(self.criterion):
            keys = keys_of(limit)
            if keys and self.counts[keys][bucket := bucket_of(params, keys)] >= limit["limit"]:
                return keys, bucket, limit["limit"]
        return None

    def whole_type_full(self) -> bool:
        """A required limit without keys is reached: no job of the type can be ready."""
        return any(
            not keys_of(limit) and sum(self.counts[()].values()) >= limit["limit"]
            for limit in required_limits(self.criterion)
        )


def is_ready(criterion: Any, params: dict[str, Any], buckets: Buckets | None = None) -> bool:
    """Evaluate a tree for a job's params, left to right, stopping early like ``and``/``or``."""
    if isinstance(criterion, list):
        return all(is_ready(item, params, buckets) for item in criterion)
    if "all" in criterion:
        return all(is_ready(item, params, buckets) for item in criterion["all"])
    if "any" in criterion:
        return any(is_ready(item, params, buckets) for item in criterion["any"])
    if "limit" in criterion:
        keys = keys_of(criterion)
        working = buckets.counts[keys][bucket_of(params, keys)] if buckets is not None else 0
        return working < criterion["limit"]
    return run_check(criterion["check"], params)


def run_check(name: str, params: dict[str, Any]) -> bool:
    function = checks.get(name)
    if function is None:
        logger.error("readiness check %s is not registered; the job waits", name)
        return False
    try:
        return bool(function(params))
    except Exception:
        # A broken check must not break the claim for every other type: the job simply waits.
        logger.exception("readiness check %s raised; the job waits", name)
        return False


def validate(criterion: Any) -> None:
    found = problems(criterion)
    if found:
        raise ValidationError("; ".join(found), code="invalid_readiness")
