"""traffik-memcached: a Memcached backend for traffik with lock-free atomic decisions.

``MemcachedBackend`` is also importable as ``traffik.backends.memcached.MemcachedBackend``.
"""

from __future__ import annotations

from traffik.memcached.__about__ import __version__
from traffik.memcached.backend import MemcachedBackend
from traffik.memcached.lock import AsyncMemcachedLock

__all__ = ["AsyncMemcachedLock", "MemcachedBackend", "__version__"]
