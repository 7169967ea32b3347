"""Automatic pipelining: decisions that queue up while a round trip is in flight share the next.

An idle backend sends a decision straight away (no added latency). While
``MAX_IN_FLIGHT`` round trips are already out, new decisions wait in a queue; as
soon as one returns, everything queued so far goes out as one pipeline of
``EVALSHA`` calls (each script still runs atomically on its own). Under load this
replaces many small round trips by a few large ones, which is what makes a busy
event loop faster than a plain ``EVALSHA`` per request.
"""

from __future__ import annotations

import asyncio
import typing

from redis.exceptions import NoScriptError

__all__ = ["AutoPipeline"]

#: Round trips (single calls or pipelines) out at once.
MAX_IN_FLIGHT = 2
#: Decisions per pipeline at most.
MAX_BATCH = 512

_Item = tuple[typing.Any, str, typing.Sequence[typing.Any], "asyncio.Future[typing.Any]"]


class AutoPipeline:
    """Runs registered scripts on ``client``, batching calls that arrive under load."""

    __slots__ = ("_client", "_flushing", "_in_flight", "_queue", "_tasks")

    def __init__(self, client: typing.Any) -> None:
        self._client = client
        self._queue: list[_Item] = []
        self._in_flight = 0
        self._flushing = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def call(
        self, script: typing.Any, key: str, args: typing.Sequence[typing.Any]
    ) -> typing.Any:
        """``script(keys=[key], args=args)``, possibly in a pipeline with other calls."""
        if self._in_flight < MAX_IN_FLIGHT and not self._queue:
            self._in_flight += 1
            try:
                return await script(keys=(key,), args=args)
            finally:
                self._in_flight -= 1
                self._kick()
        future: asyncio.Future[typing.Any] = asyncio.get_running_loop().create_future()
        self._queue.append((script, key, args, future))
        self._kick()
        return await future

    def _kick(self) -> None:
        if self._queue and self._in_flight < MAX_IN_FLIGHT and not self._flushing:
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
            pipe = self._client.pipeline(transaction=False)
            for script, key, args, _ in batch:
                pipe.evalsha(script.sha, 1, key, *args)
            results = await pipe.execute(raise_on_error=False)
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
            for (script, key, args, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, NoScriptError):
                    # The server lost its scripts: this call loads it again and retries.
                    self._retry(script, key, args, future)
                elif isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        finally:
            self._in_flight -= 1
            self._kick()

    def _retry(
        self,
        script: typing.Any,
        key: str,
        args: typing.Sequence[typing.Any],
        future: asyncio.Future[typing.Any],
    ) -> None:
        async def again() -> None:
            try:
                result = await script(keys=(key,), args=args)
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(result)

        task = asyncio.get_running_loop().create_task(again())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
