"""A pool of three memcached servers, one of which dies (SIGKILL) or freezes (SIGSTOP).

Only the keys of that server follow the failure policy, each answer arrives within
the policy's timeout (plus MARGIN_S), keys never move to the live servers, the
clients of the live servers are decided there exactly, and once the server answers
again its keys are decided there without restarting the app.
"""

from __future__ import annotations

import asyncio
import os
import signal
import typing
from collections.abc import Callable

import httpx
import pytest
from starlette.applications import Starlette

from traffik import events
from traffik.failures import FailurePolicy
from traffik.throttles import HTTPThrottle

pytestmark = [pytest.mark.asyncio, pytest.mark.memcached]

POLICY = {"timeout": 0.25, "failure_threshold": 3, "recovery_time": 0.1, "max_recovery_time": 0.5}
#: What an answer may take beyond the policy's timeout on a loaded, shared test machine.
MARGIN_S = 0.25
RECOVERY_ATTEMPTS = 400  # x 0.05 s between attempts: about 20 s
LIMIT = 5


def _client(app: Starlette, ip: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 1234))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def _timed(client: httpx.AsyncClient) -> tuple[int, float]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    status = (await client.get("/")).status_code
    return status, loop.time() - started


async def _stats(server: typing.Any, name: bytes) -> int:
    from traffik.memcached._protocol import MemcachedClient

    client = MemcachedClient(server.host, server.port, pool_size=1, timeout=2, connect_timeout=2)
    try:
        return (await client.stats()).get(name, 0)
    finally:
        await client.close()


@pytest.mark.parametrize("death", ["killed", "frozen"])
@pytest.mark.parametrize("action", ["throttle", "fallback"])
async def test_one_dead_server_of_three(
    throttled_app: Callable[[HTTPThrottle], Starlette],
    make_memcached_server: Callable[..., typing.Any],
    action: str,
    death: str,
) -> None:
    memcached = pytest.importorskip("traffik.memcached")
    servers = [make_memcached_server() for _ in range(3)]
    policy = FailurePolicy(on_error=action, **POLICY)
    backend = memcached.MemcachedBackend(
        servers=[s.address for s in servers], namespace="pool-failures", failure_policy=policy
    )
    app = throttled_app(HTTPThrottle("pool", rate=f"{LIMIT}/m"))
    keys: dict[str, str] = {}

    def note_key(event: events.ThrottleEvent) -> None:
        keys.setdefault("last", event.key)

    ips = [f"198.51.100.{i}" for i in range(1, 25)]
    clients = {ip: _client(app, ip) for ip in ips}
    async with backend(app):
        # Where each client's key lives (learnt from its first, healthy, decision).
        owner: dict[str, str] = {}
        unsubscribe = events.subscribe(note_key)
        try:
            for ip, client in clients.items():
                keys.clear()
                assert (await client.get("/")).status_code == 200
                owner[ip] = backend.failure_domain(keys["last"])
        finally:
            unsubscribe()
        victim = next(s for s in servers if list(owner.values()).count(s.address) >= 3)
        doomed = [ip for ip in ips if owner[ip] == victim.address]
        living = [ip for ip in ips if owner[ip] != victim.address]
        assert {owner[ip] for ip in living} == {s.address for s in servers} - {victim.address}
        others = [s for s in servers if s is not victim]
        items_before = [await _stats(s, b"curr_items") for s in others]

        frozen = death == "frozen"
        if frozen:
            os.kill(victim.pid, signal.SIGSTOP)
        else:
            victim.kill()
        try:
            slowest = 0.0
            for ip in doomed[:-1]:  # the last one waits for the recovery, untouched
                for _ in range(LIMIT + 2):
                    status, took = await _timed(clients[ip])
                    slowest = max(slowest, took)
                    assert status in (200, 429), f"{ip} on the dead server got {status}"
                    if action == "throttle":
                        assert status == 429
            for ip in living:  # decided on their own servers, exactly
                answers = [await _timed(clients[ip]) for _ in range(LIMIT + 1)]
                slowest = max([slowest, *(took for _, took in answers)])
                assert [s for s, _ in answers] == [200] * (LIMIT - 1) + [429, 429], ip
            assert slowest <= policy.timeout + MARGIN_S, f"an answer took {slowest:.3f} s"
            # The dead server's keys did not move: nothing of theirs was written elsewhere.
            assert [await _stats(s, b"curr_items") for s in others] == items_before
        finally:
            if frozen:
                os.kill(victim.pid, signal.SIGCONT)

        if not frozen:
            victim.restart()  # same port, empty data
        probe = clients[doomed[0]]
        for _ in range(RECOVERY_ATTEMPTS):
            commands = await _stats(victim, b"cmd_get") + await _stats(victim, b"incr_hits")
            status = (await probe.get("/")).status_code
            assert status in (200, 429)
            after = await _stats(victim, b"cmd_get") + await _stats(victim, b"incr_hits")
            if after > commands:  # the request was decided on the server again
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("decisions did not return to the restarted server")
        # Back on its own server: a client of it that sent nothing meanwhile is decided
        # there, exactly. (A request cut off by the timeout while the server was frozen
        # still counts once the server thaws: it errs on the side of refusing.)
        last = clients[doomed[-1]]
        fresh = [(await last.get("/")).status_code for _ in range(LIMIT + 2)]
        if frozen:  # its data survived the freeze: one request was counted before it
            assert fresh == [200] * (LIMIT - 1) + [429] * 3
        else:  # restarted empty: a fresh quota, enforced on the server
            assert fresh == [200] * LIMIT + [429] * 2
    for client in clients.values():
        await client.aclose()
