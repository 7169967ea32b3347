"""Answering from the middleware: exception handlers, WebSocket denials, RateLimit fields."""

from __future__ import annotations

import typing

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import Response
from traffik.exceptions import build_exception_handler_getter
from traffik.headers import message_with_fields
from traffik.utils import is_async_callable

if typing.TYPE_CHECKING:
    from starlette.requests import HTTPConnection
    from starlette.types import Message, Receive, Scope, Send

__all__ = [
    "WS_TRY_AGAIN_LATER",
    "handle_exception",
    "is_async_handler",
    "rate_limit_sender",
]

#: WebSocket close code "Try Again Later" (RFC 6455 registry): the denial is temporary.
WS_TRY_AGAIN_LATER = 1013

#: Longest close reason a WebSocket close frame carries, in bytes.
_MAX_REASON = 123

#: Exception handler -> whether it is async: looked up once per handler, not per refusal.
_async_handlers: dict[typing.Any, bool] = {}
_MAX_HANDLERS = 256

_START_TYPES = frozenset(
    {"http.response.start", "websocket.http.response.start", "websocket.accept"}
)


async def handle_exception(
    connection: HTTPConnection,
    exc: Exception,
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    close_code: int = WS_TRY_AGAIN_LATER,
) -> None:
    """Answer ``exc`` through the app's exception handlers, or re-raise it if none applies.

    Handlers are looked up like Starlette's ``ExceptionMiddleware`` does (a handler
    for the status code first, then by exception class, then Starlette's default
    plain-text answer to an ``HTTPException``), with
    :func:`traffik.exceptions.build_exception_handler_getter`.

    HTTP: the handler's response is sent. WebSocket (before accept): the response is
    sent as a denial response when the server supports the ``websocket.http.response``
    extension; otherwise the handshake is closed with ``close_code``.
    """
    handler = build_exception_handler_getter(scope.get("app"))(exc)
    if handler is None:
        raise exc
    response: typing.Any
    if is_async_handler(handler):
        response = await handler(connection, exc)
    else:
        response = await run_in_threadpool(handler, connection, exc)

    if scope["type"] == "http":
        if response is not None:
            await response(scope, receive, send)
        return

    sent = False

    async def tracking_send(message: Message) -> None:
        nonlocal sent
        sent = True
        await send(message)

    if isinstance(response, Response) and "websocket.http.response" in scope.get("extensions", {}):
        # Starlette responses speak websocket.http.response.* in a websocket scope.
        await response(scope, receive, tracking_send)
    # Otherwise (no extension, or a WebSocket-style handler returning None that did
    # not close the socket itself) the handshake is closed.
    if not sent:
        await send({"type": "websocket.close", "code": close_code, "reason": _reason(exc)})


def is_async_handler(handler: typing.Any) -> bool:
    """:func:`traffik.utils.is_async_callable`, remembered per (hashable) handler."""
    try:
        found = _async_handlers.get(handler)
    except TypeError:  # an unhashable callable: judged every time
        return is_async_callable(handler)
    if found is None:
        found = is_async_callable(handler)
        if len(_async_handlers) >= _MAX_HANDLERS:
            _async_handlers.clear()
        _async_handlers[handler] = found
    return found


def _reason(exc: Exception) -> str:
    detail = exc.detail if isinstance(exc, HTTPException) else "Rate limit exceeded."
    text = detail if isinstance(detail, str) else "Rate limit exceeded."
    data = text.encode("utf-8")
    if len(data) <= _MAX_REASON:
        return text
    return data[:_MAX_REASON].decode("utf-8", "ignore")


def rate_limit_sender(scope: Scope, send: Send, *, legacy: bool = False) -> Send:
    """``send`` that writes the RateLimit fields of the recorded decisions on the response start.

    The fields combine every decision recorded on the connection (middleware and
    route throttles alike) and replace any RateLimit fields already on the response
    (for instance those a throttle put on its 429), so nothing is duplicated. A
    WebSocket ``accept`` carries them too.
    """
    state: dict[str, typing.Any] = scope["state"]

    async def sender(message: Message) -> None:
        # One set lookup for the body messages; the merge is core's (traffik.headers).
        if message["type"] in _START_TYPES:
            message = message_with_fields(message, state, legacy)
        await send(message)

    return sender
