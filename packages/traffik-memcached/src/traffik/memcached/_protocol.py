"""A small, cancellation-safe memcached text-protocol client with a fair pool.

Why not ``aiomcache.Client`` (0.8.2):

- A command cancelled between its request and its reply (a timeout, a client
  disconnect) puts the connection back in the pool with the reply unread, so the
  next command on it reads someone else's answer: a stale ``incr`` value, or a
  ``STORED`` that was really ``EXISTS`` (a lost CAS update, hence over-admission).
  Here any exception, cancellation included, discards the connection.
- ``cas`` answers True/False only; the CAS loop needs ``EXISTS`` vs ``NOT_FOUND``,
  and ``incr`` on a missing key must be told apart from real errors.
- No timeouts, and no pipelining: traffik sends the namespace generation read and
  the command itself in one write (one round trip).
- Its pool is not fair under load (see :mod:`traffik.memcached._pool`).
"""

from __future__ import annotations

import asyncio
import sys
import typing

from traffik.exceptions import BackendConnectionError, BackendError
from traffik.memcached._pool import Pool

if typing.TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["LINE", "STATS", "VALUES", "MemcachedClient", "Reply", "Values"]

#: Reply kinds: one status line (``STORED``, ``NOT_FOUND``, a number, ...) ...
LINE = 0
#: ... or a ``VALUE ... END`` block of a ``get``/``gets``, or ``STAT ... END``.
VALUES = 1
STATS = 2

#: Item key -> (data, cas unique) of a retrieval reply.
Values = dict[bytes, tuple[bytes, int]]
Reply = typing.Union[bytes, Values, dict[bytes, int]]  # noqa: UP007 (a runtime alias on Python 3.10)

_HAS_TIMEOUT = sys.version_info >= (3, 11)


class MemcachedClient:
    """Pooled connections to one memcached server, with per-request timeouts.

    :meth:`execute` writes a batch of commands at once and reads one reply per
    command, in order. A connection is reused only after a request completed
    normally; after any exception (timeout and cancellation included) it is closed.
    """

    def __init__(
        self, host: str, port: int, *, pool_size: int, timeout: float, connect_timeout: float
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._pool = Pool(host, port, pool_size)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def connect(self) -> bytes:
        """Open the pool and return the server's version (bounded by ``connect_timeout``)."""
        reply = await self.execute(b"version\r\n", (LINE,), timeout=self.connect_timeout)
        line = typing.cast("bytes", reply[0])
        if not line.startswith(b"VERSION "):
            raise BackendConnectionError(
                f"The server at {self.address} did not answer like memcached ({line[:60]!r}); "
                f"check the host and port."
            )
        return line[8:]

    async def close(self) -> None:
        self._pool.close()

    async def stats(self) -> dict[bytes, int]:
        """The server's numeric ``stats`` (``cmd_get``, ``cmd_set``, ``cas_misses``, ...)."""
        (reply,) = await self.execute(b"stats\r\n", (STATS,))
        return typing.cast("dict[bytes, int]", reply)

    async def execute(
        self, payload: bytes, kinds: Sequence[int], *, timeout: float | None = None
    ) -> list[Reply]:
        """Send ``payload`` (one or more commands) and read one reply of each kind in ``kinds``."""
        limit = self.timeout if timeout is None else timeout
        try:
            if _HAS_TIMEOUT:
                async with asyncio.timeout(limit):  # type: ignore[attr-defined,unused-ignore]
                    return await self._run(payload, kinds)
            return await asyncio.wait_for(self._run(payload, kinds), limit)
        except (asyncio.TimeoutError, TimeoutError):
            raise BackendConnectionError(
                f"memcached at {self.address} did not answer within {limit} s; check the server "
                f"and the network, or raise the backend's timeout."
            ) from None
        except (OSError, EOFError, ConnectionError) as exc:
            raise BackendConnectionError(
                f"Cannot talk to memcached at {self.address}: {type(exc).__name__}: {exc}. "
                f"Check that memcached is running and reachable."
            ) from exc

    async def _run(self, payload: bytes, kinds: Sequence[int]) -> list[Reply]:
        conn = await self._pool.acquire()
        try:
            conn.writer.write(payload)
            reader = conn.reader
            replies: list[Reply] = []
            for kind in kinds:
                if kind == LINE:
                    replies.append(await _read_line(reader))
                elif kind == VALUES:
                    replies.append(await _read_values(reader))
                else:
                    replies.append(await _read_stats(reader))
        except BaseException:
            # The connection may hold unread replies: never reuse it.
            self._pool.discard(conn)
            raise
        self._pool.release(conn)
        return replies


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    line = await reader.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("memcached closed the connection")
    return line[:-2]


async def _read_values(reader: asyncio.StreamReader) -> Values:
    values: Values = {}
    while True:
        line = await _read_line(reader)
        if line == b"END":
            return values
        parts = line.split()
        if len(parts) < 4 or parts[0] != b"VALUE":
            raise BackendError(f"memcached answered a get with {line[:80]!r}.")
        size = int(parts[3])
        cas = int(parts[4]) if len(parts) > 4 else 0
        data = await reader.readexactly(size + 2)
        values[parts[1]] = (data[:-2], cas)


async def _read_stats(reader: asyncio.StreamReader) -> dict[bytes, int]:
    stats: dict[bytes, int] = {}
    while True:
        line = await _read_line(reader)
        if line == b"END":
            return stats
        parts = line.split()
        if len(parts) == 3 and parts[0] == b"STAT" and parts[2].isdigit():
            stats[parts[1]] = int(parts[2])
