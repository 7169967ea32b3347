from __future__ import annotations

import logging
import typing

import pytest

from traffik import events


def test_subscribe_emit_unsubscribe() -> None:
    seen: list[str] = []
    unsubscribe = events.subscribe(lambda event: seen.append(event.kind))
    events.emit(events.ThrottleEvent(events.ALLOWED))
    unsubscribe()
    events.emit(events.ThrottleEvent(events.THROTTLED))
    assert seen == ["allowed"]
    assert not events.has_subscribers()


def test_a_failing_subscriber_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def broken(event: events.ThrottleEvent) -> None:
        raise RuntimeError("boom")

    seen: list[str] = []
    events.subscribe(broken)
    events.subscribe(lambda event: seen.append(event.kind))
    try:
        with caplog.at_level(logging.ERROR, logger="traffik.events"):
            events.emit(events.ThrottleEvent(events.FALLBACK))
    finally:
        events._subscribers.clear()
    assert seen == ["fallback"]
    assert "failed" in caplog.text


def test_subscribe_rejects_non_callables() -> None:
    with pytest.raises(TypeError, match="callable"):
        events.subscribe(42)  # type: ignore[arg-type]


@pytest.mark.asyncio
@pytest.mark.parametrize("custom", [False, True], ids=["builtin", "custom"])
async def test_requests_through_an_app_emit_allowed_and_throttled_named_by_the_throttle(
    custom: bool,
) -> None:
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from traffik.backends.inmemory import InMemoryBackend
    from traffik.rates import Rate
    from traffik.throttles import HTTPThrottle

    async def one_per_key(key: object, rate: Rate, backend: typing.Any, cost: int = 1) -> float:
        return 0.0 if await backend.increment(f"{key}:n") <= rate.limit else 60_000.0

    backend = InMemoryBackend(namespace="events-app", clock=lambda: 1_000_000)
    throttle = HTTPThrottle("search-api", "1/m", strategy=one_per_key if custom else None)

    async def endpoint(request: Request) -> PlainTextResponse:
        await throttle(request)
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/s", endpoint)])
    seen: list[events.ThrottleEvent] = []
    unsubscribe = events.subscribe(seen.append)
    try:
        transport = httpx.ASGITransport(app=app)
        async with backend(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            assert [(await c.get("/s")).status_code for _ in range(2)] == [200, 429]
    finally:
        unsubscribe()
    assert [(e.kind, e.policy) for e in seen] == [
        ("allowed", "search-api"),
        ("throttled", "search-api"),
    ]
    assert all(e.decision is not None and e.key for e in seen)
