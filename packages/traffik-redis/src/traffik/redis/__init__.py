"""traffik-redis: the Redis and Redis Cluster backend of traffik.

``RedisBackend`` runs every built-in strategy as one Lua script (one round trip per
decision, the server's clock) and works on a single Redis or a Redis Cluster.
"""

from __future__ import annotations

from traffik.redis.__about__ import __version__
from traffik.redis.backend import DEFAULT_MAX_CONNECTIONS, RedisBackend
from traffik.redis.lock import DEFAULT_LOCK_TIMEOUT, AsyncRedisLock

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "AsyncRedisLock",
    "RedisBackend",
    "__version__",
]
