"""One memcached connection shared by many requests: written at once, replies read in order.

memcached answers the commands of one connection in the order it received them.
A :class:`Channel` writes each request as soon as it is made and queues the reply
it expects; one reader task reads the replies in order and hands each to its
request. So any number of requests can be in flight on one connection, and a
request that is cancelled or times out cannot leave its reply to somebody else:
the reader still reads it, and drops it.
"""

from __future__ import annotations

import asyncio
import collections
import typing

from traffik.exceptions import BackendError

if typing.TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["LINE", "NON_NUMERIC", "STATS", "VALUES", "Channel", "Reply", "Values"]

#: Reply kinds: one status line (``STORED``, ``NOT_FOUND``, a number, ...), ...
LINE = 0
#: ... a ``VALUE ... END`` block of a ``get``/``gets``, ...
VALUES = 1
#: ... or the ``STAT ... END`` block of ``stats``.
STATS = 2

#: Item key -> (data, cas unique, client flags) of a retrieval reply.
Values = dict[bytes, tuple[bytes, int, int]]
Reply = typing.Union[bytes, Values, dict[bytes, int]]  # noqa: UP007 (a runtime alias on Python 3.10)

_Pending = tuple["Sequence[int]", "asyncio.Future[list[Reply]]", float]


class Channel:
    """A connection with its reader task and the replies it still owes."""

    __slots__ = ("_loop", "_pending", "_task", "_wakeup", "dead", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.dead = False
        self._loop = asyncio.get_running_loop()
        self._pending: collections.deque[_Pending] = collections.deque()
        self._wakeup = asyncio.Event()
        self._task = self._loop.create_task(self._read_replies())

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def usable(self, now: float, patience: float) -> bool:
        """False if closed, or if its oldest reply is more than ``patience`` seconds late."""
        if self.dead or self.reader.at_eof() or self.writer.is_closing():
            return False
        return not self._pending or now - self._pending[0][2] <= patience

    def send(self, payload: bytes, kinds: Sequence[int]) -> asyncio.Future[list[Reply]]:
        """Write ``payload``; the future gets one reply per entry of ``kinds``."""
        if self.dead:
            raise ConnectionError("the connection to memcached is closed")
        future: asyncio.Future[list[Reply]] = self._loop.create_future()
        # Queue and write in the same step: the queue's order is the wire's order.
        self._pending.append((kinds, future, self._loop.time()))
        self.writer.write(payload)
        self._wakeup.set()
        return future

    def close(self, reason: str = "the connection to memcached was closed") -> None:
        """Close the connection; every request still waiting fails with ConnectionError."""
        if not self.dead:
            self.dead = True
            self.writer.close()
            if asyncio.current_task() is not self._task:
                self._task.cancel()
        pending, self._pending = self._pending, collections.deque()
        for _, future, _ in pending:
            if not future.done():
                future.set_exception(ConnectionError(reason))

    async def _read_replies(self) -> None:
        reader = self.reader
        try:
            while True:
                while not self._pending:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                kinds, future, _ = self._pending[0]
                replies: list[Reply] = []
                for kind in kinds:
                    if kind == LINE:
                        replies.append(await _read_line(reader))
                    elif kind == VALUES:
                        replies.append(await _read_values(reader))
                    else:
                        replies.append(await _read_stats(reader))
                self._pending.popleft()
                if not future.done():  # a cancelled request's reply is dropped here
                    future.set_result(replies)
                if any(type(reply) is bytes and _out_of_step(reply) for reply in replies):
                    self.close(f"memcached answered {replies!r}; the connection is out of step")
                    return
        except asyncio.CancelledError:
            self.close()
            raise
        except Exception as exc:
            self.close(f"{type(exc).__name__}: {exc}")


#: The one CLIENT_ERROR memcached sends for a command it parsed whole (``incr``/``decr``).
NON_NUMERIC = b"CLIENT_ERROR cannot increment or decrement non-numeric value"


def _out_of_step(line: bytes) -> bool:
    """True if after ``line`` the replies may no longer match the requests one to one.

    memcached answers a command line it cannot parse with ``ERROR`` or ``CLIENT_ERROR``
    and then reads the command's data block, if it had one, as another command (a
    second reply): the replies of everything written behind it would shift.
    """
    return (line == b"ERROR" or line.startswith(b"CLIENT_ERROR")) and line != NON_NUMERIC


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
        flags, size = int(parts[2]), int(parts[3])
        cas = int(parts[4]) if len(parts) > 4 else 0
        data = await reader.readexactly(size + 2)
        values[parts[1]] = (data[:-2], cas, flags)


async def _read_stats(reader: asyncio.StreamReader) -> dict[bytes, int]:
    stats: dict[bytes, int] = {}
    while True:
        line = await _read_line(reader)
        if line == b"END":
            return stats
        parts = line.split()
        if len(parts) == 3 and parts[0] == b"STAT" and parts[2].isdigit():
            stats[parts[1]] = int(parts[2])
