"""Multiplexed connections: many requests in flight per connection, stuck ones replaced."""

from __future__ import annotations

import asyncio
import itertools
import socket
import typing
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from traffik.exceptions import BackendConnectionError
from traffik.memcached import MemcachedBackend
from traffik.memcached._protocol import LINE, MemcachedClient
from traffik.testing.servers import MemcachedServer

pytestmark = pytest.mark.memcached


@pytest.mark.asyncio
async def test_one_connection_carries_64_concurrent_requests_exactly(
    memcached_server: MemcachedServer,
) -> None:
    ns = f"mcc{uuid.uuid4().hex[:12]}"
    backend = MemcachedBackend(memcached_server.host, memcached_server.port, ns, pool_size=1)
    await backend.initialize()
    try:
        values = await asyncio.gather(*(backend.increment(f"{ns}:n", 1) for _ in range(64)))
        assert sorted(values) == list(range(1, 65))
        assert backend.connection is not None
        assert len(backend.connection.servers[0].client._channels) == 1
    finally:
        await backend.reset()
        await backend.close()


@pytest.mark.asyncio
async def test_cancelled_requests_in_a_pipeline_never_shift_replies(
    memcached_server: MemcachedServer,
) -> None:
    client = MemcachedClient(
        memcached_server.host, memcached_server.port, pool_size=1, timeout=5, connect_timeout=5
    )
    await client.connect()
    key = f"mcc{uuid.uuid4().hex[:12]}".encode()
    try:
        await client.execute(b"set %s 0 60 1\r\n0\r\n" % key, (LINE,))
        # Interleave requests that will be cancelled with ones that will not, all in flight.
        tasks = [
            asyncio.ensure_future(
                client.execute(b"incr %s %d\r\n" % (key, 1000 if i % 2 else 1), (LINE,))
            )
            for i in range(40)
        ]
        await asyncio.sleep(0)
        for i, task in enumerate(tasks):
            if i % 2 == 0:
                task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        kept = sorted(int(r[0]) for r in results if isinstance(r, list))  # type: ignore[arg-type]
        # Every +1000 got its own reply: consecutive ones differ by 1000 plus the +1s between.
        assert len(kept) == 20
        assert all((b - a) // 1000 == 1 for a, b in itertools.pairwise(kept))
    finally:
        await client.close()


@pytest_asyncio.fixture
async def silent_port() -> AsyncIterator[int]:
    """A listener that accepts connections and never answers (a hung server)."""
    writers: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in writers:
            writer.close()
            await writer.wait_closed()
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_initialize_against_a_silent_server_fails_within_connect_timeout(
    silent_port: int,
) -> None:
    backend = MemcachedBackend("127.0.0.1", silent_port, connect_timeout=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(BackendConnectionError, match=f"127.0.0.1:{silent_port}"):
        await backend.initialize()
    assert loop.time() - started < 1.0


@pytest.mark.asyncio
async def test_a_stuck_connection_is_replaced_not_piled_onto(silent_port: int) -> None:
    client = MemcachedClient("127.0.0.1", silent_port, pool_size=1, timeout=0.2, connect_timeout=1)
    loop = asyncio.get_running_loop()
    try:
        for _ in range(3):
            started = loop.time()
            with pytest.raises(BackendConnectionError, match=r"did not answer within 0\.2 s"):
                await client.execute(b"version\r\n", (LINE,))
            assert loop.time() - started < 0.5
        # Each late connection was closed when the next request came: never more than one.
        assert len(client._channels) <= 1
        assert all(channel.in_flight <= 1 for channel in client._channels)
    finally:
        await client.close()


@pytest.mark.asyncio
async def test_a_protocol_error_closes_the_connection_instead_of_shifting_replies(
    memcached_server: MemcachedServer,
) -> None:
    # memcached answers a storage command it cannot parse with CLIENT_ERROR, then reads
    # its data block as a command and answers ERROR: two replies for one request.
    client = MemcachedClient(
        memcached_server.host, memcached_server.port, pool_size=1, timeout=5, connect_timeout=5
    )
    await client.connect()
    try:
        bad = client.execute(b"set %s 0 0 5\r\nhello\r\n" % (b"k" * 300), (LINE,))
        after = client.execute(b"version\r\n", (LINE,))
        first, second = await asyncio.gather(bad, after, return_exceptions=True)
        assert first == [b"CLIENT_ERROR bad command line format"]
        # The request written behind it fails (its reply cannot be told apart)...
        assert isinstance(second, BackendConnectionError), second
        # ...and the next one runs on a fresh connection and gets its own reply.
        (line,) = await client.execute(b"version\r\n", (LINE,))
        assert typing.cast("bytes", line).startswith(b"VERSION ")
    finally:
        await client.close()


@pytest.mark.asyncio
async def test_a_connection_attempt_that_hangs_is_given_up_after_connect_timeout() -> None:
    # A listener whose backlog is full: the kernel drops further SYNs, so connecting hangs
    # (as to a host that vanished) until the OS gives up, minutes later.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    held = await asyncio.open_connection("127.0.0.1", port)
    client = MemcachedClient("127.0.0.1", port, pool_size=1, timeout=0.1, connect_timeout=0.3)
    loop = asyncio.get_running_loop()
    try:
        with pytest.raises(BackendConnectionError):
            await client.execute(b"version\r\n", (LINE,))
        # The attempt must end within connect_timeout, so that a later call tries afresh
        # (a server back at that address is found) instead of waiting behind it.
        deadline = loop.time() + 2.0
        while client._opening is not None and loop.time() < deadline:
            await asyncio.sleep(0.02)
        assert client._opening is None, "the connection attempt outlived connect_timeout"
    finally:
        await client.close()
        held[1].close()
        await held[1].wait_closed()
        listener.close()
