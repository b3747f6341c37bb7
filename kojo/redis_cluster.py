"""Redis Cluster behind a django-redis cache: django-redis has no cluster client of its own.

Point a cache's ``CONNECTION_FACTORY`` here and ``get_redis_connection(alias)`` returns a
``redis.cluster.RedisCluster`` that found the whole cluster from the node in ``LOCATION``::

    CACHES = {"default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://10.0.0.1:7000",
        "OPTIONS": {"CONNECTION_FACTORY": "kojo.redis_cluster.ClusterConnectionFactory"},
    }}

kojo keeps each lock's keys in one hash slot, and on a cluster sends its messages by sharded pub/sub
(kojo.messaging). The cache's own multi-key calls (``get_many``, ``delete_many``) only work for keys
of one slot: give the rest of the project a cache of its own.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from django_redis.pool import ConnectionFactory
from redis.cluster import RedisCluster

__all__ = ["ClusterConnectionFactory", "is_cluster"]


def is_cluster(client: object) -> bool:
    return isinstance(client, RedisCluster)


class ClusterConnectionFactory(ConnectionFactory):
    """One ``RedisCluster`` per LOCATION and process, shared by every thread: discovering the cluster's
    nodes and slots costs round trips to each node, and the client keeps a connection pool per node."""

    _clusters: dict[str, RedisCluster] = {}
    _lock = threading.Lock()

    @classmethod
    def _after_fork(cls) -> None:
        # A thread of the parent may have held the lock at the fork; each node's pool notices the new
        # pid by itself and connects anew.
        cls._lock = threading.Lock()

    def connect(self, url: str) -> RedisCluster:
        with self._lock:
            cluster = self._clusters.get(url)
            if cluster is None:
                cluster = self._clusters[url] = RedisCluster.from_url(url, **self.cluster_kwargs(url))
            return cluster

    def cluster_kwargs(self, url: str) -> dict[str, Any]:
        """The cache's OPTIONS as RedisCluster takes them (USERNAME, PASSWORD, SOCKET_TIMEOUT, ...,
        CONNECTION_POOL_KWARGS for each node's pool, REDIS_CLIENT_KWARGS for the cluster client)."""
        params = self.make_connection_params(url)
        params.pop("url")
        params.pop("parser_class")  # each node's connections parse replies their own way
        return {**params, **self.pool_cls_kwargs, **self.redis_client_cls_kwargs}

    def disconnect(self, connection: RedisCluster) -> None:
        connection.disconnect_connection_pools()


os.register_at_fork(after_in_child=ClusterConnectionFactory._after_fork)
