"""``throttled``: throttle a plain Starlette endpoint with a decorator.

::

    @throttled(HTTPThrottle("items", "10/m"))
    async def items(request: Request) -> Response: ...

    app = Starlette(routes=[Route("/items", items)], lifespan=backend.lifespan)

The endpoint keeps its signature (``functools.wraps``). Throttles run in the order
given before the endpoint; a refusal raises through Starlette's exception handlers
(a 429). The response the endpoint returns gets the RateLimit fields. On a
WebSocket endpoint the throttles run at connect, before the endpoint accepts, and a
refusal is answered like :class:`~traffik.starlette.ThrottleMiddleware` does (HTTP 429
denial response if the server supports it, else close code 1013).
"""

from __future__ import annotations

import functools
import typing

from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from traffik.charging import ChargeWhen, charge_by_status, check_charge_when
from traffik.checks import THROTTLES_ATTRIBUTE
from traffik.headers import write_recorded_fields
from traffik.starlette._lifecycle import call_with_lifecycle
from traffik.starlette._responses import WS_TRY_AGAIN_LATER, handle_exception
from traffik.throttles import BaseThrottle
from traffik.utils import is_async_callable

if typing.TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["throttled"]

F = typing.TypeVar("F", bound="Callable[..., typing.Any]")


def _find_connection(args: tuple[typing.Any, ...], kwargs: dict[str, typing.Any]) -> HTTPConnection:
    if args and type(args[0]) is Request:
        return args[0]  # a function endpoint: Starlette passes the request alone
    for value in (*args, *kwargs.values()):
        if isinstance(value, HTTPConnection):
            return value
    raise TypeError(
        "A @throttled Starlette endpoint must receive the request or websocket "
        "(async def endpoint(request): ...)."
    )


def throttled(
    *throttles: BaseThrottle[typing.Any],
    websocket_close_code: int = WS_TRY_AGAIN_LATER,
    charge_when: ChargeWhen | None = None,
) -> Callable[[F], F]:
    """A decorator applying ``throttles`` (in order) before a Starlette endpoint runs.

    Works on ``async def`` and plain ``def`` endpoints (the latter run in the thread
    pool, as Starlette would), on ``HTTPEndpoint`` methods and on WebSocket
    endpoints. ``charge_when``: ``(connection, status_code) -> bool``, sync or async;
    False gives every throttle's charge for the request back (:mod:`traffik.charging`),
    replacing the throttles' own ``charge_when``.
    """
    if not throttles:
        raise TypeError(
            "throttled() needs at least one throttle, e.g. throttled(HTTPThrottle(...))."
        )
    for throttle in throttles:
        if not isinstance(throttle, BaseThrottle):
            raise TypeError(
                f"throttled() takes throttles (HTTPThrottle, WebSocketThrottle or another "
                f"BaseThrottle), got {throttle!r}."
            )
        check_charge_when(charge_when, throttle.strategy)

    def decorator(endpoint: F) -> F:
        if not callable(endpoint):
            raise TypeError(f"throttled(...) decorates an endpoint function, got {endpoint!r}.")
        is_async = is_async_callable(endpoint)
        lifecycle = charge_when is not None or any(t.needs_lifecycle for t in throttles)

        @functools.wraps(endpoint)
        async def wrapper(*args: typing.Any, **kwargs: typing.Any) -> typing.Any:
            connection = _find_connection(args, kwargs)
            if lifecycle:
                return await call_with_lifecycle(lambda: run(connection, args, kwargs), connection)
            return await run(connection, args, kwargs)

        async def run(
            connection: HTTPConnection, args: tuple[typing.Any, ...], kwargs: dict[str, typing.Any]
        ) -> typing.Any:
            if isinstance(connection, WebSocket):
                try:
                    for throttle in throttles:
                        await throttle(connection)
                except Exception as exc:
                    await handle_exception(
                        connection,
                        exc,
                        connection.scope,
                        connection.receive,
                        connection.send,
                        close_code=websocket_close_code,
                    )
                    return None
            else:
                for throttle in throttles:
                    await throttle(connection)
                    if charge_when is not None:
                        charge_by_status(throttle, connection, charge_when)
            if is_async:
                result = await endpoint(*args, **kwargs)
            else:
                result = await run_in_threadpool(endpoint, *args, **kwargs)
            if isinstance(result, Response):
                write_recorded_fields(connection.scope.get("state"), result)
            return result

        setattr(wrapper, THROTTLES_ATTRIBUTE, throttles)  # found by startup checks
        return typing.cast("F", wrapper)

    return decorator
