"""A small memcached text-protocol client: multiplexed, cancellation-safe, bounded in time.

Why not ``aiomcache.Client`` (0.8.2):

- A command cancelled between its request and its reply (a timeout, a client
  disconnect) puts the connection back in the pool with the reply unread, so the
  next command on it reads someone else's answer: a stale ``incr`` value, or a
  ``STORED`` that was really ``EXISTS`` (a lost CAS update, hence over-admission).
- Its pool hands a released connection back to the task that released it before
  the waiters: with 64 tasks on 2 connections some requests waited about a second.
- ``cas`` answers True/False only (the CAS loop needs ``EXISTS`` vs ``NOT_FOUND``),
  ``incr`` on a missing key raises like any error, and there are no timeouts.

Re-checked in December 2026 (``benchmarks/client_eval/memcached_clients.py``, output
in ``results.txt`` beside it): emcache 1.3.3, memcachio 0.5.1 and meta-memcache 4.3.0
are cancellation-safe, honour timeouts and report a missing counter, but none tells
a CAS on a deleted key (``NOT_FOUND``) from a stale one (``EXISTS``) without parsing
an error message (memcachio and meta-memcache return False for both; emcache raises
a generic StorageCommandError for NOT_FOUND). meta-memcache is blocking (no asyncio),
and none sends several commands in one write (the generation read rides along).

Here each connection is a :class:`~traffik.memcached._channel.Channel`: requests are
written at once and their replies read in order by one reader task, so a pool of
``pool_size`` connections carries any number of concurrent requests, several
commands go out in one write (one round trip), and a cancelled request's reply is
read and dropped, never handed to another.
"""

from __future__ import annotations

import asyncio
import sys
import typing

from traffik.exceptions import BackendConnectionError
from traffik.memcached._channel import LINE, NON_NUMERIC, STATS, VALUES, Channel, Reply, Values

if typing.TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["LINE", "NON_NUMERIC", "STATS", "VALUES", "MemcachedClient", "Reply", "Values"]

_HAS_TIMEOUT = sys.version_info >= (3, 11)


class MemcachedClient:
    """Up to ``pool_size`` multiplexed connections to one memcached server.

    :meth:`execute` sends one or more commands in one write and returns one reply
    per command. Each call is bounded by ``timeout`` seconds; a connection on which
    a call timed out, or whose oldest reply is later than that (its callers gave up
    first), is closed and replaced.
    """

    def __init__(
        self, host: str, port: int, *, pool_size: int, timeout: float, connect_timeout: float
    ) -> None:
        self.host = host
        self.port = port
        self.pool_size = pool_size
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._channels: list[Channel] = []
        self._opening: asyncio.Task[Channel] | None = None
        self._closed = False

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def connect(self) -> bytes:
        """Open a connection and return the server's version (bounded by ``connect_timeout``)."""
        (line,) = await self.execute(b"version\r\n", (LINE,), timeout=self.connect_timeout)
        line = typing.cast("bytes", line)
        if not line.startswith(b"VERSION "):
            raise BackendConnectionError(
                f"The server at {self.address} did not answer like memcached ({line[:60]!r}); "
                f"check the host and port."
            )
        return line[8:]

    async def close(self) -> None:
        self._closed = True
        channels, self._channels = self._channels, []
        for channel in channels:
            channel.close("the memcached backend was closed")
        if self._opening is not None:
            self._opening.cancel()

    async def stats(self) -> dict[bytes, int]:
        """The server's numeric ``stats`` (``cmd_get``, ``cmd_set``, ``cas_misses``, ...)."""
        (reply,) = await self.execute(b"stats\r\n", (STATS,))
        return typing.cast("dict[bytes, int]", reply)

    async def execute(
        self, payload: bytes, kinds: Sequence[int], *, timeout: float | None = None
    ) -> list[Reply]:
        """Send ``payload`` (one or more commands) and read one reply of each kind in ``kinds``."""
        limit = self.timeout if timeout is None else timeout
        used: list[Channel] = []
        try:
            if _HAS_TIMEOUT:
                async with asyncio.timeout(limit):  # type: ignore[attr-defined,unused-ignore]
                    return await self._send(payload, kinds, used)
            return await asyncio.wait_for(self._send(payload, kinds, used), limit)
        except (asyncio.TimeoutError, TimeoutError):
            if used:  # the server stopped answering on it: do not queue more behind
                used[0].close(f"memcached did not answer within {limit} s")
            raise BackendConnectionError(
                f"memcached at {self.address} did not answer within {limit} s; check the server "
                f"and the network, or raise the backend's timeout."
            ) from None
        except (OSError, EOFError) as exc:  # ConnectionError included
            raise BackendConnectionError(
                f"Cannot talk to memcached at {self.address}: {type(exc).__name__}: {exc}. "
                f"Check that memcached is running and reachable."
            ) from exc

    async def _send(self, payload: bytes, kinds: Sequence[int], used: list[Channel]) -> list[Reply]:
        channel = await self._channel()
        used.append(channel)
        return await channel.send(payload, kinds)

    async def _channel(self) -> Channel:
        """The least busy healthy connection; a new one while fewer than ``pool_size`` are open."""
        if self._closed:
            raise ConnectionError("the memcached backend was closed")
        now = asyncio.get_running_loop().time()
        best: Channel | None = None
        healthy = True
        for channel in self._channels:
            if not channel.usable(now, self.timeout):
                healthy = False
            elif best is None or channel.in_flight < best.in_flight:
                best = channel
        if not healthy:
            for channel in self._channels:
                if not channel.usable(now, self.timeout):
                    channel.close("memcached stopped answering on this connection")
            self._channels = [c for c in self._channels if not c.dead]
        if best is not None and (best.in_flight == 0 or len(self._channels) >= self.pool_size):
            return best
        if self._opening is None:
            self._opening = asyncio.get_running_loop().create_task(self._open())
            self._opening.add_done_callback(_retrieve)
        # Shielded: one caller's timeout must not abort a connection others wait for.
        return await asyncio.shield(self._opening)

    async def _open(self) -> Channel:
        try:
            # Bounded: an attempt that hangs (a vanished host) would otherwise make every
            # later call wait behind it for the OS's minutes instead of trying afresh.
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), self.connect_timeout
                )
            except (asyncio.TimeoutError, TimeoutError):
                raise ConnectionError(
                    f"connecting took longer than connect_timeout ({self.connect_timeout} s)"
                ) from None
            channel = Channel(reader, writer)
            if self._closed:
                channel.close("the memcached backend was closed")
                raise ConnectionError("the memcached backend was closed")
            self._channels.append(channel)
            return channel
        finally:
            self._opening = None


def _retrieve(task: asyncio.Task[Channel]) -> None:
    # Every waiter may have given up (timed out) before the connection attempt ended.
    if not task.cancelled():
        task.exception()
