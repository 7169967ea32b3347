"""Redis locks: real mutual exclusion, owned by their holder, never shared between tasks."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from traffik.backends.base import ThrottleBackend
from traffik.exceptions import LockTimeoutError
from traffik.rates import Rate
from traffik.redis import AsyncRedisLock, RedisBackend
from traffik.testing.servers import RedisServer
from traffik.types import Stringable, WaitPeriod

pytestmark = [pytest.mark.redis, pytest.mark.asyncio]


async def lock_counter_strategy(
    key: Stringable, rate: Rate, backend: ThrottleBackend, cost: int = 1
) -> WaitPeriod:
    """A custom strategy in the README's style: read, yield to the loop, write, under a lock."""
    counter_key = await backend.get_key(f"{key}:counter")
    async with await backend.lock(f"lock:{counter_key}", blocking=True, blocking_timeout=5):
        count = int(await backend.get(counter_key) or 0)
        await asyncio.sleep(0)  # let every other task run into the critical section
        if count + cost > rate.limit:
            return 1000.0
        await backend.set(counter_key, str(count + cost), expire=60)
        return 0.0


async def test_tasks_spawned_by_a_lock_holder_get_no_shared_reentrancy(
    redis_server: RedisServer,
) -> None:
    # The 1.0.0b2 lock kept re-entrancy in a context variable inherited by child
    # tasks: 40 of 40 staggered requests were admitted at limit 10.
    rate = Rate(limit=10, minutes=1)
    async with RedisBackend(redis_server.url, namespace="reent", persistent=False)() as backend:
        assert await lock_counter_strategy("warm", rate, backend) == 0.0  # an earlier decision
        async with await backend.lock("lock:parent"):  # and a lock held while spawning

            async def request(i: int) -> WaitPeriod:
                await asyncio.sleep(i * 0.002)
                return await lock_counter_strategy("client", rate, backend)

            waits = await asyncio.gather(*(asyncio.create_task(request(i)) for i in range(40)))
    assert sum(1 for w in waits if w == 0.0) == 10


async def test_a_handle_never_releases_another_holders_lock(redis_server: RedisServer) -> None:
    async with RedisBackend(redis_server.url, namespace="own", persistent=False)() as backend:
        first = await backend.get_lock("own:lock:x")
        second = await backend.get_lock("own:lock:x")
        assert await first.acquire(blocking=False)
        assert not await second.acquire(blocking=False)
        await second.release()  # not the owner: nothing happens
        assert isinstance(first, AsyncRedisLock)
        assert await first.held_anywhere()
        assert not await second.acquire(blocking=True, blocking_timeout=0.05)
        await first.release()
        assert await second.acquire(blocking=False)
        await second.release()


async def test_locks_are_not_reentrant(redis_server: RedisServer) -> None:
    async with RedisBackend(redis_server.url, namespace="nre", persistent=False)() as backend:
        async with await backend.lock("lock:x"):
            with pytest.raises(LockTimeoutError):
                async with await backend.lock("lock:x", blocking_timeout=0.05):
                    pass
        lock = await backend.get_lock("nre:lock:y")
        assert await lock.acquire()
        with pytest.raises(RuntimeError, match="not re-entrant"):
            await lock.acquire()
        await lock.release()


async def test_locks_exclude_across_backend_instances(redis_server: RedisServer) -> None:
    one = RedisBackend(redis_server.url, namespace="inst", persistent=False)
    two = RedisBackend(redis_server.url, namespace="inst", persistent=False)
    async with one(), two():
        async with await one.lock("lock:x"):
            with pytest.raises(LockTimeoutError):
                async with await two.lock("lock:x", blocking=False):
                    pass
        async with await two.lock("lock:x", blocking=False):
            pass


async def test_an_expired_lock_is_not_freed_by_its_late_holder(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    backend = RedisBackend(redis_server.url, namespace="exp", lock_timeout=0.1, persistent=False)
    async with backend():
        slow = await backend.get_lock("exp:lock:x")
        assert await slow.acquire()
        other = await backend.get_lock("exp:lock:x")
        deadline = time.monotonic() + 5
        while not await other.acquire(blocking=False):  # bounded polling for the TTL
            assert time.monotonic() < deadline, "the lock never expired"
            await asyncio.sleep(0.02)
        with caplog.at_level(logging.WARNING, logger="traffik.redis"):
            await slow.release()
        assert "expired before it was released" in caplog.text
        assert await other.held_anywhere(), "the late holder freed someone else's lock"
        await other.release()
        assert not await other.held_anywhere()


async def _eventually_free(lock: AsyncRedisLock, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while await lock.held_anywhere():  # bounded polling
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_a_cancelled_release_still_frees_the_lock(redis_server: RedisServer) -> None:
    # A request cancelled while its lock context exits (a client disconnect, a
    # timeout) must not leave the lock held until lock_timeout.
    backend = RedisBackend(redis_server.url, namespace="cxl", lock_timeout=60, persistent=False)
    async with backend():
        lock = await backend.get_lock("cxl:lock:release")
        assert await lock.acquire(blocking=False)
        # Writes (the release script) wait on the server while the task is cancelled.
        await redis_server.cancel_while_paused(lock.release())
        assert await _eventually_free(lock), "a cancelled release left the lock held"
        assert not lock.locked()


async def test_a_cancelled_acquire_leaves_no_lock_behind(redis_server: RedisServer) -> None:
    backend = RedisBackend(redis_server.url, namespace="cxl", lock_timeout=60, persistent=False)
    async with backend():
        lock = await backend.get_lock("cxl:lock:acquire")
        await redis_server.cancel_while_paused(lock.acquire(blocking=False))
        # Writes run in arrival order: this one lands after any SET still on its way.
        await backend.set("cxl:after-pause", "1", expire=10)
        assert await _eventually_free(lock), "a cancelled acquire left a lock nobody owns"
        assert not lock.locked()
        probe = await backend.get_lock("cxl:lock:acquire")
        assert await probe.acquire(blocking=False)
        await probe.release()
