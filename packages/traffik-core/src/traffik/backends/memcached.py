"""``traffik.backends.memcached``: the 1.0.0b2 import path of the Memcached backend.

The backend lives in the ``traffik-memcached`` distribution (``traffik.memcached``).
"""

from __future__ import annotations

try:
    from traffik.memcached import AsyncMemcachedLock, MemcachedBackend
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "traffik.backends.memcached needs the traffik-memcached distribution: "
        "pip install traffik-memcached"
    ) from exc

__all__ = ["AsyncMemcachedLock", "MemcachedBackend"]
