"""Refunds and reserve-then-settle through throttles (traffik.charging), in memory."""

from __future__ import annotations

import asyncio
import typing

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from traffik import events
from traffik.backends.inmemory import InMemoryBackend
from traffik.exceptions import BackendError, ConfigurationError, ConnectionThrottled
from traffik.failures import FailurePolicy
from traffik.headers import RateLimitHeadersMiddleware
from traffik.rates import Rate
from traffik.strategies import BUILTIN_STRATEGIES, GCRAStrategy, Strategy
from traffik.throttles import HTTPThrottle


def _request(path: str = "/r", client: str = "10.0.0.1") -> Request:
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "headers": [],
        "client": (client, 1234),
        "query_string": b"",
        "state": {},
    }
    return Request(scope)


class FlakyBackend(InMemoryBackend[typing.Any]):
    """An in-memory backend whose adjustments fail or hang on demand (decisions work)."""

    mode = "ok"

    async def adjust(self, *args: typing.Any, **kwargs: typing.Any) -> typing.Any:
        if self.mode == "fail":
            raise ConnectionError("the store went away")
        if self.mode == "hang":
            await asyncio.sleep(3600)
        return await super().adjust(*args, **kwargs)


@pytest_asyncio.fixture
async def backend() -> typing.AsyncIterator[InMemoryBackend[typing.Any]]:
    # Frozen mid-hour: a test never straddles the end of a one-hour fixed window.
    backend: InMemoryBackend[typing.Any] = InMemoryBackend(
        namespace="charging", clock=lambda: 1_800_000
    )
    async with backend():
        yield backend


@pytest.mark.asyncio
@pytest.mark.parametrize("strategy", BUILTIN_STRATEGIES, ids=[s.name for s in BUILTIN_STRATEGIES])
async def test_refund_gives_back_what_the_throttle_charged(
    backend: InMemoryBackend[typing.Any], strategy: Strategy
) -> None:
    throttle = HTTPThrottle("r", "3/h", strategy=strategy, backend=backend)
    for _ in range(3):
        await throttle(_request())
    with pytest.raises(ConnectionThrottled):
        await throttle(_request())
    request = _request()
    after = await throttle.refund(request)  # never charged on this connection: key worked out
    assert after is not None
    assert after.remaining == 1
    await throttle(request)
    after = await throttle.refund(request, cost=5)
    assert after is not None
    assert after.remaining == strategy.capacity(Rate.parse("3/h"))


@pytest.mark.asyncio
@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "1", None])
async def test_bad_refunds_and_reservations_say_what_is_allowed(
    backend: InMemoryBackend[typing.Any], bad: typing.Any
) -> None:
    throttle = HTTPThrottle("r", "3/h", backend=backend)
    with pytest.raises(ValueError, match="cost must be a whole number of units, at least 1"):
        await throttle.refund(_request(), cost=bad)
    with pytest.raises(ValueError, match="cost must be a whole number of units, at least 1"):
        await throttle.reserve(_request(), cost=bad)
    reservation = await throttle.reserve(_request(), cost=2)
    if bad != 0:
        with pytest.raises(ValueError, match="actual must be a whole number of units, 0 or more"):
            await reservation.settle(bad)


@pytest.mark.asyncio
async def test_custom_strategies_cannot_refund_or_charge_when(
    backend: InMemoryBackend[typing.Any],
) -> None:
    async def custom(key: typing.Any, rate: Rate, backend: typing.Any, cost: int) -> float:
        return 0.0

    throttle = HTTPThrottle("c", "3/h", strategy=custom, backend=backend)
    await throttle(_request())
    with pytest.raises(ConfigurationError, match="cannot give units back"):
        await throttle.refund(_request())
    with pytest.raises(ConfigurationError, match="charge_when cannot be used"):
        HTTPThrottle("c", "3/h", strategy=custom, charge_when=lambda c, s: s < 400)
    with pytest.raises(ConfigurationError, match="charge_when must be a callable"):
        HTTPThrottle("c", "3/h", charge_when=True)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_a_settlement_charges_the_difference_once(
    backend: InMemoryBackend[typing.Any],
) -> None:
    throttle = HTTPThrottle("llm", "100/h", backend=backend)
    reservation = await throttle.reserve(_request(), cost=30)
    assert reservation.decision is not None
    assert reservation.decision.remaining == 70
    after = await reservation.settle(12)
    assert after is not None
    assert after.remaining == 88
    assert await reservation.settle(99) == after  # idempotent: the first settlement stands
    assert reservation.actual == 12

    more = await throttle.reserve(_request(), cost=10)
    after = await more.settle(40)  # 30 more than the estimate
    assert after is not None
    assert after.remaining == 48

    unsettled = await throttle.reserve(_request(), cost=8)  # never settled: stays charged
    assert not unsettled.settled
    stat = await throttle.stat(_request())
    assert stat is not None
    assert stat.hits_remaining == 40


@pytest.mark.asyncio
async def test_a_settlement_may_leave_the_client_in_debt(
    backend: InMemoryBackend[typing.Any],
) -> None:
    throttle = HTTPThrottle("tokens", "10/h", strategy=GCRAStrategy(), backend=backend)
    reservation = await throttle.reserve(_request(), cost=5)
    after = await reservation.settle(15)  # 10 more: the bucket is 5 units in debt
    assert after is not None
    assert after.remaining == 0
    with pytest.raises(ConnectionThrottled):
        await throttle(_request())


@pytest.mark.asyncio
async def test_reserve_refuses_exactly_like_a_call_with_that_cost() -> None:
    async def refusal(how: str) -> ConnectionThrottled:
        backend: InMemoryBackend[typing.Any] = InMemoryBackend(
            namespace="refuse", clock=lambda: 5_000
        )
        async with backend():
            throttle = HTTPThrottle("r", "10/m", backend=backend)
            await throttle(_request(), cost=8)
            call = (
                throttle.reserve(_request(), cost=5)
                if how == "reserve"
                else throttle(_request(), cost=5)
            )
            with pytest.raises(ConnectionThrottled) as caught:
                await call
            return caught.value

    reserved, called = await refusal("reserve"), await refusal("call")
    assert reserved.status_code == called.status_code == 429
    assert reserved.headers == called.headers


@pytest.mark.asyncio
async def test_refunds_show_on_the_response_that_has_not_started() -> None:
    backend: InMemoryBackend[typing.Any] = InMemoryBackend(namespace="hdr", clock=lambda: 90_000)
    throttle = HTTPThrottle("r", "10/m", backend=backend)

    async def endpoint(request: Request) -> JSONResponse:
        await throttle(request, cost=4)
        await throttle.refund(request, cost=3)
        return JSONResponse({})

    app = Starlette(
        routes=[Route("/r", endpoint)], middleware=[Middleware(RateLimitHeadersMiddleware)]
    )
    async with backend():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/r")
    assert response.headers["RateLimit"] == '"r";r=9;t=30'


@pytest.mark.asyncio
async def test_a_failing_backend_drops_the_refund_and_says_so() -> None:
    seen: list[events.ThrottleEvent] = []
    policy = FailurePolicy(on_error="allow", timeout=0.05)
    backend = FlakyBackend(namespace="flaky", failure_policy=policy, clock=lambda: 30_000)
    throttle = HTTPThrottle("r", "10/m", backend=backend)
    unsubscribe = events.subscribe(seen.append)
    try:
        async with backend():
            request = _request()
            await throttle(request, cost=4)
            backend.mode = "fail"
            assert await throttle.refund(request) is None
            backend.mode = "hang"
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert await throttle.refund(request) is None
            assert loop.time() - started < 1.0, "a refund waited past the policy's timeout"
            backend.mode = "ok"
            after = await throttle.refund(request)
            assert after is not None
            assert after.remaining == 7  # the two dropped refunds gave nothing back
    finally:
        unsubscribe()
    dropped = [e for e in seen if e.kind == events.ADJUSTMENT_DROPPED]
    assert len(dropped) == 2
    assert dropped[0].detail == "refund of 1 units dropped"
    assert isinstance(dropped[0].error, ConnectionError | BackendError)
    assert dropped[0].policy == "r"


@pytest.mark.asyncio
async def test_a_refund_follows_on_error_raise() -> None:
    backend = FlakyBackend(
        namespace="raise",
        failure_policy=FailurePolicy(on_error="raise", timeout=0.05),
        clock=lambda: 30_000,
    )
    throttle = HTTPThrottle("r", "10/m", backend=backend)
    async with backend():
        request = _request()
        await throttle(request)
        backend.mode = "fail"
        with pytest.raises(BackendError, match="refund of 1 units"):
            await throttle.refund(request)


@pytest.mark.asyncio
async def test_with_the_fallback_action_a_dropped_refund_goes_to_the_fallback() -> None:
    seen: list[events.ThrottleEvent] = []
    fallback: InMemoryBackend[typing.Any] = InMemoryBackend(namespace="fb", clock=lambda: 30_000)
    backend = FlakyBackend(
        namespace="fbk",
        failure_policy=FailurePolicy(on_error=fallback, timeout=0.05),
        clock=lambda: 30_000,
    )
    throttle = HTTPThrottle("r", "10/m", backend=backend)
    unsubscribe = events.subscribe(seen.append)
    try:
        async with backend(), fallback():
            request = _request()
            await throttle(request)
            backend.mode = "fail"
            after = await throttle.refund(request)
            assert after is not None  # the fallback's quota (full: it was never charged)
            assert after.remaining == 10
    finally:
        unsubscribe()
    (event,) = [e for e in seen if e.kind == events.ADJUSTMENT_DROPPED]
    assert "applied to the fallback" in event.detail
