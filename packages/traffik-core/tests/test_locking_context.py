"""AsyncLockContext: the context behind ``async with await backend.lock(name)``."""

from __future__ import annotations

import asyncio

import pytest

from traffik.backends._locking import AsyncLockContext


class SlowReleaseLock:
    """A lock whose release waits for a signal, to cancel its holder mid-release."""

    def __init__(self) -> None:
        self.held = False
        self.releasing = asyncio.Event()
        self.finish = asyncio.Event()

    def locked(self) -> bool:
        return self.held

    async def acquire(self, blocking: bool = True, blocking_timeout: float | None = None) -> bool:
        self.held = True
        return True

    async def release(self) -> None:
        self.releasing.set()
        await self.finish.wait()
        self.held = False


@pytest.mark.asyncio
async def test_a_holder_cancelled_while_leaving_still_releases() -> None:
    lock = SlowReleaseLock()

    async def holder() -> None:
        async with AsyncLockContext(lock, "slow"):
            pass

    task = asyncio.create_task(holder())
    await lock.releasing.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    lock.finish.set()
    for _ in range(100):  # the shielded release runs on in the background
        if not lock.held:
            break
        await asyncio.sleep(0)
    assert not lock.held


def test_bad_timeouts_are_rejected() -> None:
    with pytest.raises(ValueError, match="blocking_timeout"):
        AsyncLockContext(SlowReleaseLock(), blocking_timeout=-1)
    with pytest.raises(ValueError, match="release_timeout"):
        AsyncLockContext(SlowReleaseLock(), release_timeout=0)
