"""Bounded in-flight work: at most ``limit`` calls at once, a bounded FIFO queue behind them.

The failure guard takes a slot before it calls a backend and gives it back when
the call has really finished (not when the caller stopped waiting for it), so
the bound holds for the work the server sees. Time spent waiting here is this
process's queue, never the server's slowness.
"""

from __future__ import annotations

import asyncio
import collections

__all__ = ["InFlight"]


def _expire(waiter: asyncio.Future[bool | None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class InFlight:
    """At most ``limit`` slots taken at once; up to ``max_waiting`` callers wait in order."""

    __slots__ = ("_waiters", "busy", "limit", "max_waiting", "waiting")

    def __init__(self, limit: int, max_waiting: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}.")
        if max_waiting < 0:
            raise ValueError(f"max_waiting must be 0 or more, got {max_waiting}.")
        self.limit = limit
        self.max_waiting = max_waiting
        self.busy = 0
        self.waiting = 0
        # Waiters that expired or were cancelled stay here until release() skips them.
        self._waiters: collections.deque[asyncio.Future[bool | None]] = collections.deque()

    def try_take(self) -> bool:
        """Take a slot if one is free and nobody waits for one (no waiting, no await)."""
        if self.busy < self.limit and not self.waiting:
            self.busy += 1
            return True
        return False

    async def take(self, deadline: float | None) -> bool | None:
        """Wait in line for a slot until ``deadline`` (loop time; None: no deadline).

        True: the slot is yours (give it back with :meth:`release`). False: the queue
        is full, so the caller did not wait. None: the deadline came first.
        """
        if self.try_take():
            return True
        if self.waiting >= self.max_waiting:
            return False
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool | None] = loop.create_future()
        waiters = self._waiters
        if len(waiters) > 2 * self.max_waiting + 16:
            # Many waiters expired without a release in between: drop them.
            self._waiters = waiters = collections.deque(w for w in waiters if not w.done())
        waiters.append(waiter)
        self.waiting += 1
        handle = None if deadline is None else loop.call_at(deadline, _expire, waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self.release()  # handed a slot just as the caller was cancelled
            raise
        finally:
            self.waiting -= 1
            if handle is not None:
                handle.cancel()

    def release(self) -> None:
        """Give a slot back: to the first caller still waiting, else to the pool."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)
                return
        self.busy -= 1
