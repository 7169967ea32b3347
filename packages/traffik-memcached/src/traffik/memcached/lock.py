"""A distributed lock on memcached: ``add`` with an owner token, check-and-delete with CAS."""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import typing

from traffik.exceptions import BackendError
from traffik.memcached._keys import exptime
from traffik.memcached._protocol import LINE, VALUES

if typing.TYPE_CHECKING:
    from traffik.memcached._protocol import Values
    from traffik.memcached.backend import MemcachedBackend

__all__ = ["AsyncMemcachedLock"]

logger = logging.getLogger("traffik.memcached")

#: Releases running in the background (kept referenced until they finish).
_releasing: set[asyncio.Task[None]] = set()

#: First and largest pause between two attempts of a blocking acquire, in seconds.
_FIRST_PAUSE = 0.002
_MAX_PAUSE = 0.1


class AsyncMemcachedLock:
    """A lock named ``name`` shared by every backend instance on the same memcached servers.

    It lives on the server that ``name`` hashes to.

    ``acquire`` stores a random owner token with ``add`` (which succeeds for one
    caller only) and an expiry of ``ttl`` seconds, so a crashed holder blocks others
    for at most ``ttl`` (+1) seconds. A blocking acquire retries with jittered
    exponential backoff (2 ms doubling to 100 ms), never a busy loop. ``release``
    reads the item with ``gets`` and expires it with a ``cas`` only if it still
    holds this handle's token: a holder whose lock already expired and was taken by
    someone else cannot free the new owner's lock. Not re-entrant.

    Cancellation-safe: an acquire cancelled (or timed out) after its ``add`` was sent
    frees the lock in the background if the ``add`` won it, and a cancelled release
    finishes in the background, so neither leaves the lock held until its TTL.
    """

    __slots__ = ("_backend", "_key", "_token", "name", "ttl")

    def __init__(
        self, backend: MemcachedBackend[typing.Any], name: str, key: bytes, ttl: float
    ) -> None:
        self._backend = backend
        self._key = key
        self._token: bytes | None = None
        self.name = name
        self.ttl = ttl

    def locked(self) -> bool:
        """True while this handle holds the lock (memcached cannot be asked synchronously)."""
        return self._token is not None

    async def acquire(self, blocking: bool = True, blocking_timeout: float | None = None) -> bool:
        """Take the lock; False if not acquired (non-blocking, or ``blocking_timeout`` passed)."""
        if self._token is not None:
            raise RuntimeError(
                f"Lock {self.name!r} is already held by this handle; it is not re-entrant."
            )
        client = self._backend._server(self.name).client
        token = secrets.token_hex(16).encode("ascii")
        command = b"add %s 0 %d %d\r\n%s\r\n" % (self._key, exptime(self.ttl), len(token), token)
        loop = asyncio.get_running_loop()
        deadline = None if blocking_timeout is None else loop.time() + blocking_timeout
        pause = _FIRST_PAUSE
        while True:
            # Shielded, so that a cancelled caller still learns whether its add won.
            add = asyncio.ensure_future(client.execute(command, (LINE,)))
            try:
                (line,) = await asyncio.shield(add)
            except asyncio.CancelledError:
                add.add_done_callback(lambda done: self._free_if_won(done, token))
                raise
            except BackendError:
                # Timed out or cut off: the add may have been stored anyway.
                _in_background(self._free(token))
                raise
            if line == b"STORED":
                self._token = token
                return True
            if line != b"NOT_STORED":
                raise BackendError(f"memcached answered add of lock {self.name!r} with {line!r}.")
            if not blocking:
                return False
            wait = random.uniform(pause / 2, pause)
            if deadline is not None:
                left = deadline - loop.time()
                if left <= 0:
                    return False
                wait = min(wait, left)
            await asyncio.sleep(wait)
            pause = min(pause * 2, _MAX_PAUSE)

    async def release(self) -> None:
        """Release the lock if this handle still owns it; otherwise do nothing."""
        token, self._token = self._token, None
        if token is None:
            return
        # Shielded: a caller cancelled mid-release must not leave the lock held.
        await asyncio.shield(_in_background(self._free(token)))

    def _free_if_won(self, add: asyncio.Future[list[typing.Any]], token: bytes) -> None:
        """After a cancelled acquire: free the lock if its ``add`` stored it after all."""
        if add.cancelled():
            return
        # A failed add (a timeout) may have been stored anyway: check, as for a win.
        if add.exception() is not None or add.result()[0] == b"STORED":
            _in_background(self._free(token))

    async def _free(self, token: bytes) -> None:
        """Expire the lock item if it holds ``token`` (a ``gets``, then a conditional ``cas``)."""
        client = self._backend._server(self.name).client
        (values,) = await client.execute(b"gets %s\r\n" % self._key, (VALUES,))
        entry = typing.cast("Values", values).get(self._key)
        if entry is None or entry[0] != token:
            return  # expired, and perhaps taken by another owner since: not ours to free
        # A negative exptime expires the item at once: a delete conditional on the CAS unique.
        await client.execute(b"cas %s 0 -1 0 %d\r\n\r\n" % (self._key, entry[1]), (LINE,))


def _in_background(coro: typing.Coroutine[typing.Any, typing.Any, None]) -> asyncio.Task[None]:
    task = asyncio.get_running_loop().create_task(coro)
    _releasing.add(task)
    task.add_done_callback(_done)
    return task


def _done(task: asyncio.Task[None]) -> None:
    _releasing.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.warning("traffik: releasing a memcached lock failed: %r", task.exception())
