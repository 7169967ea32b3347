"""ConcurrencyThrottle in core: slots per key, exemptions, renewals, failure policy, events."""

from __future__ import annotations

import asyncio
import typing

import pytest
from starlette.requests import Request

from traffik import events
from traffik.backends.base import BackendCapabilities
from traffik.backends.inmemory import InMemoryBackend
from traffik.concurrency import DEFAULT_LEASE, ConcurrencyThrottle
from traffik.exceptions import BackendError, ConfigurationError, ConnectionThrottled
from traffik.lifecycle import span
from traffik.types import UNLIMITED

pytestmark = pytest.mark.asyncio


def request(client: str = "1.2.3.4", path: str = "/r") -> Request:
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "headers": [],
        "client": (client, 1000),
        "state": {},
    }
    return Request(scope)


@pytest.fixture
def seen() -> typing.Iterator[list[events.ThrottleEvent]]:
    got: list[events.ThrottleEvent] = []
    unsubscribe = events.subscribe(got.append)
    yield got
    unsubscribe()


async def test_slots_are_per_client_and_come_back_when_the_response_ends(
    seen: list[events.ThrottleEvent],
) -> None:
    backend = InMemoryBackend(namespace="conc-core")
    throttle = ConcurrencyThrottle("c", 2, backend=backend)
    async with backend():
        first, second = request(), request()
        async with span(first.scope), span(second.scope):
            await throttle(first)
            await throttle(second)
            third = request()
            async with span(third.scope):
                with pytest.raises(ConnectionThrottled) as refused:
                    await throttle(third)
            assert refused.value.status_code == 429
            assert refused.value.headers["Retry-After"] == "1"
            # Another client has slots of its own.
            other = request("5.6.7.8")
            async with span(other.scope):
                await throttle(other)
        # Both spans ended: their slots are free again.
        again = request()
        async with span(again.scope):
            await throttle(again)
    kinds = [e.kind for e in seen]
    assert kinds.count("slot_taken") == 4
    assert kinds.count("slot_refused") == 1
    taken = next(e for e in seen if e.kind == "slot_taken")
    assert (taken.policy, taken.detail) == ("c", "1/2")


async def test_an_exempt_client_takes_no_slot() -> None:
    async def exempt(connection: typing.Any) -> typing.Any:
        return UNLIMITED

    backend = InMemoryBackend(namespace="conc-exempt")
    throttle = ConcurrencyThrottle("c", 1, backend=backend, identifier=exempt)
    async with backend():
        for _ in range(3):
            async with throttle.hold(request()):
                pass
        async with throttle.hold(request()), throttle.hold(request()):
            pass


async def test_a_custom_handler_answers_refusals_with_the_retry_after() -> None:
    calls: list[tuple[float, dict[str, typing.Any]]] = []

    async def handler(connection: typing.Any, wait_ms: float, **kwargs: typing.Any) -> None:
        calls.append((wait_ms, kwargs))
        raise ConnectionThrottled(wait_ms / 1000)

    backend = InMemoryBackend(namespace="conc-handler")
    throttle = ConcurrencyThrottle(
        "c", 1, backend=backend, retry_after=2.5, handle_throttled=handler, headers={"X-A": "1"}
    )
    async with backend(), throttle.hold(request()):
        with pytest.raises(ConnectionThrottled):
            async with throttle.hold(request()):
                pass
    assert calls == [(2500, {"headers": {"X-A": "1"}})]


async def test_long_responses_renew_their_lease(seen: list[events.ThrottleEvent]) -> None:
    backend = InMemoryBackend(namespace="conc-renew")
    throttle = ConcurrencyThrottle("c", 1, backend=backend, lease=0.06)
    async with backend():
        async with throttle.hold(request()):
            # Five leases long: without renewals the slot would have expired four times.
            await asyncio.sleep(0.3)
            with pytest.raises(ConnectionThrottled):
                async with throttle.hold(request()):
                    pass
        async with throttle.hold(request()):
            pass
    assert "slot_expired" not in [e.kind for e in seen]


async def test_a_lease_lost_meanwhile_is_reported_expired(
    seen: list[events.ThrottleEvent],
) -> None:
    backend = InMemoryBackend(namespace="conc-expired")
    throttle = ConcurrencyThrottle("c", 1, backend=backend)
    async with backend(), throttle.hold(request()):
        await backend.reset()  # the lease is gone, as if it had expired
    assert [e.kind for e in seen][-1] == "slot_expired"


class Broken(InMemoryBackend[typing.Any]):
    """An in-memory backend whose lease calls fail (a server down)."""

    async def take_lease(self, *args: typing.Any, **kwargs: typing.Any) -> typing.Any:
        raise ConnectionError("down")


@pytest.mark.parametrize("action", ["allow", "throttle", "raise", "fallback"])
async def test_a_failing_backend_follows_the_failure_policy(
    action: str, seen: list[events.ThrottleEvent]
) -> None:
    backend = Broken(namespace=f"conc-broken-{action}")
    throttle = ConcurrencyThrottle("c", 1, backend=backend, on_backend_error=action)
    async with backend():
        if action == "raise":
            with pytest.raises(BackendError, match="down"):
                async with throttle.hold(request()):
                    pass
        elif action == "throttle":
            with pytest.raises(ConnectionThrottled):
                async with throttle.hold(request()):
                    pass
        elif action == "allow":
            async with throttle.hold(request()), throttle.hold(request()):
                pass
        else:  # slots on the local in-memory fallback: the limit holds per process
            async with throttle.hold(request()):
                with pytest.raises(ConnectionThrottled):
                    async with throttle.hold(request()):
                        pass
    kinds = [e.kind for e in seen]
    assert "backend_error" in kinds
    if action != "raise":
        assert "fallback" in kinds


async def test_a_failed_release_leaves_the_lease_to_expire(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class NoRelease(InMemoryBackend[typing.Any]):
        async def release_lease(self, *args: typing.Any, **kwargs: typing.Any) -> bool:
            raise ConnectionError("gone")

    now = [0]
    backend = NoRelease(namespace="conc-norelease", clock=lambda: now[0])
    throttle = ConcurrencyThrottle("c", 1, backend=backend, lease=60)
    async with backend():
        async with throttle.hold(request()):
            pass
        assert "frees when its lease expires" in caplog.text
        with pytest.raises(ConnectionThrottled):
            async with throttle.hold(request()):
                pass
        now[0] = 60_000  # one lease later
        async with throttle.hold(request()):
            pass


async def test_bad_configuration_fails_at_construction() -> None:
    for limit in (0, -3, 2.0, None, True):
        with pytest.raises(ValueError, match="limit must be a positive whole number"):
            ConcurrencyThrottle("c", limit)  # type: ignore[arg-type]
    for lease in (0, -1.0, float("inf"), "10", False):
        with pytest.raises(ValueError, match="lease must be a positive number of seconds"):
            ConcurrencyThrottle("c", 1, lease=lease)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="retry_after must be a positive number"):
        ConcurrencyThrottle("c", 1, retry_after=0)
    assert ConcurrencyThrottle("c", 3).lease == DEFAULT_LEASE
    assert repr(ConcurrencyThrottle("c", 3, lease=5)) == (
        "ConcurrencyThrottle(uid='c', limit=3, lease=5.0)"
    )


async def test_a_backend_without_leases_is_named_at_construction_or_first_use() -> None:
    class NoLeases(InMemoryBackend[typing.Any]):
        capabilities = BackendCapabilities(injectable_clock=True)

    backend = NoLeases(namespace="conc-noleases")
    with pytest.raises(ConfigurationError, match="NoLeases cannot hold leases"):
        ConcurrencyThrottle("c", 1, backend=backend)
    throttle = ConcurrencyThrottle("c", 1)
    async with backend():
        with pytest.raises(ConfigurationError, match="NoLeases cannot hold leases"):
            async with throttle.hold(request()):
                pass


async def test_calling_it_where_nothing_reports_the_end_says_what_to_do() -> None:
    backend = InMemoryBackend(namespace="conc-unmanaged")
    throttle = ConcurrencyThrottle("c", 1, backend=backend)
    async with backend():
        with pytest.raises(ConfigurationError, match=r"throttle\.hold"):
            await throttle(request())
        with pytest.raises(TypeError, match="needs the connection"):
            await throttle()


async def test_a_hanging_release_is_bounded_by_the_policy_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from traffik.failures import FailurePolicy

    class Hanging(InMemoryBackend[typing.Any]):
        async def release_lease(self, *args: typing.Any, **kwargs: typing.Any) -> bool:
            await asyncio.Event().wait()
            return True

    backend = Hanging(namespace="conc-hang", failure_policy=FailurePolicy(timeout=0.05))
    throttle = ConcurrencyThrottle("c", 1, backend=backend)
    async with backend(), throttle.hold(request()):
        pass
    assert "frees when its lease expires" in caplog.text
    assert await throttle.stat(request()) is None


async def test_a_backend_that_keeps_failing_opens_its_circuit_and_is_skipped(
    seen: list[events.ThrottleEvent],
) -> None:
    from traffik.failures import FailurePolicy

    calls = [0]

    class Down(InMemoryBackend[typing.Any]):
        async def take_lease(self, *args: typing.Any, **kwargs: typing.Any) -> typing.Any:
            calls[0] += 1
            raise ConnectionError("down")

    policy = FailurePolicy(
        on_error="throttle", failure_threshold=2, recovery_time=60, max_recovery_time=60
    )
    backend = Down(namespace="conc-circuit", failure_policy=policy)
    throttle = ConcurrencyThrottle("c", 1, backend=backend)
    async with backend():
        for _ in range(5):
            with pytest.raises(ConnectionThrottled):
                async with throttle.hold(request()):
                    pass
    assert calls[0] == 2, "an open circuit must not call the backend"
    kinds = [e.kind for e in seen]
    assert kinds.count("circuit_open") == 1
    assert kinds.count("fallback") == 5
