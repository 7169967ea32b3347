"""Kit tests of locks: mutual exclusion, timeouts, non-blocking use and ownership."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from traffik.exceptions import LockTimeoutError
from traffik.testing._support import AnyBackend, KitBase, eventually

__all__ = ["LockTests"]

#: Tasks competing for one lock in the exclusion tests.
LOCK_TASKS = 16


class LockTests(KitBase):
    """``backend.lock(...)`` and ``backend.get_lock(...)`` as the 1.0.0b2 README uses them."""

    @staticmethod
    async def _contend(backends: list[AnyBackend], name: str) -> int:
        """Run LOCK_TASKS critical sections over ``backends``; return the most holders seen at once."""
        holders = 0
        most = 0

        async def worker(backend: AnyBackend) -> None:
            nonlocal holders, most
            async with await backend.lock(name, blocking=True, blocking_timeout=30):
                holders += 1
                most = max(most, holders)
                await asyncio.sleep(0.005)
                holders -= 1

        await asyncio.gather(*(worker(backends[i % len(backends)]) for i in range(LOCK_TASKS)))
        return most

    @pytest.mark.asyncio
    async def test_lock_excludes_concurrent_tasks(self) -> None:
        async with self.open_backend() as backend:
            most = await self._contend([backend], self.fresh_key("lock:"))
            assert most == 1, f"{most} tasks held the same lock at once"

    @pytest.mark.asyncio
    async def test_lock_excludes_across_instances(self) -> None:
        async with self.open_backend() as first:
            self.require(first, "shared_state", "distributed_locks")
            async with self.open_backend(second=True) as second:
                most = await self._contend([first, second], self.fresh_key("lock:"))
                assert most == 1, f"{most} holders in two backend instances held one lock at once"

    @pytest.mark.asyncio
    async def test_locks_with_different_names_do_not_exclude(self) -> None:
        async with self.open_backend() as backend:
            first = await backend.lock(self.fresh_key("lock:a"))
            second = await backend.lock(self.fresh_key("lock:b"), blocking=False)
            async with first, second:
                pass

    @pytest.mark.asyncio
    async def test_lock_is_released_on_exit(self) -> None:
        async with self.open_backend() as backend:
            name = self.fresh_key("lock:")
            async with await backend.lock(name):
                pass
            with pytest.raises(RuntimeError):
                async with await backend.lock(name):
                    raise RuntimeError("boom")
            async with await backend.lock(name, blocking=False):
                pass

    @pytest.mark.asyncio
    async def test_lock_non_blocking_raises_when_held(self) -> None:
        async with self.open_backend() as backend:
            name = self.fresh_key("lock:")
            async with await backend.lock(name):
                start = time.monotonic()
                with pytest.raises(LockTimeoutError):
                    async with await backend.lock(name, blocking=False):
                        pytest.fail("a non-blocking lock was acquired while held elsewhere")
                assert time.monotonic() - start < 2, "a non-blocking acquire waited"

    @pytest.mark.asyncio
    async def test_lock_blocking_timeout_raises_lock_timeout_error(self) -> None:
        async with self.open_backend() as backend:
            name = self.fresh_key("lock:")
            async with await backend.lock(name):
                start = time.monotonic()
                with pytest.raises(LockTimeoutError):
                    async with await backend.lock(name, blocking_timeout=0.3):
                        pytest.fail("a held lock was acquired a second time")
                waited = time.monotonic() - start
                assert 0.2 <= waited < 5, f"blocking_timeout=0.3 gave up after {waited:.2f} s"

    @pytest.mark.asyncio
    async def test_lock_waiter_gets_the_lock_when_released(self) -> None:
        async with self.open_backend() as backend:
            name = self.fresh_key("lock:")
            order: list[str] = []
            held = asyncio.Event()

            async def holder() -> None:
                async with await backend.lock(name):
                    held.set()
                    await asyncio.sleep(0.1)
                    order.append("holder")

            async def waiter() -> None:
                await held.wait()
                async with await backend.lock(name, blocking_timeout=10):
                    order.append("waiter")

            await asyncio.gather(holder(), waiter())
            assert order == ["holder", "waiter"]

    @pytest.mark.asyncio
    async def test_lock_handle_cannot_release_a_lock_it_does_not_hold(self) -> None:
        async with self.open_backend() as backend:
            name = await backend.get_key(self.fresh_key("lock:"))
            owner = await backend.get_lock(name)
            stranger = await backend.get_lock(name)
            assert await owner.acquire(blocking=False), "a free lock could not be acquired"
            try:
                # Raising is as good as ignoring the call; freeing the lock is not.
                with contextlib.suppress(Exception):
                    await stranger.release()
                probe = await backend.get_lock(name)
                acquired = await probe.acquire(blocking=False)
                if acquired:
                    await probe.release()
                assert not acquired, "a handle that never acquired the lock released it"
            finally:
                await owner.release()
            probe = await backend.get_lock(name)
            assert await probe.acquire(blocking=False), (
                "the owner's release() did not free the lock"
            )
            await probe.release()

    @pytest.mark.asyncio
    async def test_lock_release_timeout_frees_a_stuck_holder(self) -> None:
        async with self.open_backend() as backend:
            name = self.fresh_key("lock:")
            async with await backend.lock(name, release_timeout=0.3):
                full = await backend.get_key(name)

                async def free() -> bool:
                    probe = await backend.get_lock(full)
                    if await probe.acquire(blocking=False):
                        await probe.release()
                        return True
                    return False

                assert await eventually(free, 5), "release_timeout=0.3 never released the lock"
