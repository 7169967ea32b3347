"""``ThrottleMiddleware``: throttle whole areas of an app before routing, in pure ASGI."""

from __future__ import annotations

import typing

from starlette.requests import Request
from starlette.websockets import WebSocket
from traffik.backends.base import initialize_by_policy, throttle_backend_ctx
from traffik.charging import charge_by_status
from traffik.checks import check_backends
from traffik.keys import ROUTE_KEY_SCOPE
from traffik.lifecycle import observe
from traffik.starlette._responses import WS_TRY_AGAIN_LATER, handle_exception, rate_limit_sender
from traffik.starlette.throttle import MiddlewareThrottle
from traffik.throttles import BaseThrottle

if typing.TYPE_CHECKING:
    from collections.abc import Sequence

    from starlette.requests import HTTPConnection
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
    from traffik.backends.base import ThrottleBackend

__all__ = ["ThrottleMiddleware"]

_UNSET: typing.Any = object()


WebSocketMode = typing.Literal["throttle", "pass"]


class ThrottleMiddleware:
    """Apply :class:`MiddlewareThrottle` rules to every HTTP request and WebSocket handshake.

    Throttles are tried **in list order**; every matching one is charged, and the
    first that refuses stops the chain (put the most specific first). A refusal goes
    through the app's exception handlers exactly as if a route had raised it (a
    handler for the status code first, then by exception class; Starlette answers a
    plain-text 429, FastAPI JSON). Responses that get through carry the RateLimit
    fields of every decision taken for the request, the route's throttles included.

    ``backend``: the backend for throttles that have none of their own; by default
    the one the app's lifespan registered (``backend(app)`` / ``backend.lifespan``).
    An explicit backend is initialised on first use; no backend context is entered
    per request.

    WebSocket handshakes (``websocket="throttle"``, the default) are throttled before
    the app accepts them. A refused handshake is answered with an HTTP 429 denial
    response when the server supports the ``websocket.http.response`` extension, and
    otherwise closed with code 1013 "Try Again Later" (``websocket_close_code``; a
    server closing a handshake that was never accepted shows the client an HTTP 403).
    ``websocket="pass"`` lets every WebSocket through untouched, as traffik 1.0.0b2 did.
    Lifespan and other scopes always pass through; when the app has started, the
    middleware checks that every throttle of its rules and of the app's routes has a
    backend (:func:`traffik.checks.check_backends`) and fails the startup, naming
    them, if not: a forgotten ``lifespan=backend.lifespan`` shows at startup, not as
    a 500 on the first request.

    Per request the middleware builds at most one ``Request`` (or ``WebSocket``),
    only when a rule matches, and shares it with every matching throttle; the rules
    are checked on the scope. With ``headers=True`` the ``send`` wrapper checks the
    message type and merges the fields on the response start
    (:func:`traffik.headers.message_with_fields`).
    """

    def __init__(
        self,
        app: ASGIApp,
        middleware_throttles: Sequence[MiddlewareThrottle | BaseThrottle[typing.Any]] = (),
        backend: ThrottleBackend[typing.Any, typing.Any] | None = None,
        *,
        websocket: WebSocketMode = "throttle",
        websocket_close_code: int = WS_TRY_AGAIN_LATER,
        headers: bool = True,
        legacy_headers: bool = False,
    ) -> None:
        if websocket not in ("throttle", "pass"):
            raise ValueError(f"websocket must be 'throttle' or 'pass', got {websocket!r}.")
        if isinstance(middleware_throttles, (MiddlewareThrottle, BaseThrottle)):
            raise TypeError(
                "middleware_throttles must be a list, e.g. middleware_throttles=[MiddlewareThrottle(throttle)]."
            )
        throttles: list[MiddlewareThrottle] = []
        for item in middleware_throttles:
            if isinstance(item, BaseThrottle):
                item = MiddlewareThrottle(item)
            if not isinstance(item, MiddlewareThrottle):
                raise TypeError(
                    f"middleware_throttles must contain MiddlewareThrottle (or throttle) objects, got {item!r}."
                )
            throttles.append(item)
        self.app = app
        self.middleware_throttles = tuple(throttles)
        self.backend = backend
        self.websocket = websocket
        self.websocket_close_code = websocket_close_code
        self.headers = headers
        self.legacy_headers = legacy_headers
        # Per scope type, the throttles that can apply (built once); a type missing
        # here (lifespan, or websocket="pass") passes through untouched.
        self._by_type: dict[str, tuple[MiddlewareThrottle, ...]] = {
            "http": tuple(t for t in throttles if t.applies_to("http"))
        }
        if websocket == "throttle":
            self._by_type["websocket"] = tuple(t for t in throttles if t.applies_to("websocket"))
        self._initialized = backend is None
        # Throttles acting on the response lifecycle (traffik.lifecycle) need the
        # connection observed from here; others pay nothing for it.
        self._observe = any(t.needs_lifecycle for t in throttles)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._observe:
            if self.headers and scope["type"] in self._by_type:
                # The fields are merged outside the observer: status callbacks (a
                # charge_when refund) run first, so the response shows their effect.
                if "state" not in scope:
                    scope["state"] = {}
                send = rate_limit_sender(scope, send, legacy=self.legacy_headers)
                await observe(self._handle_sent, scope, receive, send)
            else:
                await observe(self._handle, scope, receive, send)
        else:
            await self._handle(scope, receive, send)

    async def _handle_sent(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._handle(scope, receive, send, fields=False)

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, *, fields: bool = True
    ) -> None:
        # Per request: one state dict, one cheap send wrapper (headers=True), the rules
        # checked on the scope, one Request/WebSocket only when a rule matches, and
        # each matching throttle called directly (its area named on the scope).
        candidates = self._by_type.get(scope["type"])
        if candidates is None:
            if scope["type"] == "lifespan":
                send = self._startup_checker(scope, send)
            await self.app(scope, receive, send)
            return
        # The same state dict for every layer below, so decisions recorded by route
        # throttles are visible here even if a layer copies the scope.
        if "state" not in scope:
            scope["state"] = {}
        if self.headers and fields:
            send = rate_limit_sender(scope, send, legacy=self.legacy_headers)
        connection: HTTPConnection | None = None
        token = None
        area = _UNSET
        try:
            for rule in candidates:
                if not rule.matches(scope):
                    continue
                if connection is None:
                    area = scope.get(ROUTE_KEY_SCOPE, _UNSET)
                    connection = (
                        Request(scope, receive, send)
                        if scope["type"] == "http"
                        else WebSocket(scope, receive, send)
                    )
                    backend = self.backend
                    if backend is not None:
                        # Otherwise throttles resolve the app's backend themselves.
                        if not self._initialized:
                            await self._initialize(backend)
                        token = throttle_backend_ctx.set(backend)
                if rule.hook is not None and not await rule.hook_allows(connection):
                    continue
                # What MiddlewareThrottle.hit does, without a call per rule: unless
                # per_path, the rule's area is the route part of the key.
                if rule.per_path:
                    if area is _UNSET:
                        scope.pop(ROUTE_KEY_SCOPE, None)
                    else:
                        scope[ROUTE_KEY_SCOPE] = area
                else:
                    scope[ROUTE_KEY_SCOPE] = rule._area
                await rule.throttle(connection)
                if rule.charge_when is not None:
                    charge_by_status(rule.throttle, connection, rule.charge_when)
        except Exception as exc:
            if token is not None:
                throttle_backend_ctx.reset(token)
                token = None
            self._restore_area(scope, area)
            assert connection is not None  # a rule matched: only throttles raise here
            await handle_exception(
                connection, exc, scope, receive, send, close_code=self.websocket_close_code
            )
            return
        finally:
            if token is not None:
                throttle_backend_ctx.reset(token)
        if connection is not None:
            if area is _UNSET:
                scope.pop(ROUTE_KEY_SCOPE, None)
            else:
                scope[ROUTE_KEY_SCOPE] = area
        await self.app(scope, receive, send)

    def _startup_checker(self, scope: Scope, send: Send) -> Send:
        """``send`` that, once the app has started, fails the startup if a throttle of
        the app or of these rules would have no backend (a forgotten lifespan)."""

        async def checked(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                rules = [("middleware", rule.throttle) for rule in self.middleware_throttles]
                # Raised into the app's lifespan, which then reports the startup as
                # failed (Starlette sends lifespan.startup.failed) and unwinds it.
                check_backends(scope.get("app"), rules, backend=self.backend)
            await send(message)

        return checked

    @staticmethod
    def _restore_area(scope: Scope, area: typing.Any) -> None:
        if area is _UNSET:
            scope.pop(ROUTE_KEY_SCOPE, None)
        else:
            scope[ROUTE_KEY_SCOPE] = area

    async def _initialize(self, backend: ThrottleBackend[typing.Any, typing.Any]) -> None:
        # initialize() is idempotent, so two first requests racing here are harmless. As
        # backend(app) does, an unreachable backend is not retried per request (each
        # attempt could wait out the connect timeout): its failure policy answers.
        await initialize_by_policy(backend)
        self._initialized = True
