"""Connection failures, timeouts and cancellation: bounded, and never a desynchronised reply."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Callable

import pytest

from traffik.exceptions import BackendConnectionError, BackendError
from traffik.memcached import MemcachedBackend
from traffik.rates import Rate
from traffik.strategies import GCRAStrategy
from traffik.testing.servers import MemcachedServer

pytestmark = pytest.mark.memcached


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.asyncio
async def test_initialize_against_a_closed_port_names_host_and_port() -> None:
    port = _free_port()
    backend = MemcachedBackend("127.0.0.1", port, connect_timeout=1.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(BackendConnectionError, match=f"127.0.0.1:{port}"):
        await backend.initialize()
    assert loop.time() - started < 1.5
    assert backend.connection is None


@pytest.mark.asyncio
async def test_a_cancelled_request_never_leaks_its_reply_to_the_next(
    memcached_server: MemcachedServer,
) -> None:
    ns = f"mcp{uuid.uuid4().hex[:12]}"
    backend = MemcachedBackend(memcached_server.host, memcached_server.port, ns, pool_size=1)
    await backend.initialize()
    try:
        key = f"{ns}:n"
        await backend.set(key, "100")
        for round_ in range(1, 21):
            task = asyncio.ensure_future(backend.increment(key, 1))
            await asyncio.sleep(0)  # the request is written; its reply not yet read
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The cancelled +1 may still run on the server (it was sent), at any time;
            # but the reply to this +1000 must be this command's own: a leaked reply
            # (the cancelled +1's) would be a thousand short.
            value = await backend.increment(key, 1000)
            assert (value - 100) // 1000 == round_, f"round {round_}: read a stale reply {value}"
    finally:
        await backend.reset()
        await backend.close()


@pytest.mark.asyncio
async def test_a_killed_server_fails_fast_and_a_restarted_one_is_used_again(
    make_memcached_server: Callable[..., MemcachedServer],
) -> None:
    server = make_memcached_server()
    backend = MemcachedBackend(server.host, server.port, namespace="kill", timeout=0.5)
    await backend.initialize()
    try:
        strategy, rate = GCRAStrategy(), Rate.parse("100/s")
        assert (await backend.decide("u", strategy, rate)).allowed
        server.kill()
        loop = asyncio.get_running_loop()
        for _ in range(3):
            started = loop.time()
            with pytest.raises(BackendError):
                await backend.decide("u", strategy, rate)
            assert loop.time() - started < 1.0
        server.restart()
        assert (await backend.decide("u", strategy, rate)).allowed
    finally:
        await backend.close()
