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
        self._waiters: collections.deque[asyncio.Future[bool]] = collections.deque()

    def try_take(self) -> bool:
        """Take a slot if one is free and nobody waits for one (no waiting, no await)."""
        if self.busy < self.limit and not self.waiting:
            self.busy += 1
            return True
        return False

    def enqueue(self) -> asyncio.Future[bool] | None:
        """Join the line for a slot: a future that becomes True when the slot is yours
        (give it back with :meth:`release`), or None if the line is full.

        A caller that stops waiting calls :meth:`leave` with the future; whoever
        stops its wait (the guard's sweep) may resolve it with False.
        """
        if self.waiting >= self.max_waiting:
            return None
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        waiters = self._waiters
        if len(waiters) > 2 * self.max_waiting + 16:
            # Many waiters left without a release in between: drop them.
            self._waiters = waiters = collections.deque(w for w in waiters if not w.done())
        waiters.append(waiter)
        self.waiting += 1
        return waiter

    def leave(self, waiter: asyncio.Future[bool]) -> None:
        """Stop waiting (timed out or cancelled); a slot handed over meanwhile goes back."""
        if waiter.done() and not waiter.cancelled() and waiter.result():
            self.release()
        else:
            waiter.cancel()
            self.waiting -= 1

    async def take(self, deadline: float | None = None) -> bool | None:
        """Wait in line for a slot until ``deadline`` (loop time; None: no deadline).

        True: the slot is yours. False: the line is full, so the caller did not
        wait. None: the deadline came first.
        """
        if self.try_take():
            return True
        waiter = self.enqueue()
        if waiter is None:
            return False
        loop = asyncio.get_running_loop()
        try:
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            await asyncio.wait((waiter,), timeout=timeout)
        except asyncio.CancelledError:
            self.leave(waiter)
            raise
        if waiter.done():
            return True
        self.leave(waiter)
        return None

    def release(self) -> None:
        """Give a slot back: to the first caller still waiting, else to the pool."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():  # expired or cancelled waiters are skipped
                waiter.set_result(True)
                self.waiting -= 1
                return
        self.busy -= 1
