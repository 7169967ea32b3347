"""The traffik 1.0.0b2 import path of the Redis backend (from the traffik-redis distribution)."""

from __future__ import annotations

try:
    from traffik.redis import AsyncRedisLock, RedisBackend
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "traffik.backends.redis needs the traffik-redis distribution: pip install traffik-redis"
    ) from exc

__all__ = ["AsyncRedisLock", "RedisBackend"]
