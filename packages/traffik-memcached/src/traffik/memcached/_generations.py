"""Namespace generations: an O(1) ``reset()`` for a store that cannot list its keys.

Every key of namespace N is stored under ``{N}+{generation}``. ``reset()`` increments
the generation stored at ``{N}~gen``, so every old item becomes unreachable at once
(memcached reclaims it by TTL or LRU). Each backend instance caches the generations
it has seen; callers read the current value in the same round trip as their command
and redo the command if it moved (see ``MemcachedBackend._run``).

A generation starts at the wall-clock milliseconds when its key is created, so an
evicted generation key never comes back with a number already used (which would
resurrect old items). Losing it to eviction is equivalent to a ``reset()``.
"""

from __future__ import annotations

import asyncio
import typing

from traffik.backends.base import wall_clock_ms
from traffik.exceptions import BackendError
from traffik.memcached._keys import generation_key
from traffik.memcached._protocol import LINE, VALUES

if typing.TYPE_CHECKING:
    from collections.abc import Iterable

    from traffik.memcached._protocol import MemcachedClient, Values

__all__ = ["Generations"]

#: Namespaces whose generation one instance remembers (its own plus foreign keys' ones).
_MAX_CACHED = 1024


class Generations:
    """The generation numbers one backend instance knows, and when it read each of them."""

    __slots__ = ("_cache", "ttl")

    def __init__(self, ttl: float) -> None:
        #: Seconds a value read is trusted without reading it again (0: read on every call).
        self.ttl = ttl
        self._cache: dict[str, tuple[int, float]] = {}

    def get(self, tag: str) -> int | None:
        entry = self._cache.get(tag)
        return None if entry is None else entry[0]

    def fresh(self, tag: str) -> bool:
        """True if ``tag``'s generation was read less than ``ttl`` seconds ago."""
        if not self.ttl:
            return False
        entry = self._cache.get(tag)
        return entry is not None and _now() - entry[1] < self.ttl

    def remember(self, tag: str, generation: int) -> bool:
        """Store what was read; True if it differs from what was cached."""
        old = self._cache.get(tag)
        if old is None and len(self._cache) >= _MAX_CACHED:
            del self._cache[next(iter(self._cache))]  # the oldest entry: read again if needed
        self._cache[tag] = (generation, _now())
        return old is None or old[0] != generation

    def note(self, tag: str, entry: tuple[bytes, int, int] | None) -> bool | None:
        """Record a generation read alongside a command: True if it moved, None if missing."""
        if entry is None:
            return None
        return self.remember(tag, int(entry[0]))

    async def load(self, client: MemcachedClient, tags: Iterable[str]) -> None:
        """Read (creating if missing) the generations of ``tags``."""
        wanted = list(dict.fromkeys(tags))
        keys = [generation_key(tag) for tag in wanted]
        (values,) = await client.execute(b"get %s\r\n" % b" ".join(keys), (VALUES,))
        found = typing.cast("Values", values)
        for tag, key in zip(wanted, keys, strict=True):
            entry = found.get(key)
            if entry is None:
                await self.create(client, tag)
            else:
                self.remember(tag, int(entry[0]))

    async def create(self, client: MemcachedClient, tag: str) -> None:
        """Create ``tag``'s generation key if it is missing, then remember its value."""
        start = max(wall_clock_ms(), (self.get(tag) or 0) + 1)
        value = str(start).encode("ascii")
        key = generation_key(tag)
        payload = b"add %s 0 0 %d\r\n%s\r\nget %s\r\n" % (key, len(value), value, key)
        line, values = await client.execute(payload, (LINE, VALUES))
        entry = typing.cast("Values", values).get(key)
        if entry is None:
            # Not stored (out of memory, ...): a generation only this instance knows
            # would split the namespace between instances. Fail instead.
            raise BackendError(
                f"memcached did not store the generation of namespace {tag!r} ({line!r}); "
                f"check its memory (-m) and eviction settings."
            )
        self.remember(tag, int(entry[0]))

    async def bump(self, client: MemcachedClient, tag: str) -> None:
        """Move ``tag`` to a new generation (everyone's next call sees it)."""
        (line,) = await client.execute(b"incr %s 1\r\n" % generation_key(tag), (LINE,))
        line = typing.cast("bytes", line)
        if line.isdigit():
            self.remember(tag, int(line))
        elif line == b"NOT_FOUND":
            await self.create(client, tag)
        else:
            raise BackendError(f"memcached answered the generation bump with {line!r}.")


def _now() -> float:
    return asyncio.get_running_loop().time()
