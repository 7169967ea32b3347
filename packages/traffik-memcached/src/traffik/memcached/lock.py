"""A distributed lock on memcached: ``add`` with an owner token, check-and-delete with CAS."""

from __future__ import annotations

import asyncio
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

#: First and largest pause between two attempts of a blocking acquire, in seconds.
_FIRST_PAUSE = 0.002
_MAX_PAUSE = 0.1


class AsyncMemcachedLock:
    """A lock named ``name`` shared by every backend instance on the same memcached.

    ``acquire`` stores a random owner token with ``add`` (which succeeds for one
    caller only) and an expiry of ``ttl`` seconds, so a crashed holder blocks others
    for at most ``ttl`` (+1) seconds. A blocking acquire retries with jittered
    exponential backoff (2 ms doubling to 100 ms), never a busy loop. ``release``
    reads the item with ``gets`` and expires it with a ``cas`` only if it still
    holds this handle's token: a holder whose lock already expired and was taken by
    someone else cannot free the new owner's lock. Not re-entrant.
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
        client = self._backend._client()
        token = secrets.token_hex(16).encode("ascii")
        command = b"add %s 0 %d %d\r\n%s\r\n" % (self._key, exptime(self.ttl), len(token), token)
        loop = asyncio.get_running_loop()
        deadline = None if blocking_timeout is None else loop.time() + blocking_timeout
        pause = _FIRST_PAUSE
        while True:
            (line,) = await client.execute(command, (LINE,))
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
        client = self._backend._client()
        (values,) = await client.execute(b"gets %s\r\n" % self._key, (VALUES,))
        entry = typing.cast("Values", values).get(self._key)
        if entry is None or entry[0] != token:
            return  # expired, and perhaps taken by another owner since: not ours to free
        # A negative exptime expires the item at once: a delete conditional on the CAS unique.
        await client.execute(b"cas %s 0 -1 0 %d\r\n\r\n" % (self._key, entry[1]), (LINE,))
