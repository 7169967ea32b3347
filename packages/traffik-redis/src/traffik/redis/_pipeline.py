"""Automatic pipelining on connections of its own: the decision path to one Redis server.

The pipeline holds up to ``lanes`` connections taken from a pool (taken once, given
back on close), so a decision costs one write and one read on a connection already
in hand: no pool round, no redis-py command wrapper, and the ``EVALSHA`` packed in
one step. Only public Connection methods and attributes are used
(``send_packed_command``, ``read_response``, ``pack_command``, ``disconnect``,
``retry``, ``socket_timeout``).

While a lane holds a connection, its ``socket_timeout`` is lifted and kept by the
pipeline instead: redis-py would put a timer on the loop for every write and every
reply, and a pipeline of 30 replies would pay 30 of them. The pipeline bounds each
round trip (single call or batch) by one deadline of ``socket_timeout`` seconds. The
timeout is restored when the connection goes back to the pool.

An idle backend sends a decision straight away (no added latency). While every lane
has a round trip out, new decisions wait in a queue; as soon as one returns,
everything queued so far goes out on it as one pipeline of ``EVALSHA`` calls (each
script still runs atomically on its own). Under load this replaces many small round
trips by a few large ones, which is what makes a busy event loop faster than a
plain ``EVALSHA`` per request.

Failures: a lane never writes on a connection that failed (a ``READONLY`` reply,
from a server demoted to a replica, counts as failed). A round trip that fails
(a broken connection, a reply timeout, a cancelled caller) disconnects its
connection and gives it back to the pool; the next round trip takes one from the
pool again (a Sentinel pool hands out a connection to the current primary). A broken
connection is tried again as the connection's ``Retry`` says, each time on a
connection taken afresh. A timeout is never sent again: the script may have run,
and running it twice would charge the client twice. ``NOSCRIPT`` loads the script on
the same connection and sends the calls that missed it again.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import typing

from redis.exceptions import NoScriptError, ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from traffik.redis._scripts import LuaScript, PackedArgs, pack_evalsha

if typing.TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

__all__ = ["MAX_IN_FLIGHT", "AutoPipeline", "checkout_args", "key_encoder"]

#: Round trips (single calls or pipelines) out at once: the lanes of a pipeline.
MAX_IN_FLIGHT = 2
#: Decisions per pipeline at most.
MAX_BATCH = 512

T = typing.TypeVar("T")
#: A queued call: the packed EVALSHA, its script (for NOSCRIPT), and its caller.
_Queued = tuple[bytes, LuaScript, "asyncio.Future[typing.Any]"]


class AutoPipeline:
    """Runs scripts on up to ``lanes`` connections of ``pool``, batching calls under load.

    ``gate``, if given, bounds the commands of the whole client: each lane holds one
    of its slots for as long as it holds its connection.
    """

    __slots__ = (
        "_checkout",
        "_closed",
        "_flushing",
        "_gate",
        "_idle",
        "_in_flight",
        "_lanes",
        "_pool",
        "_queue",
        "_tasks",
        "_timeouts",
        "encode",
    )

    def __init__(
        self, pool: typing.Any, *, lanes: int, gate: asyncio.Semaphore | None = None
    ) -> None:
        self._pool = pool
        self._gate = gate
        #: The pool's key encoder (str -> bytes), for callers that pass text keys.
        self.encode = key_encoder(pool.get_encoder())
        self._checkout = checkout_args(pool)
        self._lanes = lanes
        self._idle: list[typing.Any] = []
        self._queue: list[_Queued] = []
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

    @property
    def busy(self) -> bool:
        """True while a round trip is out or a call waits."""
        return bool(self._in_flight or self._queue)

    async def call(self, script: LuaScript, key: bytes, args: PackedArgs) -> typing.Any:
        """The reply of ``EVALSHA script 1 key *args``, possibly in a pipeline with other calls."""
        packed = pack_evalsha(script, key, args)
        if self._in_flight < self._lanes and not self._queue:
            self._in_flight += 1
            try:
                return await self._on_lane(lambda conn: _one(conn, packed, script))
            finally:
                self._in_flight -= 1
                if self._queue:
                    self._kick()
        future: asyncio.Future[typing.Any] = asyncio.get_running_loop().create_future()
        self._queue.append((packed, script, future))
        self._kick()
        return await future

    async def warm(self) -> None:
        """Connect every lane now (one at a time), so that the first burst of calls
        does not wait for connections to open."""
        while len(self._idle) + self._in_flight < self._lanes and not self._closed:
            self._idle.append(await self._connect())

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
            conn = await self._pool.get_connection(*self._checkout)
        except BaseException:
            if gate is not None:
                gate.release()
            raise
        self._timeouts[id(conn)] = conn.socket_timeout
        conn.socket_timeout = None  # the round trip's deadline replaces it
        return conn

    async def _release(self, conn: typing.Any) -> None:
        conn.socket_timeout = self._timeouts.pop(id(conn), conn.socket_timeout)
        try:
            await self._pool.release(conn)
        finally:
            if self._gate is not None:
                self._gate.release()

    async def _drop(self, conn: typing.Any) -> None:
        """Disconnect a connection whose round trip failed and give it back to the pool."""
        try:
            await conn.disconnect()
        finally:
            await self._release(conn)

    async def _keep(self, conn: typing.Any) -> None:
        if self._closed:
            await self._release(conn)
        else:
            self._idle.append(conn)

    async def _bounded(self, conn: typing.Any, exchange: Callable[[typing.Any], Awaitable[T]]) -> T:
        """``exchange(conn)`` within the connection's ``socket_timeout`` (one deadline)."""
        timeout = self._timeouts.get(id(conn))
        if timeout is None:
            return await exchange(conn)
        try:
            if sys.version_info >= (3, 11):
                async with asyncio.timeout(timeout):
                    return await exchange(conn)
            return await asyncio.wait_for(exchange(conn), timeout)
        except asyncio.TimeoutError:
            raise RedisTimeoutError(
                f"Redis sent no reply within socket_timeout ({timeout} s)."
            ) from None

    async def _on_lane(self, exchange: Callable[[typing.Any], Awaitable[T]]) -> T:
        """``exchange`` on a lane's connection: kept if it worked, dropped if it failed."""
        conn = self._idle.pop() if self._idle else await self._connect()
        try:
            result = await self._bounded(conn, exchange)
        except ReadOnlyError:
            # The server was demoted to a replica (a failover that kept its address:
            # DNS, a managed service): the next round trip takes a connection afresh.
            await self._drop(conn)
            raise
        except ResponseError:
            await self._keep(conn)  # an error reply: the connection is in step
            raise
        except RedisTimeoutError:
            await self._drop(conn)  # never sent again (see the module docstring)
            raise
        except Exception as error:
            retry = conn.retry
            await self._drop(conn)
            return await self._again(retry, error, exchange)
        except BaseException:
            await self._drop(conn)  # a cancelled caller: its reply may still come
            raise
        await self._keep(conn)
        return result

    async def _again(
        self, retry: typing.Any, error: Exception, exchange: Callable[[typing.Any], Awaitable[T]]
    ) -> T:
        """Try ``exchange`` again as ``retry`` says about ``error``, each time on a
        connection taken afresh from the pool."""
        pending: list[Exception] = [error]
        held: list[typing.Any] = []

        async def attempt() -> T:
            if pending:
                raise pending.pop()  # the first failure: lets ``retry`` judge it
            conn = await self._connect()
            held.append(conn)
            return await self._bounded(conn, exchange)

        async def fail(_: Exception) -> None:
            while held:
                await self._drop(held.pop())

        try:
            result: T = await retry.call_with_retry(attempt, fail)
        except ReadOnlyError:
            while held:
                await self._drop(held.pop())
            raise
        except ResponseError:
            while held:
                await self._keep(held.pop())
            raise
        except BaseException:
            while held:
                await self._drop(held.pop())
            raise
        await self._keep(held.pop())
        return result

    # -- batching ---------------------------------------------------------------------

    def _kick(self) -> None:
        if self._queue and self._in_flight < self._lanes and not self._flushing:
            # Flush on the next loop turn, so every call queued in this one joins.
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flushing = False
        batch = [item for item in self._queue[:MAX_BATCH] if not item[2].done()]
        del self._queue[:MAX_BATCH]
        if not batch:
            self._kick()
            return
        self._in_flight += 1
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Queued]) -> None:
        packed = [item[0] for item in batch]
        scripts = [item[1] for item in batch]
        try:
            replies = await self._on_lane(lambda conn: _exchange(conn, packed, scripts))
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


def key_encoder(encoder: typing.Any) -> Callable[[str], bytes]:
    """What turns a text key into bytes as redis-py's ``encoder`` would: plain
    ``str.encode`` for UTF-8 (the default), else the encoder's own method."""
    if (getattr(encoder, "encoding", None), getattr(encoder, "encoding_errors", None)) == (
        "utf-8",
        "strict",
    ):
        return str.encode
    method: Callable[[str], bytes] = encoder.encode
    return method


def checkout_args(pool: typing.Any) -> tuple[str, ...]:
    """The arguments ``pool.get_connection`` takes here."""
    # redis-py before 5.3 requires a command name; later versions warn when given one.
    parameter = inspect.signature(pool.get_connection).parameters.get("command_name")
    if parameter is not None and parameter.default is inspect.Parameter.empty:
        return ("EVALSHA",)
    return ()


async def _one(conn: typing.Any, packed: bytes, script: LuaScript) -> typing.Any:
    """The reply of one packed ``EVALSHA`` on ``conn``; on ``NOSCRIPT``, load and send it again."""
    await conn.send_packed_command(packed)
    try:
        return await conn.read_response()
    except NoScriptError:
        pass
    # The server lost its scripts (a restart, SCRIPT FLUSH, a promoted replica): load
    # it on this connection and send the call again, in one more round trip.
    await conn.send_packed_command([*conn.pack_command("SCRIPT", "LOAD", script.source), packed])
    await _read(conn)  # the SHA1, or an error the call sent again repeats
    return await conn.read_response()


async def _exchange(
    conn: typing.Any, packed: Sequence[bytes], scripts: Sequence[LuaScript]
) -> list[typing.Any]:
    """One round trip of ``packed`` on ``conn``: each reply, or the ResponseError it gave."""
    await conn.send_packed_command(packed)
    replies = [await _read(conn) for _ in packed]
    lost = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if lost:
        # The server lost its scripts: load each one again and send the calls that
        # missed it, in one more round trip.
        again = {scripts[i].sha: scripts[i] for i in lost}
        commands: list[bytes] = []
        for script in again.values():
            commands.extend(conn.pack_command("SCRIPT", "LOAD", script.source))
        commands.extend(packed[i] for i in lost)
        await conn.send_packed_command(commands)
        for _ in again:
            await _read(conn)  # a SHA1, or an error the calls sent again repeat
        for i in lost:
            replies[i] = await _read(conn)
    for reply in replies:
        if isinstance(reply, ReadOnlyError):
            raise reply  # a demoted server: the whole round trip fails and the lane drops it
    return replies


async def _read(conn: typing.Any) -> typing.Any:
    """The next reply on ``conn``; an error reply is returned, not raised (the stream stays in step)."""
    try:
        return await conn.read_response()
    except ResponseError as exc:
        return exc
