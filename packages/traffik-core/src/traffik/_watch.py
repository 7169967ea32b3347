"""How long a guarded request waits, and whose fault a long wait is (the guard's clock).

See :class:`Watch`. Also the two waiting primitives the guard needs: start a
call as a task (eagerly where Python can), and wait for a future until a
deadline without cancelling or awaiting it.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import typing

if typing.TYPE_CHECKING:
    from traffik._circuit import CircuitBreaker

__all__ = ["BEHIND", "DONE", "SILENT", "Watch", "start", "until"]

T = typing.TypeVar("T")

#: Loop turns a silent-looking server gets before it is judged (microseconds when idle).
GRACE_TURNS = 6
#: A wake-up later than this (seconds) means the loop lost time.
PUNCTUAL = 0.005
DONE = "done"
SILENT = "silent"
BEHIND = "behind"


class Watch:
    """The clock of one request: when to stop waiting, and whose fault the wait is.

    Time is judged in windows of ``timeout`` of the server's time. The request
    wakes every ``timeout / 4`` while it waits; whatever its wake-ups come late by
    (a busy event loop, a descheduled process: it could not have read an answer
    either) moves the window's end by as much, so the server is never charged for
    time this process lost. At the end of a window:

    - the request's failure domain answered nothing at all: the server is silent
      (a failure, answered by policy);
    - it answered other calls: this request is behind this process's own backlog;
      it gets another window, up to ``max_wait`` in all, then the overload answer.

    So a silent server is answered within ``timeout`` plus the time the loop lost
    (and a few loop turns).
    """

    __slots__ = ("_answers", "_breaker", "_deadline", "_give_up", "_loop", "timeout")

    def __init__(self, breaker: CircuitBreaker, timeout: float | None, max_wait: float) -> None:
        self._loop = loop = asyncio.get_running_loop()
        self._breaker = breaker
        self.timeout = timeout
        now = loop.time()
        self._deadline = None if timeout is None else now + timeout
        self._give_up = now + max(max_wait, timeout or 0.0)
        self._answers = breaker.answers

    async def wait(self, future: asyncio.Future[typing.Any]) -> str:
        """Wait for ``future``: DONE, or SILENT (the server) or BEHIND (this process)."""
        timeout = self.timeout
        if self._deadline is None or timeout is None:
            await until(future, None)
            return DONE
        loop, breaker = self._loop, self._breaker
        step = timeout / 4
        while True:
            wake = min(self._deadline, loop.time() + step)
            await until(future, wake)
            if future.done():
                return DONE
            now = loop.time()
            if now - wake > PUNCTUAL:
                self._deadline += now - wake  # time the loop lost, not the server's
            if now < self._deadline:
                continue
            if breaker.answers == self._answers:
                # An answer already read from the socket takes a few loop turns to
                # reach its caller: let them run before calling the server silent.
                for _ in range(GRACE_TURNS):
                    if future.done() or breaker.answers != self._answers:
                        break
                    await asyncio.sleep(0)
                if future.done():
                    return DONE
                lost = loop.time() - now
                if lost > PUNCTUAL:  # the loop was busy during those turns
                    self._deadline += lost
                    continue
                if breaker.answers == self._answers:
                    return SILENT
            if now >= self._give_up:
                return BEHIND
            self._answers = breaker.answers
            self._deadline = min(now + timeout, self._give_up)


if sys.version_info >= (3, 12):

    def start(coro: typing.Coroutine[typing.Any, typing.Any, T]) -> asyncio.Task[T]:
        """A task running ``coro``, started at once up to its first wait."""
        return asyncio.Task(coro, loop=asyncio.get_running_loop(), eager_start=True)

else:  # pragma: no cover - Python 3.10 and 3.11

    def start(coro: typing.Coroutine[typing.Any, typing.Any, T]) -> asyncio.Task[T]:
        """A task running ``coro`` (from the next loop turn)."""
        return asyncio.get_running_loop().create_task(coro)


def _wake(waiter: asyncio.Future[None], *_: object) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def until(future: asyncio.Future[typing.Any], deadline: float | None) -> None:
    """Wait until ``future`` is done or the loop reaches ``deadline``, whichever is first,
    without cancelling or awaiting ``future`` (what :func:`asyncio.wait` does, lighter)."""
    if future.done():
        return
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    wake = functools.partial(_wake, waiter)
    future.add_done_callback(wake)
    handle = None if deadline is None else loop.call_at(deadline, wake)
    try:
        await waiter
    finally:
        future.remove_done_callback(wake)
        if handle is not None:
            handle.cancel()
