"""The connection pool is fair: a released connection goes to the oldest waiter."""

from __future__ import annotations

import asyncio

import pytest

from traffik.memcached._pool import Pool
from traffik.testing.servers import MemcachedServer

pytestmark = [pytest.mark.memcached, pytest.mark.asyncio]


async def test_waiters_are_served_first_come_first_served(
    memcached_server: MemcachedServer,
) -> None:
    pool = Pool(memcached_server.host, memcached_server.port, 1)
    order: list[str] = []
    first = await pool.acquire()

    async def user(name: str) -> None:
        conn = await pool.acquire()
        order.append(name)
        await asyncio.sleep(0)
        pool.release(conn)

    waiters = [asyncio.ensure_future(user(n)) for n in ("b", "c")]
    await asyncio.sleep(0)
    pool.release(first)
    # The releasing task asks again at once: it must queue behind b and c.
    again = await pool.acquire()
    order.append("a")
    pool.release(again)
    await asyncio.gather(*waiters)
    assert order == ["b", "c", "a"]
    pool.close()


async def test_a_discarded_connection_frees_its_slot_for_a_waiter(
    memcached_server: MemcachedServer,
) -> None:
    pool = Pool(memcached_server.host, memcached_server.port, 1)
    conn = await pool.acquire()
    waiter = asyncio.ensure_future(pool.acquire())
    await asyncio.sleep(0)
    assert not waiter.done()
    pool.discard(conn)
    fresh = await asyncio.wait_for(waiter, 5)
    assert fresh is not conn
    pool.release(fresh)
    pool.close()


async def test_a_cancelled_waiter_passes_its_connection_on(
    memcached_server: MemcachedServer,
) -> None:
    pool = Pool(memcached_server.host, memcached_server.port, 1)
    conn = await pool.acquire()
    doomed = asyncio.ensure_future(pool.acquire())
    patient = asyncio.ensure_future(pool.acquire())
    await asyncio.sleep(0)
    pool.release(conn)  # handed to `doomed`...
    doomed.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert await asyncio.wait_for(patient, 5) is conn
    pool.release(conn)
    pool.close()
