"""The in-memory backend's lock: named, owned by its handle, fair, not re-entrant."""

from __future__ import annotations

import asyncio
import collections

__all__ = ["AsyncInMemoryLock", "LockState"]


class LockState:
    """One named lock: its owner handle and a FIFO of waiters (ownership is handed over)."""

    __slots__ = ("__weakref__", "owner", "waiters")

    def __init__(self) -> None:
        self.owner: AsyncInMemoryLock | None = None
        self.waiters: collections.deque[tuple[asyncio.Future[bool], AsyncInMemoryLock]] = (
            collections.deque()
        )

    def hand_over(self) -> None:
        """Give the lock to the first waiter still waiting, or leave it free."""
        self.owner = None
        waiters = self.waiters
        while waiters:
            future, handle = waiters.popleft()
            if not future.done():
                self.owner = handle
                future.set_result(True)
                return


class AsyncInMemoryLock:
    """A named lock of one process, owned by the handle that acquired it.

    Fair (first come, first served) and not re-entrant. Only the owning handle can
    release it: ``release()`` on any other handle does nothing. Handles of the same
    name share the lock.
    """

    __slots__ = ("_state", "name")

    def __init__(self, name: str, state: LockState) -> None:
        self.name = name
        self._state = state

    def locked(self) -> bool:
        """True while some handle holds the lock."""
        return self._state.owner is not None

    @property
    def owned(self) -> bool:
        """True while this handle holds the lock."""
        return self._state.owner is self

    async def acquire(self, blocking: bool = True, blocking_timeout: float | None = None) -> bool:
        """Take the lock; False if not acquired (non-blocking and held, or timed out).

        ``blocking_timeout`` is in seconds; ``None`` waits for as long as it takes.
        """
        state = self._state
        if state.owner is self:
            raise RuntimeError(
                f"Lock {self.name!r} is already held by this handle; it is not re-entrant. "
                f"Release it first, or use one handle per holder."
            )
        if state.owner is None and not state.waiters:
            state.owner = self
            return True
        if not blocking:
            return False
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        state.waiters.append((future, self))
        timer = None
        if blocking_timeout is not None:
            timer = loop.call_later(max(0.0, blocking_timeout), _time_out, future)
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.result():
                # Ownership arrived as the task was cancelled: pass it on.
                state.hand_over()
            raise
        finally:
            if timer is not None:
                timer.cancel()

    async def release(self) -> None:
        """Release the lock if this handle holds it; otherwise do nothing."""
        state = self._state
        if state.owner is self:
            state.hand_over()


def _time_out(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_result(False)
