"""Memcached locks: ownership, expiry of a crashed holder, bounded backoff."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from traffik.exceptions import LockTimeoutError
from traffik.memcached import AsyncMemcachedLock, MemcachedBackend
from traffik.memcached._protocol import LINE, VALUES
from traffik.testing.servers import MemcachedServer

pytestmark = pytest.mark.memcached


@pytest_asyncio.fixture
async def backend(memcached_server: MemcachedServer) -> AsyncIterator[MemcachedBackend]:
    b = MemcachedBackend(
        memcached_server.host, memcached_server.port, namespace=f"mcl{uuid.uuid4().hex[:12]}"
    )
    await b.initialize()
    try:
        yield b
    finally:
        await b.close()


@pytest.mark.asyncio
async def test_release_never_frees_another_owners_lock(backend: MemcachedBackend) -> None:
    name = f"{backend.namespace}:lock:job"
    first = await backend.get_lock(name)
    assert isinstance(first, AsyncMemcachedLock)
    assert await first.acquire(blocking=False)
    # The lock item vanishes as if its TTL ran out while the first holder was stuck...
    assert backend.connection is not None
    (line,) = await backend.connection.servers[0].client.execute(
        b"delete %s\r\n" % first._key, (LINE,)
    )
    assert line == b"DELETED"
    # ...and a second owner takes it.
    second = await backend.get_lock(name)
    assert await second.acquire(blocking=False)
    # The first holder's late release must not free the second owner's lock.
    await first.release()
    third = await backend.get_lock(name)
    assert not await third.acquire(blocking=False)
    await second.release()
    assert await third.acquire(blocking=False)
    await third.release()
    (values,) = await backend.connection.servers[0].client.execute(
        b"get %s\r\n" % third._key, (VALUES,)
    )
    assert values == {}


@pytest.mark.asyncio
async def test_a_crashed_holder_blocks_others_for_at_most_its_ttl(
    memcached_server: MemcachedServer,
) -> None:
    ns = f"mcl{uuid.uuid4().hex[:12]}"
    crashed = MemcachedBackend(
        memcached_server.host, memcached_server.port, namespace=ns, lock_ttl=0.5
    )
    other = MemcachedBackend(memcached_server.host, memcached_server.port, namespace=ns)
    await crashed.initialize()
    await other.initialize()
    try:
        held = await crashed.get_lock(f"{ns}:lock:x")
        assert await held.acquire()
        await crashed.close()  # the holder goes away without releasing
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with await other.lock("lock:x", blocking_timeout=5):
            waited = loop.time() - started
        # ttl 0.5 s rounds up to memcached's whole seconds, plus one: at most ~2 s.
        assert waited < 3.0
    finally:
        await other.close()


@pytest.mark.asyncio
async def test_blocking_acquire_backs_off_instead_of_spinning(
    backend: MemcachedBackend, memcached_server: MemcachedServer
) -> None:
    probe = MemcachedBackend(memcached_server.host, memcached_server.port, namespace="probe")
    await probe.initialize()
    try:
        holder = await backend.get_lock(f"{backend.namespace}:lock:b")
        assert await holder.acquire()
        before = await probe.connection.stats()  # type: ignore[union-attr]
        with pytest.raises(LockTimeoutError):
            async with await backend.lock("lock:b", blocking_timeout=0.5):
                pass
        after = await probe.connection.stats()  # type: ignore[union-attr]
        attempts = after[b"cmd_set"] - before[b"cmd_set"]
        # Exponential backoff from 2 ms to 100 ms: about a dozen adds in 0.5 s, not thousands.
        assert 2 <= attempts <= 30, attempts
        await holder.release()
    finally:
        await probe.close()


@pytest.mark.asyncio
async def test_lock_is_not_reentrant_and_reports_ownership(backend: MemcachedBackend) -> None:
    lock = await backend.get_lock(f"{backend.namespace}:lock:r")
    assert not lock.locked()
    assert await lock.acquire()
    assert lock.locked()
    with pytest.raises(RuntimeError, match="not re-entrant"):
        await lock.acquire()
    await lock.release()
    assert not lock.locked()
    await lock.release()  # releasing a lock not held is a no-op


async def _taken_within(backend: MemcachedBackend, name: str, seconds: float) -> bool:
    """Poll (bounded) until another handle can take the lock ``name``."""
    other = await backend.get_lock(name)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        if await other.acquire(blocking=False):
            await other.release()
            return True
        await asyncio.sleep(0.01)
    return False


@pytest.mark.asyncio
async def test_an_acquire_cancelled_after_its_add_was_sent_frees_what_it_won(
    backend: MemcachedBackend,
) -> None:
    # lock_ttl is 10 s: a lock won by a cancelled acquire would block everyone that long.
    for round_ in range(5):
        name = f"{backend.namespace}:lock:cancel{round_}"
        lock = await backend.get_lock(name)
        task = asyncio.ensure_future(lock.acquire())
        await asyncio.sleep(0)  # the add is written; its STORED not yet read
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not lock.locked()
        assert await _taken_within(backend, name, 2.0), f"round {round_}: the lock leaked"


@pytest.mark.asyncio
async def test_a_cancelled_release_still_frees_the_lock(backend: MemcachedBackend) -> None:
    for round_ in range(5):
        name = f"{backend.namespace}:lock:release{round_}"
        lock = await backend.get_lock(name)
        assert await lock.acquire(blocking=False)
        task = asyncio.ensure_future(lock.release())
        await asyncio.sleep(0)  # the gets is written; the cas not yet
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not lock.locked()
        assert await _taken_within(backend, name, 2.0), f"round {round_}: the lock leaked"
