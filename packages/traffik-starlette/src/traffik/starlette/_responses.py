"""Answering from the middleware: exception handlers, WebSocket denials, RateLimit fields."""

from __future__ import annotations

import typing

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse, Response
from traffik.headers import (
    DECISIONS_STATE_KEY,
    LEGACY_STATE_KEY,
    MANAGED_FIELDS,
    rate_limit_headers,
)
from traffik.utils import is_async_callable

if typing.TYPE_CHECKING:
    from starlette.requests import HTTPConnection
    from starlette.types import Message, Receive, Scope, Send

__all__ = [
    "WS_TRY_AGAIN_LATER",
    "default_http_exception_response",
    "handle_exception",
    "lookup_exception_handler",
    "rate_limit_sender",
]

#: WebSocket close code "Try Again Later" (RFC 6455 registry): the denial is temporary.
WS_TRY_AGAIN_LATER = 1013

#: Longest close reason a WebSocket close frame carries, in bytes.
_MAX_REASON = 123

_START_TYPES = frozenset(
    {"http.response.start", "websocket.http.response.start", "websocket.accept"}
)


def lookup_exception_handler(app: typing.Any, exc: Exception) -> typing.Any:
    """The handler ``app`` registered for ``exc``, looked up like Starlette does.

    For an ``HTTPException``, a handler registered for its status code wins; then
    the first class of the exception's MRO with a handler. Handlers for ``500`` and
    ``Exception`` are left to Starlette's ``ServerErrorMiddleware`` (None here).
    """
    handlers: typing.Mapping[typing.Any, typing.Any] = (
        getattr(app, "exception_handlers", None) or {}
    )
    if isinstance(exc, HTTPException):
        handler = handlers.get(exc.status_code)
        if handler is not None:
            return handler
    for cls in type(exc).__mro__:
        if cls is Exception:
            break
        handler = handlers.get(cls)
        if handler is not None:
            return handler
    return None


def default_http_exception_response(exc: HTTPException) -> Response:
    """Starlette's own answer to an unhandled ``HTTPException``: plain text and its headers."""
    if exc.status_code in {204, 304}:
        return Response(status_code=exc.status_code, headers=exc.headers)
    return PlainTextResponse(str(exc.detail), status_code=exc.status_code, headers=exc.headers)


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

    HTTP: the handler's response is sent. WebSocket (before accept): the response is
    sent as a denial response when the server supports the ``websocket.http.response``
    extension; otherwise the handshake is closed with ``close_code``.
    """
    handler = lookup_exception_handler(scope.get("app"), exc)
    response: typing.Any
    if handler is not None:
        if is_async_callable(handler):
            response = await handler(connection, exc)
        else:
            response = await run_in_threadpool(handler, connection, exc)
    elif isinstance(exc, HTTPException):
        response = default_http_exception_response(exc)
    else:
        raise exc

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
        if message["type"] in _START_TYPES:
            decisions = state.get(DECISIONS_STATE_KEY)
            if decisions:
                use_legacy = legacy or bool(state.get(LEGACY_STATE_KEY))
                headers = [
                    (name, value)
                    for name, value in message.get("headers", ())
                    if name.lower().decode("latin-1") not in MANAGED_FIELDS
                ]
                for name, value in rate_limit_headers(decisions, legacy=use_legacy):
                    headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
                message = {**message, "headers": headers}
        await send(message)

    return sender
