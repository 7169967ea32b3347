"""Automatic pipelining on connections of its own: the decision path of a single Redis.

The pipeline holds up to ``lanes`` connections taken from the client's pool (taken
once, given back on close), so a decision costs one write and one read on a
connection already in hand: no pool round, no redis-py command wrapper, and the
``EVALSHA`` packed in one step. Only public Connection methods and attributes are
used (``send_packed_command``, ``read_response``, ``pack_command``,
``disconnect``, ``socket_timeout``). While a lane holds a connection, its
``socket_timeout`` moves from writes to reads: ``send_packed_command`` with a
timeout runs each write under ``asyncio.wait_for`` (a task and two loop turns per
write on Python 3.11, about half the throughput under load), so lanes write
without one and pass the timeout to every ``read_response`` instead (a write only
waits when the socket buffer is full; the failure guard bounds every answer).
The timeout is restored when the connection goes back to the pool.

An idle backend sends a decision straight away (no added latency). While every
lane has a round trip out, new decisions wait in a queue; as soon as one returns,
everything queued so far goes out on it as one pipeline of ``EVALSHA`` calls (each
script still runs atomically on its own). Under load this replaces many small round
trips by a few large ones, which is what makes a busy event loop faster than a
plain ``EVALSHA`` per request.

Failures behave as redis-py's own commands: a round trip runs under the
connection's ``Retry`` (a broken connection is dropped, reconnected with its
``connect()`` and the round trip sent again), a reply timeout or a cancelled caller
drops the connection (no stray reply is ever read as another call's answer), and
``NOSCRIPT`` loads the script on the same connection and sends the calls that
missed it again.

A lane never keeps a connection whose round trip failed: it goes back to the pool
disconnected, and the lane's next call takes one from the pool, which connects it
through ``connect()``. That is what makes a lane follow a Sentinel failover: a
Sentinel-managed connection asks the sentinels for the primary in ``connect()``,
but a send on a disconnected connection reconnects to its last address (the dead
primary) without asking. A ``READONLY`` reply (the server was demoted to a replica)
fails the round trip the same way, so the next connection finds the new primary.
"""

from __future__ import annotations

import asyncio
import inspect
import typing

from redis.exceptions import NoScriptError, ReadOnlyError, ResponseError
from traffik.redis._scripts import LuaScript, PackedArgs, pack_evalsha

__all__ = ["MAX_IN_FLIGHT", "AutoPipeline"]

#: Round trips (single calls or pipelines) out at once: the lanes of a pipeline.
MAX_IN_FLIGHT = 2
#: Decisions per pipeline at most.
MAX_BATCH = 512

_Call = tuple[LuaScript, str, PackedArgs]
_Item = tuple[LuaScript, str, PackedArgs, "asyncio.Future[typing.Any]"]


class AutoPipeline:
    """Runs scripts on up to ``lanes`` connections of ``pool``, batching calls under load.

    ``gate``, if given, bounds the commands of the whole client: each lane holds one
    of its slots for as long as it holds its connection.
    """

    __slots__ = (
        "_closed",
        "_encode",
        "_flushing",
        "_gate",
        "_idle",
        "_in_flight",
        "_lanes",
        "_pool",
        "_queue",
        "_tasks",
        "_timeouts",
    )

    def __init__(
        self, pool: typing.Any, *, lanes: int, gate: asyncio.Semaphore | None = None
    ) -> None:
        self._pool = pool
        self._gate = gate
        self._encode: typing.Callable[[str], bytes] = pool.get_encoder().encode
        self._lanes = lanes
        self._idle: list[typing.Any] = []
        self._queue: list[_Item] = []
        self._in_flight = 0
        self._flushing = False
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        # The socket_timeout of each connection held, restored on release.
        self._timeouts: dict[int, float | None] = {}

    @classmethod
    def for_client(cls, client: typing.Any, gate: asyncio.Semaphore | None) -> AutoPipeline | None:
        """A pipeline on ``client``'s pool, or None if the pool cannot spare a connection.

        A pool of ``n`` connections lends at most ``n - 1`` (and ``MAX_IN_FLIGHT``), so
        other commands always find one; with a gate, each lane holds one of its slots.
        """
        pool = getattr(client, "connection_pool", None)
        if pool is None or getattr(client, "single_connection_client", False):
            return None
        size = getattr(pool, "max_connections", None)
        if not isinstance(size, int) or not all(
            hasattr(pool, name) for name in ("get_connection", "release", "get_encoder")
        ):
            return None
        lanes = min(MAX_IN_FLIGHT, size - 1)
        return cls(pool, lanes=lanes, gate=gate) if lanes >= 1 else None

    @staticmethod
    def _checkout_args(pool: typing.Any) -> tuple[str, ...]:
        # redis-py before 5.3 requires a command name; later versions warn when given one.
        parameter = inspect.signature(pool.get_connection).parameters.get("command_name")
        if parameter is not None and parameter.default is inspect.Parameter.empty:
            return ("EVALSHA",)
        return ()

    async def call(self, script: LuaScript, key: str, args: PackedArgs) -> typing.Any:
        """The reply of ``EVALSHA script 1 key *args``, possibly in a pipeline with other calls."""
        if self._in_flight < self._lanes and not self._queue:
            self._in_flight += 1
            try:
                conn = self._idle.pop() if self._idle else await self._connect()
                try:
                    packed = pack_evalsha(script, self._encode(key), args)
                    reply = await conn.retry.call_with_retry(
                        lambda: _one(conn, packed, script, self._read_timeout(conn)),
                        lambda error: _reconnect(conn),
                    )
                except BaseException:
                    await self._drop(conn)
                    raise
                await self._keep(conn)
                return reply
            finally:
                self._in_flight -= 1
                if self._queue:
                    self._kick()
        future: asyncio.Future[typing.Any] = asyncio.get_running_loop().create_future()
        self._queue.append((script, key, args, future))
        self._kick()
        return await future

    async def aclose(self) -> None:
        """Give every idle connection back to the pool; busy ones go back when their call ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._release(conn)

    # -- lanes ------------------------------------------------------------------------

    async def _connect(self) -> typing.Any:
        gate = self._gate
        if gate is not None:
            await gate.acquire()
        try:
            conn = await self._pool.get_connection(*self._checkout_args(self._pool))
        except BaseException:
            if gate is not None:
                gate.release()
            raise
        self._timeouts[id(conn)] = conn.socket_timeout
        conn.socket_timeout = None  # reads get it explicitly (see the module docstring)
        return conn

    async def _keep(self, conn: typing.Any) -> None:
        """After a round trip that went well: keep ``conn`` for the next call (or give it back)."""
        if self._closed:
            await self._release(conn)
        else:
            self._idle.append(conn)

    async def _drop(self, conn: typing.Any) -> None:
        """After a failed round trip: ``conn`` goes back to the pool, disconnected."""
        try:
            await conn.disconnect()
        except Exception:  # it is dropped anyway; the pool connects it again on checkout
            pass
        finally:
            await self._release(conn)

    def _read_timeout(self, conn: typing.Any) -> float | None:
        return self._timeouts.get(id(conn))

    async def _release(self, conn: typing.Any) -> None:
        conn.socket_timeout = self._timeouts.pop(id(conn), conn.socket_timeout)
        try:
            await self._pool.release(conn)
        finally:
            if self._gate is not None:
                self._gate.release()

    async def _exchange(self, conn: typing.Any, calls: typing.Sequence[_Call]) -> list[typing.Any]:
        """One round trip of ``calls`` on ``conn``: each reply, or the ResponseError it gave."""
        encode = self._encode
        packed = [pack_evalsha(script, encode(key), args) for script, key, args in calls]
        timeout = self._read_timeout(conn)

        async def attempt() -> list[typing.Any]:
            await conn.send_packed_command(packed)
            replies = [await _read(conn, timeout) for _ in packed]
            lost = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if lost:
                # The server lost its scripts (a restart, SCRIPT FLUSH): load each one
                # again and send the calls that missed it, in one more round trip.
                scripts = {calls[i][0].sha: calls[i][0] for i in lost}
                commands: list[bytes] = []
                for script in scripts.values():
                    commands.extend(conn.pack_command("SCRIPT", "LOAD", script.source))
                commands.extend(packed[i] for i in lost)
                await conn.send_packed_command(commands)
                for _ in scripts:
                    await _read(conn, timeout)  # a SHA1, or an error the calls sent again repeat
                for i in lost:
                    replies[i] = await _read(conn, timeout)
            for reply in replies:
                if isinstance(reply, ReadOnlyError):
                    raise reply  # a demoted primary: drop the connection (module docstring)
            return replies

        result: list[typing.Any] = await conn.retry.call_with_retry(
            attempt, lambda error: _reconnect(conn)
        )
        return result

    # -- batching ---------------------------------------------------------------------

    def _kick(self) -> None:
        if self._queue and self._in_flight < self._lanes and not self._flushing:
            # Flush on the next loop turn, so every call queued in this one joins.
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flushing = False
        batch = [item for item in self._queue[:MAX_BATCH] if not item[3].done()]
        del self._queue[:MAX_BATCH]
        if not batch:
            self._kick()
            return
        self._in_flight += 1
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Item]) -> None:
        try:
            conn = self._idle.pop() if self._idle else await self._connect()
            try:
                replies = await self._exchange(conn, [item[:3] for item in batch])
            except BaseException:
                await self._drop(conn)
                raise
            await self._keep(conn)
        except BaseException as exc:
            for *_, future in batch:
                if future.done():
                    continue
                if isinstance(exc, Exception):
                    future.set_exception(exc)
                else:
                    future.cancel()
            if not isinstance(exc, Exception):
                raise
        else:
            for (*_, future), reply in zip(batch, replies, strict=True):
                if future.done():
                    continue
                if isinstance(reply, ResponseError):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        finally:
            self._in_flight -= 1
            self._kick()


async def _reconnect(conn: typing.Any) -> None:
    """Before a retry: drop ``conn`` and connect it again with its own ``connect()``
    (a Sentinel-managed connection asks the sentinels where the primary is now)."""
    await conn.disconnect()
    await conn.connect()


async def _one(
    conn: typing.Any, packed: bytes, script: LuaScript, timeout: float | None
) -> typing.Any:
    """The reply of one packed ``EVALSHA`` on ``conn``; on ``NOSCRIPT``, load and send it again."""
    await conn.send_packed_command(packed)
    try:
        return await conn.read_response(timeout=timeout)
    except NoScriptError:
        pass
    # The server lost its scripts (a restart, SCRIPT FLUSH): load it on this
    # connection and send the call again, in one more round trip.
    await conn.send_packed_command([*conn.pack_command("SCRIPT", "LOAD", script.source), packed])
    await _read(conn, timeout)  # the SHA1, or an error the call sent again repeats
    return await conn.read_response(timeout=timeout)


async def _read(conn: typing.Any, timeout: float | None) -> typing.Any:
    """The next reply on ``conn``; an error reply is returned, not raised (the stream stays in step)."""
    try:
        return await conn.read_response(timeout=timeout)
    except ResponseError as exc:
        return exc
