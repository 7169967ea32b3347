"""Leases on Redis: the scripts heal after SCRIPT FLUSH, keys share one hash slot, the
server clock decides, and the set expires with its last lease."""

from __future__ import annotations

import pytest

from traffik.redis import RedisBackend
from traffik.testing.servers import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.asyncio]


@pytest.mark.parametrize("auto_pipeline", [True, False])
async def test_lease_scripts_heal_after_script_flush(
    redis_server: RedisServer, auto_pipeline: bool
) -> None:
    backend = RedisBackend(redis_server.url, namespace="lease-flush", auto_pipeline=auto_pipeline)
    async with backend() as backend:
        redis_server.command("SCRIPT", "FLUSH")
        assert (await backend.take_lease("k", "a", 1, 10_000)).taken
        redis_server.command("SCRIPT", "FLUSH")
        assert await backend.renew_lease("k", "a", 10_000) is True
        redis_server.command("SCRIPT", "FLUSH")
        assert await backend.release_lease("k", "a") is True


async def test_the_lease_set_is_one_tagged_key_that_expires_with_its_last_lease(
    redis_server: RedisServer,
) -> None:
    async with RedisBackend(redis_server.url, namespace="lease-key")() as backend:
        key = "route:{client}"  # braces in a client's text cannot move the hash tag
        assert backend.lease_key(key) == "lease-key:{route:%7Bclient%7D}:lease"
        await backend.take_lease(key, "a", 2, 5_000)
        await backend.take_lease(key, "b", 2, 60_000)
        ttl = int(redis_server.command("PTTL", backend.lease_key(key)))
        assert 55_000 < ttl <= 60_000
        await backend.release_lease(key, "b")
        ttl = int(redis_server.command("PTTL", backend.lease_key(key)))
        assert ttl > 0  # unchanged by a release; the set goes at its last expiry
        await backend.release_lease(key, "a")
        assert int(redis_server.command("EXISTS", backend.lease_key(key))) == 0


async def test_the_server_clock_decides_unless_a_clock_is_given(
    redis_server: RedisServer,
) -> None:
    # A local clock ten days ahead changes nothing: the server's TIME decides.
    ahead = RedisBackend(redis_server.url, namespace="lease-clock")
    ahead.clock = lambda: 10**13
    async with ahead() as backend:
        grant = await backend.take_lease("k", "a", 1, 10_000)
        refused = await backend.take_lease("k", "b", 1, 10_000)
        assert grant.taken
        assert not refused.taken
        assert 0 < refused.retry_after_ms <= 10_000
