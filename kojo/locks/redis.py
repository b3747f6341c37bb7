"""Fleet-wide locks in Redis, through the django-redis cache named by KOJO_REDIS_CACHE.

Each lock name has three keys: a sorted set of holds scored by lease end, a hash of hold owners and
the last fencing token given (tokens come from the database's sequence where it is PostgreSQL,
kojo.locks.tokens: Redis forgets, and a promoted replica may be behind). They are
``<prefix>:{lock:<name>}:holds|owners|token``: the hash tag puts the three in one slot of a Redis
Cluster, where a script may only touch keys of one slot, and spreads the names over the slots (a tag
starting with "lock:" is never empty, whatever the name). Every decision runs in a Lua
script (scripts/*.lua) on the Redis clock, so the clients' clocks never matter. An owner renews its
lease while it lives. When it dies, a process on its host notices on contention (its pid and start
time are gone) and frees the slot at once; when the whole host is gone, the lease runs out.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path

import redis
from django_redis import get_redis_connection
from redis.commands.core import Script

from kojo import redis_errors
from kojo.exceptions import LockError, LockNotOwned
from kojo.locks import tokens
from kojo.locks.base import BackendRefused, BackendUnavailable, Hold, Owner, ensure_owned_here

logger = logging.getLogger(__name__)

SCRIPTS_DIR = Path(__file__).with_name("scripts")
# Draws for one acquire while concurrent acquirers' later draws keep reaching Redis first: each
# redraw is above every token Redis had when it was drawn, so this many means a foreign sequence.
REDRAWS = 20
# Names refused lately remembered by a backend, at most: a waiter polling one of them probes for a free
# slot before it draws a token, so waiting costs the database nothing.
CONTENDED_NAMES = 1024


def failure(error: BaseException) -> LockError:
    """The lock error a Redis failure means: BackendUnavailable when waiting may cure it (down,
    loading, read-only during a failover), BackendRefused when it will not (credentials, ACLs)."""
    kind = BackendUnavailable if redis_errors.is_transient(error) else BackendRefused
    return kind(redis_errors.describe(error))


def _datetime(milliseconds: int | bytes | float) -> datetime:
    return datetime.fromtimestamp(int(float(milliseconds)) / 1000, tz=UTC)


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _parse_record(record: bytes) -> tuple[datetime, int, Owner]:
    """Split an owners-hash value, "<since ms> <limit> <owner JSON>", as the scripts write it."""
    since, limit, owner_json = record.decode().split(" ", 2)
    owner = Owner.from_dict(json.loads(owner_json))
    return _datetime(since), int(limit), owner


class RedisBackend:
    """Holds kept in Redis; see the module docstring for the key layout."""

    renews_leases = True

    def __init__(self, cache_alias: str, key_prefix: str):
        self.cache_alias = cache_alias
        self.key_prefix = key_prefix
        self._scripts: dict[str, Script] = {}
        self._contended: set[str] = set()

    def __repr__(self) -> str:
        return f"<RedisBackend cache={self.cache_alias!r} prefix={self.key_prefix!r}>"

    @property
    def client(self) -> redis.Redis:
        # Asked of django-redis each time (its cache keeps the client and its pool): a test that
        # swaps CACHES, or a fork, gets the right one; redis-py pools notice a fork themselves.
        return get_redis_connection(self.cache_alias)

    def _run(self, script_name: str, keys: list[str], args: list) -> object:
        try:
            client = self.client
            script = self._scripts.get(script_name)
            if script is None:
                source = (SCRIPTS_DIR / f"{script_name}.lua").read_text()
                script = self._scripts[script_name] = client.register_script(source)
            # After a Redis restart the script cache is empty; Script reloads on NOSCRIPT by itself.
            return script(keys=keys, args=args, client=client)
        except redis_errors.ANY as exc:
            raise failure(exc) from exc

    def _keys(self, name: str) -> list[str]:
        base = f"{self._names_start}{name}}}"
        return [f"{base}:holds", f"{base}:owners", f"{base}:token"]

    @property
    def _names_start(self) -> str:
        return f"{self.key_prefix}:{{lock:"

    def acquire(self, name: str, limit: int, owner: Owner, lease: float) -> Hold | None:
        keys = self._keys(name)
        args = [limit, _milliseconds(lease), owner.as_json]
        reply = self._offer(name, keys, args)
        if reply[0] != 1:
            # Contention: free the slots of holders that died on this host, then try once more.
            dead = self._dead_on_this_host(name, reply[2])
            if not dead or not self._drop(keys, dead):
                return None
            reply = self._offer(name, keys, args)
            if reply[0] != 1:
                return None
        _, token, now, expires = reply
        return Hold(name, limit, owner, int(token), _datetime(now), _datetime(expires))

    def _offer(self, name: str, keys: list[str], args: list) -> list:
        """acquire.lua with a fresh durable token (kojo.locks.tokens) where the database has one;
        drawn again when a concurrent acquirer's later draw reached Redis first. A name whose slots
        were all taken at the last try is probed first, so that a waiter polling it draws no token
        until a slot is free."""
        if not tokens.durable():
            return self._run("acquire", keys, args)
        if name in self._contended:
            reply = self._run("acquire", keys, [*args, "?"])
            if reply[0] == 0:
                return reply
        for _ in range(REDRAWS):
            reply = self._run("acquire", keys, [*args, tokens.draw()])
            if reply[0] == 0:
                if len(self._contended) >= CONTENDED_NAMES:
                    self._contended.clear()
                self._contended.add(name)
                return reply
            if reply[0] == 1:
                self._contended.discard(name)
                return reply
        raise BackendRefused(
            f"lock {name!r}: Redis's last token for it ({int(reply[1])}) stays above this database's "
            f"fencing token sequence ({tokens.SEQUENCE}); if two databases share this Redis, give each "
            "its own KOJO_KEY_PREFIX"
        )

    def release(self, hold: Hold) -> None:
        ensure_owned_here(hold)
        result = self._run("release", self._keys(hold.name)[:2], [hold.token, hold.owner.as_json])
        self._check_owned(hold, result)

    def renew(self, hold: Hold, lease: float) -> Hold:
        ensure_owned_here(hold)
        args = [hold.token, _milliseconds(lease), hold.owner.as_json]
        result = self._run("renew", self._keys(hold.name)[:2], args)
        self._check_owned(hold, result)
        return dataclasses.replace(hold, expires=_datetime(result))

    @staticmethod
    def _check_owned(hold: Hold, result: object) -> None:
        if result == -1:
            raise LockNotOwned(f"lock {hold.name!r} token {hold.token} belongs to another owner")
        if result == 0:
            raise LockNotOwned(
                f"lock {hold.name!r} token {hold.token} was lost: its lease ran out or Redis lost its data"
            )

    def reclaim_dead(self, name: str) -> int:
        keys = self._keys(name)
        try:
            records = self.client.hgetall(keys[1])
        except redis_errors.ANY as exc:
            raise failure(exc) from exc
        flat = [item for pair in records.items() for item in pair]
        return self._drop(keys, self._dead_on_this_host(name, flat))

    def _dead_on_this_host(self, name: str, flat_records: list[bytes]) -> list[bytes]:
        """Token/record pairs (flattened) of holds whose owner ran on this machine and is gone."""
        dead: list[bytes] = []
        for token, record in zip(flat_records[::2], flat_records[1::2], strict=True):
            _, _, owner = _parse_record(record)
            if owner.is_dead_here():
                logger.info("Freeing lock %s token %s: holder pid %s has died", name, int(token), owner.pid)
                dead += [token, record]
        return dead

    def _drop(self, keys: list[str], dead: list[bytes]) -> int:
        return int(self._run("reclaim", keys[:2], dead)) if dead else 0

    def holders(self, name: str | None = None) -> list[Hold]:
        """One script per lock, run where its keys are: on a cluster every primary is scanned, and no
        call spans two slots."""
        start, end = self._names_start, "}:owners"
        try:
            if name is None:
                pattern = re.sub(r"([*?\[\]\\])", r"\\\1", start) + "*" + end
                keys = {key.decode() for key in self.client.scan_iter(match=pattern, count=1000)}
                names = sorted(key[len(start) : -len(end)] for key in keys)
            else:
                names = [name]
        except redis_errors.ANY as exc:
            raise failure(exc) from exc
        holds = []
        for lock_name in names:
            now_ms, flat_records, flat_lease_ends = self._run("holders", self._keys(lock_name)[:2], [])
            lease_ends = map(float, flat_lease_ends[1::2])
            lease_end_by_token = dict(zip(flat_lease_ends[::2], lease_ends, strict=True))
            for token, record in zip(flat_records[::2], flat_records[1::2], strict=True):
                lease_end = lease_end_by_token.get(token)
                if lease_end is None or lease_end <= now_ms:
                    continue  # expired: the next acquire of this name removes it
                since, limit, owner = _parse_record(record)
                holds.append(Hold(lock_name, limit, owner, int(token), since, _datetime(lease_end)))
        return sorted(holds, key=lambda hold: (hold.name, hold.token))
