from __future__ import annotations

import math

import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse

from traffik import exceptions
from traffik.exceptions import (
    AnonymousConnection,
    BackendConnectionError,
    BackendError,
    ConfigurationError,
    ConnectionThrottled,
    LockTimeoutError,
    TraffikException,
    build_exception_handler_getter,
)
from traffik.handlers import connection_throttled


def test_hierarchy_matches_the_module_docstring() -> None:
    assert issubclass(ConfigurationError, TraffikException)
    assert issubclass(ConfigurationError, ValueError)
    assert issubclass(BackendError, TraffikException)
    assert issubclass(BackendConnectionError, BackendError)
    assert issubclass(LockTimeoutError, TraffikException)
    assert issubclass(LockTimeoutError, TimeoutError)
    assert issubclass(AnonymousConnection, TraffikException)
    assert issubclass(ConnectionThrottled, HTTPException)
    assert issubclass(ConnectionThrottled, TraffikException)
    doc = exceptions.__doc__ or ""
    for name in (
        "TraffikException",
        "ConfigurationError",
        "BackendError",
        "BackendConnectionError",
        "LockTimeoutError",
        "AnonymousConnection",
        "ConnectionThrottled",
    ):
        assert name in doc


def test_connection_throttled_carries_wait_period_and_retry_after() -> None:
    exc = ConnectionThrottled(wait_period=3)
    assert exc.status_code == 429
    assert exc.wait_period == 3
    assert exc.retry_after == 3
    assert exc.headers == {"Retry-After": "3"}
    assert exc.detail == "Too Many Requests. Retry after 3 seconds."
    assert exc.wait_ms == 3000.0


def test_a_one_second_wait_reads_in_the_singular() -> None:
    assert ConnectionThrottled(wait_period=1).detail == "Too Many Requests. Retry after 1 second."
    assert ConnectionThrottled(wait_period=0.2).detail == "Too Many Requests. Retry after 1 second."
    assert ConnectionThrottled(wait_period=0).detail == "Too Many Requests. Retry after 0 seconds."


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("wait_ms", "detail"),
    [
        (1000.0, "Too many requests. Retry in 1 second."),
        (1.0, "Too many requests. Retry in 1 second."),
        (1001.0, "Too many requests. Retry in 2 seconds."),
    ],
)
async def test_the_default_handler_says_second_or_seconds(wait_ms: float, detail: str) -> None:
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}
    with pytest.raises(ConnectionThrottled) as raised:
        await connection_throttled(Request(scope), wait_ms)
    assert raised.value.detail == detail


def test_connection_throttled_rounds_fractional_seconds_up() -> None:
    exc = ConnectionThrottled(wait_period=0.2, wait_ms=200.0)
    assert exc.wait_period == exc.retry_after == 1
    assert exc.wait_ms == 200.0


def test_connection_throttled_never() -> None:
    for period in (None, math.inf):
        exc = ConnectionThrottled(wait_period=period)
        assert exc.wait_period is None
        assert exc.retry_after is None
        assert "Retry-After" not in (exc.headers or {})
        assert "cannot be admitted" in exc.detail


def test_connection_throttled_keeps_given_headers_and_detail() -> None:
    given = {"X-Custom": "1"}
    exc = ConnectionThrottled(wait_period=2, status_code=503, detail="slow down", headers=given)
    assert exc.status_code == 503
    assert exc.detail == "slow down"
    assert exc.headers == {"X-Custom": "1", "Retry-After": "2"}
    assert given == {"X-Custom": "1"}  # not mutated


def test_exception_handler_getter_follows_starlette_rules() -> None:
    def by_status(request: object, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse("status", 429)

    def by_class(request: object, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse("class", 429)

    app = Starlette()
    get_handler = build_exception_handler_getter(app)
    # Starlette's default HTTPException handler answers when the app has none.
    default = get_handler(ConnectionThrottled(wait_period=1))
    assert default is not None
    assert get_handler(KeyError("x")) is None

    app.add_exception_handler(TraffikException, by_class)
    assert get_handler(ConnectionThrottled(wait_period=1)) is by_class
    assert get_handler(ConfigurationError("x")) is by_class
    app.add_exception_handler(429, by_status)
    assert get_handler(ConnectionThrottled(wait_period=1)) is by_status
    assert get_handler(ConfigurationError("x")) is by_class


@pytest.mark.asyncio
async def test_default_handler_answers_429_with_retry_after() -> None:
    from starlette.requests import Request

    app = Starlette()
    handler = build_exception_handler_getter(app)(ConnectionThrottled(wait_period=4))
    assert handler is not None
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}
    response = await handler(Request(scope), ConnectionThrottled(wait_period=4))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "4"
