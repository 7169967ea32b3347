"""The async context manager behind ``async with await backend.lock(name): ...``."""

from __future__ import annotations

import asyncio
import contextlib
import typing

from traffik.exceptions import LockTimeoutError

if typing.TYPE_CHECKING:
    from types import TracebackType

    from traffik.types import AsyncLock

__all__ = ["AsyncLockContext"]


class AsyncLockContext:
    """Acquire ``lock`` on entry (raising :class:`LockTimeoutError` if not acquired), release on exit.

    With ``release_timeout`` (seconds) the lock is released after that long even if
    the block is still running, so a stuck holder cannot keep it forever. The
    release goes through the same lock object, so it can only free this holder's lock.
    """

    __slots__ = (
        "_held",
        "_timer",
        "blocking",
        "blocking_timeout",
        "lock",
        "name",
        "release_timeout",
    )

    def __init__(
        self,
        lock: AsyncLock,
        name: str = "",
        *,
        blocking: bool = True,
        blocking_timeout: float | None = None,
        release_timeout: float | None = None,
    ) -> None:
        if blocking_timeout is not None and blocking_timeout < 0:
            raise ValueError(f"blocking_timeout must be 0 or more seconds, got {blocking_timeout}.")
        if release_timeout is not None and release_timeout <= 0:
            raise ValueError(f"release_timeout must be more than 0 seconds, got {release_timeout}.")
        self.lock = lock
        self.name = name
        self.blocking = blocking
        self.blocking_timeout = blocking_timeout
        self.release_timeout = release_timeout
        self._held = False
        self._timer: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> AsyncLockContext:
        acquired = await self.lock.acquire(
            blocking=self.blocking, blocking_timeout=self.blocking_timeout
        )
        if not acquired:
            how = (
                "is held elsewhere"
                if not self.blocking
                else f"was not free within {self.blocking_timeout} s"
            )
            raise LockTimeoutError(
                f"Lock {self.name!r} {how}; raise blocking_timeout or reduce contention on this key."
            )
        self._held = True
        if self.release_timeout is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.release_timeout, self._expire)
        return self

    def _expire(self) -> None:
        if self._held:
            self._held = False
            task = asyncio.ensure_future(self.lock.release())
            task.add_done_callback(_ignore_result)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._held:
            self._held = False
            # Shielded: a task cancelled while leaving the block must still release.
            await asyncio.shield(self.lock.release())


def _ignore_result(task: asyncio.Future[None]) -> None:
    with contextlib.suppress(BaseException):
        task.result()
