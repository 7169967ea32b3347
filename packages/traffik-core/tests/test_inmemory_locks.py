"""In-memory locks (and the seed's AsyncRLock / AsyncLockGroup helpers in traffik.utils)."""

from __future__ import annotations

import asyncio

import pytest

from traffik.backends.inmemory import InMemoryBackend
from traffik.exceptions import LockTimeoutError
from traffik.utils import AsyncLockGroup, AsyncRLock

pytestmark = pytest.mark.asyncio


async def test_mutual_exclusion() -> None:
    backend = InMemoryBackend()
    async with backend():
        inside = 0
        peak = 0
        order: list[int] = []

        async def worker(i: int) -> None:
            nonlocal inside, peak
            async with await backend.lock("lock:shared"):
                inside += 1
                peak = max(peak, inside)
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                order.append(i)
                inside -= 1

        await asyncio.gather(*(worker(i) for i in range(20)))
        assert peak == 1
        assert order == list(range(20))  # fair: first come, first served


async def test_different_names_do_not_exclude_each_other() -> None:
    backend = InMemoryBackend()
    async with backend():
        a = await backend.get_lock("a")
        b = await backend.get_lock("b")
        assert await a.acquire()
        assert await b.acquire(blocking=False)
        await a.release()
        await b.release()


async def test_non_blocking_acquire_fails_at_once_when_held() -> None:
    backend = InMemoryBackend()
    async with backend():
        # get_lock takes the namespaced name; lock() namespaces it.
        holder = await backend.get_lock("inmemory:n")
        other = await backend.get_lock("inmemory:n")
        assert await holder.acquire()
        assert await other.acquire(blocking=False) is False
        with pytest.raises(LockTimeoutError, match="held elsewhere"):
            async with await backend.lock("n", blocking=False):
                pass
        await holder.release()
        assert await other.acquire(blocking=False) is True
        await other.release()


async def test_non_blocking_acquire_does_not_jump_the_queue() -> None:
    backend = InMemoryBackend()
    async with backend():
        first = await backend.get_lock("q")
        waiter = await backend.get_lock("q")
        late = await backend.get_lock("q")
        assert await first.acquire()
        task = asyncio.ensure_future(waiter.acquire())
        await asyncio.sleep(0)
        await first.release()  # handed to the waiter, not up for grabs
        assert await late.acquire(blocking=False) is False
        assert await task is True
        assert waiter.owned
        await waiter.release()


async def test_blocking_timeout() -> None:
    backend = InMemoryBackend()
    async with backend():
        holder = await backend.get_lock("inmemory:t")
        assert await holder.acquire()
        other = await backend.get_lock("inmemory:t")
        assert await other.acquire(blocking_timeout=0.01) is False
        assert await other.acquire(blocking_timeout=0) is False
        with pytest.raises(LockTimeoutError, match=r"not free within 0\.01 s"):
            async with await backend.lock("t", blocking_timeout=0.01):
                pass
        assert holder.owned  # timeouts did not disturb the holder
        await holder.release()
        assert not holder.locked()
        assert await other.acquire(blocking_timeout=0.01) is True
        await other.release()


async def test_ownership_a_second_handle_cannot_release() -> None:
    backend = InMemoryBackend()
    async with backend():
        holder = await backend.get_lock("o")
        intruder = await backend.get_lock("o")
        assert await holder.acquire()
        await intruder.release()
        assert holder.locked()
        assert holder.owned
        assert not intruder.owned
        assert await intruder.acquire(blocking=False) is False
        await holder.release()
        assert not holder.locked()


async def test_handle_is_not_reentrant() -> None:
    backend = InMemoryBackend()
    async with backend():
        lock = await backend.get_lock("r")
        assert await lock.acquire()
        with pytest.raises(RuntimeError, match="not re-entrant"):
            await lock.acquire()
        await lock.release()


async def test_cancelled_waiter_passes_the_lock_on() -> None:
    backend = InMemoryBackend()
    async with backend():
        holder = await backend.get_lock("c")
        cancelled = await backend.get_lock("c")
        third = await backend.get_lock("c")
        assert await holder.acquire()
        t1 = asyncio.ensure_future(cancelled.acquire())
        t2 = asyncio.ensure_future(third.acquire())
        await asyncio.sleep(0)
        await holder.release()  # hands over to t1 ...
        t1.cancel()  # ... which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await t1
        assert await t2 is True
        assert third.owned
        assert not cancelled.owned
        await third.release()
        assert not third.locked()


async def test_release_timeout_frees_a_stuck_holder() -> None:
    backend = InMemoryBackend()
    async with backend():
        freed = asyncio.Event()

        async def stuck() -> None:
            async with await backend.lock("s", release_timeout=0.01):
                await freed.wait()

        task = asyncio.ensure_future(stuck())
        await asyncio.sleep(0)
        # Waits until the stuck holder's lock is force-released.
        async with await backend.lock("s", blocking_timeout=5):
            freed.set()
        await task
        assert not (await backend.get_lock("inmemory:s")).locked()


async def test_lock_names_are_namespaced() -> None:
    backend = InMemoryBackend(namespace="ns")
    async with backend():
        ctx = await backend.lock("lock:x")
        assert ctx.name == "ns:lock:x"


# -- traffik.utils.AsyncRLock / AsyncLockGroup ------------------------------------


async def test_rlock_is_reentrant_for_its_task_and_exclusive_for_others() -> None:
    lock = AsyncRLock()
    async with lock:
        async with lock:
            assert lock.is_owner()

            async def other() -> bool:
                return await lock.acquire(blocking=False)

            assert await asyncio.ensure_future(other()) is False
        assert lock.locked()
    assert not lock.locked()
    with pytest.raises(RuntimeError, match="does not hold"):
        lock.release()


async def test_rlock_timeout_and_fairness() -> None:
    lock = AsyncRLock()
    await lock.acquire()
    order: list[int] = []

    async def waiter(i: int) -> None:
        async with lock:
            order.append(i)

    tasks = [asyncio.ensure_future(waiter(i)) for i in range(5)]
    await asyncio.sleep(0)

    async def impatient() -> bool:
        return await lock.acquire(blocking_timeout=0.01)

    assert await asyncio.ensure_future(impatient()) is False
    lock.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]


async def test_lock_group_takes_all_or_none() -> None:
    backend = InMemoryBackend()
    async with backend():
        a, b = await backend.get_lock("a"), await backend.get_lock("b")
        group = AsyncLockGroup([a, b])
        async with group:
            assert a.locked()
            assert b.locked()
            assert await group.acquire()  # re-entrant for the owner
            await group.release()
            assert a.locked()
        assert not a.locked()
        assert not b.locked()

        blocker = await backend.get_lock("b")
        assert await blocker.acquire()
        group2 = AsyncLockGroup([await backend.get_lock("a"), await backend.get_lock("b")])
        assert await group2.acquire(blocking_timeout=0.01) is False
        assert not a.locked()  # the lock it did take was given back
        await blocker.release()
        assert await group2.acquire(blocking=False) is True
        await group2.release()


async def test_lock_group_accepts_sync_release_locks() -> None:
    r1, r2 = AsyncRLock(), AsyncRLock()
    group = AsyncLockGroup([r1, r2])
    async with group:
        assert r1.locked()
        assert r2.locked()
    assert not r1.locked()
    assert not r2.locked()
