"""A distributed lock on one Redis (or one Redis Cluster slot), owned by its holder."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import typing
import uuid
from collections.abc import Awaitable, Callable

from redis.asyncio.lock import Lock
from redis.exceptions import LockError

__all__ = ["DEFAULT_LOCK_TIMEOUT", "AsyncRedisLock"]

logger = logging.getLogger("traffik.redis")

T = typing.TypeVar("T")

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

    __slots__ = ("_gate", "_lock", "_owned", "name")

    def __init__(
        self,
        client: typing.Any,
        name: str,
        *,
        timeout: float = DEFAULT_LOCK_TIMEOUT,
        gate: asyncio.Semaphore | None = None,
    ) -> None:
        self.name = name
        self._lock = Lock(client, name, timeout=timeout, sleep=_POLL_INTERVAL, thread_local=False)
        self._owned = False
        #: Bounds concurrent commands on a client whose pool raises when exhausted.
        self._gate = gate

    async def _gated(self, command: Callable[..., Awaitable[T]], *args: typing.Any) -> T:
        # The coroutine is made once a slot is free: a caller cancelled while waiting
        # for one leaves no coroutine that was never awaited.
        if self._gate is None:
            return await command(*args)
        async with self._gate:
            return await command(*args)

    def locked(self) -> bool:
        """True while this handle holds the lock (ask Redis with :meth:`held_anywhere`)."""
        return self._owned

    async def held_anywhere(self) -> bool:
        """True if any holder has the lock right now (one round trip)."""
        return bool(await self._gated(self._lock.locked))

    async def acquire(self, blocking: bool = True, blocking_timeout: float | None = None) -> bool:
        """Take the lock; False if it is held elsewhere (non-blocking) or ``blocking_timeout`` passed.

        Cancellation-safe: an attempt whose ``SET`` is already on its way finishes in
        the background, and if it won the lock for a caller that is gone, the lock is
        released at once instead of staying held until ``timeout``.
        """
        if self._owned:
            raise RuntimeError(
                f"Lock {self.name!r} is already held by this handle; it is not re-entrant. "
                f"Release it first, or use one handle per holder."
            )
        token = uuid.uuid4().hex.encode()
        loop = asyncio.get_running_loop()
        stop = None if blocking_timeout is None else loop.time() + blocking_timeout
        while True:
            if await self._attempt(token):
                self._lock.local.token = token
                self._owned = True
                return True
            if not blocking or (stop is not None and loop.time() + _POLL_INTERVAL > stop):
                return False
            await asyncio.sleep(_POLL_INTERVAL)

    async def _attempt(self, token: bytes) -> bool:
        attempt = asyncio.ensure_future(self._gated(self._lock.do_acquire, token))
        try:
            return bool(await asyncio.shield(attempt))
        except asyncio.CancelledError:
            _keep(attempt)
            attempt.add_done_callback(lambda done: self._undo(done, token))
            raise

    def _undo(self, attempt: asyncio.Future[bool], token: bytes) -> None:
        if attempt.cancelled() or attempt.exception() is not None or not attempt.result():
            return
        _keep(asyncio.ensure_future(self._free(token)))

    async def _free(self, token: bytes) -> None:
        with contextlib.suppress(Exception):  # expired or unreachable: the TTL frees it
            await self._gated(self._lock.do_release, token)

    async def release(self) -> None:
        """Release the lock if this handle still holds it; never frees another holder's lock.

        Cancellation-safe: the release goes on in the background if the caller is
        cancelled, so a cancelled request never leaves the lock held.
        """
        if not self._owned:
            return
        self._owned = False
        attempt = asyncio.ensure_future(self._gated(self._lock.release))
        try:
            await asyncio.shield(attempt)
        except asyncio.CancelledError:
            _keep(attempt)
            attempt.add_done_callback(self._report)
            raise
        except LockError:
            self._warn_expired()

    def _report(self, attempt: asyncio.Future[None]) -> None:
        if attempt.cancelled():
            return
        exc = attempt.exception()
        if isinstance(exc, LockError):
            self._warn_expired()
        elif exc is not None:
            logger.warning(
                "Lock %r could not be released: %r; its TTL will free it.", self.name, exc
            )

    def _warn_expired(self) -> None:
        # The lock expired (its holder outlived ``timeout``) and maybe someone else
        # holds it now: the token check left their lock alone.
        logger.warning(
            "Lock %r expired before it was released; raise the backend's lock_timeout.",
            self.name,
        )


#: Background attempts that outlive a cancelled caller (kept referenced until done).
_PENDING: set[asyncio.Future[typing.Any]] = set()


def _keep(future: asyncio.Future[typing.Any]) -> None:
    _PENDING.add(future)
    future.add_done_callback(_PENDING.discard)
