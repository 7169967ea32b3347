"""A fair connection pool: connections are handed to waiters first come, first served.

``aiomcache.pool.MemcachePool`` (0.8.2) puts a released connection back on an
``asyncio.Queue``; the releasing task usually takes it again before the woken
waiter runs, and the waiter re-queues at the back. Under 64 concurrent tasks on a
pool of 2 that starved some requests for about a second (p50 0.2 ms, max 1 s),
which turns into timeouts. Here a released connection goes straight to the oldest
waiter, and a discarded connection's slot is handed over the same way.
"""

from __future__ import annotations

import asyncio
import collections
import typing

__all__ = ["Connection", "Pool"]


class Connection(typing.NamedTuple):
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


def _dead(conn: Connection) -> bool:
    return conn.reader.at_eof() or conn.reader.exception() is not None or conn.writer.is_closing()


def _close(conn: Connection) -> None:
    conn.writer.close()
    conn.reader.feed_eof()


class Pool:
    """At most ``size`` connections to ``host:port``, opened on demand."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host = host
        self.port = port
        self.size = size
        self._idle: list[Connection] = []
        #: Each waiter receives a connection, or None: a free slot to open one in.
        self._waiters: collections.deque[asyncio.Future[Connection | None]] = collections.deque()
        self._slots = 0  # connections open or being opened
        self._closed = False

    async def acquire(self) -> Connection:
        while self._idle:
            conn = self._idle.pop()
            if not _dead(conn):
                return conn
            _close(conn)
            self._slots -= 1
        if self._slots >= self.size:
            waiter: asyncio.Future[Connection | None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                conn_or_slot = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    handed = waiter.result()
                    if handed is None:
                        self._free_slot()
                    else:
                        self.release(handed)
                raise
            if conn_or_slot is not None:
                if not _dead(conn_or_slot):
                    return conn_or_slot
                _close(conn_or_slot)  # its slot is ours now: open a fresh one in it
        else:
            self._slots += 1
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except BaseException:
            self._free_slot()
            raise
        return Connection(reader, writer)

    def release(self, conn: Connection) -> None:
        """Give a healthy connection back (to the oldest waiter, if any)."""
        if self._closed or _dead(conn):
            self.discard(conn)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    def discard(self, conn: Connection) -> None:
        """Close a connection that may hold unread replies, and free its slot."""
        _close(conn)
        self._free_slot()

    def _free_slot(self) -> None:
        if not self._closed:
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)  # the slot passes to the waiter
                    return
        self._slots -= 1

    def close(self) -> None:
        """Close idle connections; those in use are closed when released."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            _close(conn)
            self._slots -= 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionError("the memcached backend was closed"))
