"""The response lifecycle for the ``throttled`` Starlette decorator (:mod:`traffik.lifecycle`).

The decorator runs inside Starlette's ``request_response``: it cannot wrap the
route's ``send``. When no outer observer (``ThrottleMiddleware``, a wrapped
``route.app``) watches the connection, it observes what it can reach: an
exception from the throttles or the endpoint ends the lifecycle at once, and the
response the endpoint returns is wrapped in a
:class:`~traffik.lifecycle.LifecycleObserver`, so its status, its last chunk and a
disconnect while it streams are seen exactly. A WebSocket endpoint's lifecycle
ends when the endpoint returns.
"""

from __future__ import annotations

import typing

from traffik.lifecycle import LifecycleObserver, attach, span

if typing.TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from starlette.requests import HTTPConnection

__all__ = ["call_with_lifecycle"]


async def call_with_lifecycle(
    call: Callable[[], Awaitable[typing.Any]], connection: HTTPConnection
) -> typing.Any:
    """``await call()`` (throttles, then the endpoint) with the lifecycle of ``connection`` ended."""
    scope = connection.scope
    lc = attach(scope)
    if lc.observed:
        return await call()
    if scope["type"] == "websocket":
        async with span(scope):
            return await call()
    try:
        result = await call()
    except BaseException as exc:
        await lc.finish_for(exc)
        raise
    if callable(result):
        return LifecycleObserver(result)
    return result
