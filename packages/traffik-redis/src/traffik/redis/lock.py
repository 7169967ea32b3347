"""A distributed lock on one Redis (or one Redis Cluster slot), owned by its holder."""

from __future__ import annotations

import logging
import typing

from redis.asyncio.lock import Lock
from redis.exceptions import LockError

__all__ = ["DEFAULT_LOCK_TIMEOUT", "AsyncRedisLock"]

logger = logging.getLogger("traffik.redis")

#: Seconds after which Redis frees a lock whose holder died without releasing it.
DEFAULT_LOCK_TIMEOUT = 10.0
#: Seconds between two attempts of a blocked ``acquire``.
_POLL_INTERVAL = 0.005


class AsyncRedisLock:
    """A lock named ``name`` in Redis, held by whoever acquired this handle.

    Built on redis-py's ``Lock``: ``SET name <random token> NX PX`` to acquire, and
    a script that deletes the key only if it still holds this handle's token to
    release. Each handle has its own token and keeps it on the instance (not in a
    context variable or a thread-local), so a task can never release, or walk into,
    a lock held by another task, and locks are not re-entrant. ``timeout`` (seconds)
    bounds how long a crashed holder can keep the lock.
    """

    __slots__ = ("_lock", "_owned", "name")

    def __init__(
        self, client: typing.Any, name: str, *, timeout: float = DEFAULT_LOCK_TIMEOUT
    ) -> None:
        self.name = name
        self._lock = Lock(client, name, timeout=timeout, sleep=_POLL_INTERVAL, thread_local=False)
        self._owned = False

    def locked(self) -> bool:
        """True while this handle holds the lock (ask Redis with :meth:`held_anywhere`)."""
        return self._owned

    async def held_anywhere(self) -> bool:
        """True if any holder has the lock right now (one round trip)."""
        return bool(await self._lock.locked())

    async def acquire(self, blocking: bool = True, blocking_timeout: float | None = None) -> bool:
        """Take the lock; False if it is held elsewhere (non-blocking) or ``blocking_timeout`` passed."""
        if self._owned:
            raise RuntimeError(
                f"Lock {self.name!r} is already held by this handle; it is not re-entrant."
            )
        acquired = bool(
            await self._lock.acquire(blocking=blocking, blocking_timeout=blocking_timeout)
        )
        self._owned = acquired
        return acquired

    async def release(self) -> None:
        """Release the lock if this handle still holds it; never frees another holder's lock."""
        if not self._owned:
            return
        self._owned = False
        try:
            await self._lock.release()
        except LockError:
            # The lock expired (its holder outlived ``timeout``) and maybe someone else
            # holds it now: the token check left their lock alone.
            logger.warning(
                "Lock %r expired before it was released; raise the backend's lock_timeout.",
                self.name,
            )
