"""ThrottleMiddleware and MiddlewareThrottle through real Starlette and FastAPI apps."""

from __future__ import annotations

import re
import typing

import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from traffik.backends.base import BACKEND_STATE_KEY
from traffik.backends.inmemory import InMemoryBackend
from traffik.exceptions import BackendConnectionError, ConfigurationError, ConnectionThrottled
from traffik.failures import FailurePolicy
from traffik.starlette import MiddlewareThrottle, ThrottleMiddleware
from traffik.throttles import HTTPThrottle, WebSocketThrottle

NOW = 1_699_999_980_000  # a multiple of 60 s: fixed windows start here


def fixed_backend(namespace: str = "mw") -> InMemoryBackend[typing.Any]:
    """A backend whose clock never moves: windows never roll over during a test."""
    return InMemoryBackend(namespace=namespace, clock=lambda: NOW)


async def ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def routes() -> list[Route]:
    return [
        Route("/api/a", ok, methods=["GET", "POST", "PUT"]),
        Route("/api/b", ok, methods=["GET", "POST"]),
        Route("/v1.0/x", ok),
        Route("/v1x0/x", ok),
        Route("/other", ok),
        Route("/x/api/", ok),
    ]


def starlette_app(
    throttles: list[typing.Any], backend: typing.Any = None, **options: typing.Any
) -> Starlette:
    backend = backend or fixed_backend()
    return Starlette(
        routes=routes(),
        middleware=[
            Middleware(
                ThrottleMiddleware, middleware_throttles=throttles, backend=backend, **options
            )
        ],
    )


# -- construction -------------------------------------------------------------


def test_methods_must_be_strings() -> None:
    throttle = HTTPThrottle("m", "5/m")
    with pytest.raises(TypeError, match="methods must contain strings"):
        MiddlewareThrottle(throttle, methods={"GET", 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not the single string"):
        MiddlewareThrottle(throttle, methods="GET")


def test_bad_path_and_prefix() -> None:
    throttle = HTTPThrottle("m", "5/m")
    with pytest.raises(ValueError, match="not a valid regular expression"):
        MiddlewareThrottle(throttle, path="/api/(")
    with pytest.raises(TypeError, match="path must be"):
        MiddlewareThrottle(throttle, path=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not both"):
        MiddlewareThrottle(throttle, path="/a", prefix="/a")
    with pytest.raises(TypeError, match="wraps a throttle"):
        MiddlewareThrottle("not a throttle")  # type: ignore[arg-type]


def test_middleware_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="'throttle' or 'pass'"):
        ThrottleMiddleware(ok, [], websocket="close")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a list"):
        ThrottleMiddleware(ok, MiddlewareThrottle(HTTPThrottle("m", "5/m")))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must contain MiddlewareThrottle"):
        ThrottleMiddleware(ok, ["nope"])  # type: ignore[list-item]


# -- matching -----------------------------------------------------------------


def test_whole_area_shares_one_budget_per_client() -> None:
    api = MiddlewareThrottle(HTTPThrottle("api_global", "3/m"), path="/api/")
    with TestClient(starlette_app([api])) as client:
        assert client.get("/api/a").status_code == 200
        assert client.post("/api/b").status_code == 200
        assert client.put("/api/a").status_code == 200
        # Third path/method combination used the last unit: the area is exhausted.
        assert client.get("/api/b").status_code == 429
        # Outside the area nothing is throttled.
        assert client.get("/other").status_code == 200


def test_area_throttles_see_the_real_request() -> None:
    seen: list[tuple[str, str]] = []

    async def identify(connection: HTTPConnection) -> str:
        seen.append((connection.scope["method"], connection.url.path))
        return "client"

    api = MiddlewareThrottle(HTTPThrottle("api_real", "2/m", identifier=identify), path="/api/")
    with TestClient(starlette_app([api])) as client:
        assert client.put("/api/a").status_code == 200
        assert client.post("/api/b").status_code == 200
        assert client.get("/api/a").status_code == 429
    # The identifier saw each request's own method and path, yet they shared one budget.
    assert seen == [("PUT", "/api/a"), ("POST", "/api/b"), ("GET", "/api/a")]


def test_per_path_keeps_the_seed_keying() -> None:
    api = MiddlewareThrottle(HTTPThrottle("api_pp", "1/m"), path="/api/", per_path=True)
    with TestClient(starlette_app([api])) as client:
        assert client.get("/api/a").status_code == 200
        assert client.get("/api/b").status_code == 200
        assert client.get("/api/a").status_code == 429


def test_regex_path_matches_at_start_with_regex_semantics() -> None:
    dotted = MiddlewareThrottle(HTTPThrottle("dotted", "1/m"), path="/v1.0")
    with TestClient(starlette_app([dotted])) as client:
        assert client.get("/v1.0/x").status_code == 200
        # "." matches any character: /v1x0 is in the same area.
        assert client.get("/v1x0/x").status_code == 429
    anchored = MiddlewareThrottle(HTTPThrottle("anchored", "1/m"), path="/api/")
    with TestClient(starlette_app([anchored])) as client:
        assert client.get("/x/api/").status_code == 200
        assert client.get("/x/api/").status_code == 200  # re.match: start only


def test_literal_prefix() -> None:
    literal = MiddlewareThrottle(HTTPThrottle("literal", "1/m"), prefix="/v1.0")
    with TestClient(starlette_app([literal])) as client:
        assert client.get("/v1x0/x").status_code == 200
        assert client.get("/v1x0/x").status_code == 200
        assert client.get("/v1.0/x").status_code == 200
        assert client.get("/v1.0/x").status_code == 429


def test_compiled_pattern_is_used_as_is() -> None:
    pattern = MiddlewareThrottle(HTTPThrottle("pat", "1/m"), path=re.compile(r"/api/[ab]$"))
    with TestClient(starlette_app([pattern])) as client:
        assert client.get("/api/a").status_code == 200
        assert client.get("/api/b").status_code == 429


def test_methods_are_case_insensitive() -> None:
    writes = MiddlewareThrottle(HTTPThrottle("writes", "1/m"), methods={"post", "Put"})
    with TestClient(starlette_app([writes])) as client:
        assert client.get("/api/a").status_code == 200
        assert client.get("/api/a").status_code == 200
        assert client.post("/api/a").status_code == 200
        assert client.put("/api/a").status_code == 429


@pytest.mark.parametrize("is_async", [True, False])
def test_hooks_sync_and_async(is_async: bool) -> None:
    def sync_hook(connection: HTTPConnection) -> bool:
        return connection.headers.get("authorization") is not None

    async def async_hook(connection: HTTPConnection) -> bool:
        return sync_hook(connection)

    hook = async_hook if is_async else sync_hook
    auth = MiddlewareThrottle(HTTPThrottle("auth", "1/m"), hook=hook)
    with TestClient(starlette_app([auth])) as client:
        assert client.get("/other").status_code == 200
        assert client.get("/other").status_code == 200
        assert client.get("/other", headers={"authorization": "x"}).status_code == 200
        assert client.get("/other", headers={"authorization": "x"}).status_code == 429


def test_order_first_refusal_stops_the_chain() -> None:
    strict = MiddlewareThrottle(HTTPThrottle("strict", "1/m"), prefix="/api/a")
    general = MiddlewareThrottle(HTTPThrottle("general", "3/m"), prefix="/api/")
    with TestClient(starlette_app([strict, general])) as client:
        first = client.get("/api/a")
        assert first.status_code == 200
        # Both matched and were charged: the fields list both policies.
        assert '"strict";r=0' in first.headers["ratelimit"]
        assert '"general";r=2' in first.headers["ratelimit"]
        # Refused by "strict": "general" is not charged for refused requests.
        for _ in range(3):
            assert client.get("/api/a").status_code == 429
        allowed = client.get("/api/b")
        assert allowed.status_code == 200
        assert allowed.headers["ratelimit"] == '"general";r=1;t=60'


def test_bare_throttles_are_accepted_and_apply_everywhere() -> None:
    with TestClient(starlette_app([HTTPThrottle("everything", "1/m")])) as client:
        assert client.get("/other").status_code == 200
        assert client.get("/api/a").status_code == 429


# -- responses ----------------------------------------------------------------


def test_starlette_denial_is_plain_text_with_headers() -> None:
    api = MiddlewareThrottle(HTTPThrottle("plain", "1/m"))
    with TestClient(starlette_app([api])) as client:
        allowed = client.get("/other")
        assert allowed.headers["ratelimit-policy"] == '"plain";q=1;w=60'
        assert allowed.headers["ratelimit"] == '"plain";r=0;t=60'
        refused = client.get("/other")
    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith("text/plain")
    assert refused.headers["retry-after"] == "60"
    assert refused.text.startswith("Too many requests")
    # Exactly one of each field, even though the 429 already carried them.
    assert refused.headers.get_list("ratelimit") == ['"plain";r=0;t=60']
    assert refused.headers.get_list("ratelimit-policy") == ['"plain";q=1;w=60']


def test_fastapi_denial_is_json() -> None:
    app = FastAPI()
    backend = fixed_backend()

    @app.get("/x")
    async def x() -> dict[str, str]:
        return {"ok": "yes"}

    app.add_middleware(
        ThrottleMiddleware,
        middleware_throttles=[MiddlewareThrottle(HTTPThrottle("json", "1/m"))],
        backend=backend,
    )
    with TestClient(app) as client:
        assert client.get("/x").status_code == 200
        refused = client.get("/x")
    assert refused.status_code == 429
    assert refused.json() == {"detail": "Too many requests. Retry in 60 seconds."}
    assert refused.headers["retry-after"] == "60"


def test_custom_class_handler_and_status_handler() -> None:
    async def by_class(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ConnectionThrottled)
        return JSONResponse(
            {"error": "rate_limit_exceeded", "retry_after_seconds": exc.retry_after},
            status_code=429,
            headers={"Retry-After": str(exc.retry_after)},
        )

    def by_status(request: Request, exc: Exception) -> PlainTextResponse:  # sync: threadpool
        return PlainTextResponse("slow down", status_code=429)

    backend = fixed_backend()
    throttles = [MiddlewareThrottle(HTTPThrottle("custom", "1/m"))]
    app = Starlette(
        routes=routes(),
        middleware=[
            Middleware(ThrottleMiddleware, middleware_throttles=throttles, backend=backend)
        ],
        exception_handlers={ConnectionThrottled: by_class},
    )
    with TestClient(app) as client:
        client.get("/other")
        refused = client.get("/other")
    assert refused.json() == {"error": "rate_limit_exceeded", "retry_after_seconds": 60}
    assert refused.headers["ratelimit"] == '"custom";r=0;t=60'

    app = Starlette(
        routes=routes(),
        middleware=[
            Middleware(ThrottleMiddleware, middleware_throttles=throttles, backend=backend)
        ],
        exception_handlers={ConnectionThrottled: by_class, 429: by_status},
    )
    with TestClient(app) as client:
        refused = client.get("/other")
    assert refused.text == "slow down"


def test_handler_raising_a_plain_http_exception() -> None:
    async def custom(
        connection: HTTPConnection, wait_ms: float, *args: object, **kw: object
    ) -> None:
        raise HTTPException(status_code=503, detail="busy")

    throttle = HTTPThrottle("busy", "1/m", handle_throttled=custom)
    with TestClient(starlette_app([MiddlewareThrottle(throttle)])) as client:
        client.get("/other")
        refused = client.get("/other")
    assert (refused.status_code, refused.text) == (503, "busy")


def test_route_and_middleware_decisions_combine_in_one_field_list() -> None:
    route_throttle = HTTPThrottle("route", "5/m")

    async def limited(request: Request) -> PlainTextResponse:
        await route_throttle(request)
        return PlainTextResponse("ok")

    backend = fixed_backend()
    app = Starlette(
        routes=[Route("/limited", limited)],
        middleware=[
            Middleware(
                ThrottleMiddleware,
                middleware_throttles=[MiddlewareThrottle(HTTPThrottle("area", "10/m"))],
                backend=backend,
            )
        ],
        lifespan=backend.lifespan,
    )
    with TestClient(app) as client:
        response = client.get("/limited")
    assert response.headers.get_list("ratelimit") == ['"route";r=4;t=60,"area";r=9;t=60']
    assert response.headers.get_list("ratelimit-policy") == ['"route";q=5;w=60,"area";q=10;w=60']


def test_legacy_and_disabled_headers() -> None:
    throttles = [MiddlewareThrottle(HTTPThrottle("legacy", "2/m"))]
    with TestClient(starlette_app(throttles, legacy_headers=True)) as client:
        response = client.get("/other")
    assert response.headers["x-ratelimit-limit"] == "2"
    assert response.headers["x-ratelimit-remaining"] == "1"
    with TestClient(starlette_app(throttles, fixed_backend("h"), headers=False)) as client:
        response = client.get("/other")
    assert "ratelimit" not in response.headers


# -- backends -----------------------------------------------------------------


def test_backend_from_the_app_lifespan() -> None:
    backend = fixed_backend("life")
    app = Starlette(
        routes=routes(),
        middleware=[
            Middleware(
                ThrottleMiddleware,
                middleware_throttles=[MiddlewareThrottle(HTTPThrottle("life", "1/m"))],
            )
        ],
        lifespan=backend.lifespan,
    )
    with TestClient(app) as client:
        assert getattr(app.state, BACKEND_STATE_KEY) is backend
        assert client.get("/other").status_code == 200
        assert client.get("/other").status_code == 429


def test_explicit_backend_is_initialised_once_without_lifespan() -> None:
    backend = fixed_backend("lazy")
    calls = 0
    original = backend.initialize

    async def counting_initialize() -> None:
        nonlocal calls
        calls += 1
        await original()

    backend.initialize = counting_initialize  # type: ignore[method-assign]
    with TestClient(starlette_app([HTTPThrottle("lazy", "2/m")], backend)) as client:
        assert client.get("/other").status_code == 200
        assert client.get("/other").status_code == 200
        assert client.get("/other").status_code == 429
    assert calls == 1


def test_no_backend_fails_the_startup_with_a_configuration_error() -> None:
    app = Starlette(
        routes=routes(),
        middleware=[
            Middleware(ThrottleMiddleware, middleware_throttles=[HTTPThrottle("none", "1/m")])
        ],
    )
    with (
        pytest.raises(ConfigurationError, match=r"no backend: throttle 'none' \(middleware\)"),
        TestClient(app),
    ):
        pass


def test_no_backend_without_a_lifespan_is_a_configuration_error_on_the_request() -> None:
    # No lifespan run (an ASGI test transport, say): nothing to check at startup.
    app = Starlette(
        routes=routes(),
        middleware=[
            Middleware(ThrottleMiddleware, middleware_throttles=[HTTPThrottle("none", "1/m")])
        ],
    )
    client = TestClient(app)
    with pytest.raises(ConfigurationError, match="No backend"):
        client.get("/other")


# -- scopes -------------------------------------------------------------------


def test_lifespan_and_unknown_scopes_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: typing.Any, receive: typing.Any, send: typing.Any) -> None:
        seen.append(scope["type"])

    middleware = ThrottleMiddleware(app, [HTTPThrottle("x", "1/m")], backend=fixed_backend())
    import asyncio

    async def noop() -> dict[str, str]:
        return {}

    async def nosend(message: typing.Any) -> None:
        return None

    asyncio.run(middleware({"type": "lifespan"}, noop, nosend))
    asyncio.run(middleware({"type": "custom"}, noop, nosend))
    assert seen == ["lifespan", "custom"]


def ws_app(throttles: list[typing.Any], **options: typing.Any) -> Starlette:
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    return Starlette(
        routes=[WebSocketRoute("/ws", echo), Route("/other", ok)],
        middleware=[
            Middleware(
                ThrottleMiddleware,
                middleware_throttles=throttles,
                backend=fixed_backend("ws"),
                **options,
            )
        ],
    )


def test_websocket_throttled_at_connect_with_denial_response() -> None:
    from starlette.testclient import WebSocketDenialResponse

    app = ws_app([MiddlewareThrottle(WebSocketThrottle("ws", "1/m"))])
    with TestClient(app) as client:
        with client.websocket_connect("/ws") as ws:
            assert ws.receive_text() == "hello"
        with pytest.raises(WebSocketDenialResponse) as denied, client.websocket_connect("/ws"):
            pass
        # HTTP throttles of the same middleware do not apply to WebSockets and back.
        assert client.get("/other").status_code == 200
    assert denied.value.status_code == 429
    assert denied.value.headers["retry-after"] == "60"
    assert denied.value.headers["ratelimit"] == '"ws";r=0;t=60'


def test_websocket_accept_carries_the_fields() -> None:
    sent: list[dict[str, typing.Any]] = []

    async def app(scope: typing.Any, receive: typing.Any, send: typing.Any) -> None:
        await send({"type": "websocket.accept"})

    async def receive() -> dict[str, str]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, typing.Any]) -> None:
        sent.append(message)

    import asyncio

    backend = fixed_backend("wsa")
    middleware = ThrottleMiddleware(app, [WebSocketThrottle("wsa", "2/m")], backend=backend)
    scope = {"type": "websocket", "path": "/ws", "client": ("1.2.3.4", 5), "headers": []}
    asyncio.run(middleware(scope, receive, send))
    assert sent[0]["type"] == "websocket.accept"
    assert (b"ratelimit", b'"wsa";r=1;t=60') in sent[0]["headers"]


def test_websocket_closed_with_1013_without_denial_extension() -> None:
    import asyncio

    reached: list[bool] = []

    async def app(scope: typing.Any, receive: typing.Any, send: typing.Any) -> None:
        reached.append(True)
        await send({"type": "websocket.accept"})

    sent: list[dict[str, typing.Any]] = []

    async def receive() -> dict[str, str]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, typing.Any]) -> None:
        sent.append(message)

    middleware = ThrottleMiddleware(
        app, [WebSocketThrottle("ws13", "1/m")], backend=fixed_backend()
    )
    scope = {"type": "websocket", "path": "/ws", "client": ("1.2.3.4", 5), "headers": []}
    asyncio.run(middleware(dict(scope), receive, send))
    asyncio.run(middleware(dict(scope), receive, send))
    assert len(reached) == 1
    assert sent[-1]["type"] == "websocket.close"
    assert sent[-1]["code"] == 1013
    assert sent[-1]["reason"].startswith("Too many requests")


def test_websocket_pass_through_option() -> None:
    app = ws_app([MiddlewareThrottle(WebSocketThrottle("wsp", "1/m"))], websocket="pass")
    with TestClient(app) as client:
        for _ in range(3):
            with client.websocket_connect("/ws") as ws:
                assert ws.receive_text() == "hello"


def test_websocket_handler_may_close_itself() -> None:
    async def close_handler(websocket: WebSocket, exc: Exception) -> None:
        await websocket.close(code=1008, reason="policy")

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close()

    app = Starlette(
        routes=[WebSocketRoute("/ws", echo)],
        middleware=[
            Middleware(
                ThrottleMiddleware,
                middleware_throttles=[WebSocketThrottle("wsc", "1/m")],
                backend=fixed_backend(),
            )
        ],
        exception_handlers={ConnectionThrottled: close_handler},
    )
    with TestClient(app) as client:
        with client.websocket_connect("/ws"):
            pass
        with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect("/ws"):
            pass
    assert closed.value.code == 1008


@pytest.mark.asyncio
async def test_middleware_throttle_called_directly() -> None:
    """The traffik 1.0.0b2 API: ``await middleware_throttle(connection)`` applies the rules."""
    backend = fixed_backend("direct")
    mt = MiddlewareThrottle(HTTPThrottle("direct", "1/m"), prefix="/api/", methods={"GET"})

    def request(path: str, method: str = "GET") -> Request:
        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "headers": [],
            "client": ("10.0.0.1", 1234),
        }
        return Request(scope)

    async with backend():
        assert await mt(request("/other")) is not None  # not matched: nothing charged
        await mt(request("/api/x", "POST"))
        first = request("/api/x")
        assert await mt(first) is first
        with pytest.raises(ConnectionThrottled):
            await mt(request("/api/y"))  # same area


@pytest.mark.asyncio
async def test_middleware_throttle_on_a_websocket_uses_its_public_channels() -> None:
    """A handler that closes the handshake sends through the WebSocket it was handed
    (its public ``send``), so the original WebSocket's state follows: no private
    ``_send``/``_receive`` is read."""
    sent: list[typing.Any] = []

    async def receive() -> typing.Any:
        return {"type": "websocket.connect"}

    async def send(message: typing.Any) -> None:
        sent.append(message)

    async def close_instead(
        connection: typing.Any, wait_ms: float, *args: object, **kw: object
    ) -> None:
        await connection.close(code=1008)

    throttle = WebSocketThrottle("direct-ws", "1/m", handle_throttled=close_instead)
    mt = MiddlewareThrottle(throttle, prefix="/ws")
    scope = {"type": "websocket", "path": "/ws", "headers": [], "client": ("10.0.0.2", 1)}
    websocket = WebSocket(scope, receive, send)
    async with fixed_backend("direct-ws")():
        assert await mt(websocket) is websocket
        assert sent == []
        await mt(websocket)  # refused: the handler closes the handshake
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": ""}]
    with pytest.raises(RuntimeError):
        await websocket.send({"type": "websocket.close"})  # the original saw the close


# -- a backend that cannot be reached -------------------------------------------


class UnreachableBackend(InMemoryBackend[typing.Any]):
    """Its server is down: initialize() fails, like a RedisBackend on a dead port."""

    attempts = 0

    async def initialize(self) -> None:
        type(self).attempts += 1
        raise BackendConnectionError("The test server is down.")


def test_an_explicit_backend_that_cannot_connect_answers_by_its_failure_policy() -> None:
    # As with backend(app) / backend.lifespan: the app serves, throttles answer by
    # the backend's failure policy (here the local fallback limiter), and the
    # connection is not retried on every request (each retry can wait out a timeout).
    UnreachableBackend.attempts = 0
    backend = UnreachableBackend(namespace="down", failure_policy=FailurePolicy())
    app = starlette_app([MiddlewareThrottle(HTTPThrottle("down", "3/m"))], backend=backend)
    with TestClient(app) as client:
        statuses = [client.get("/other").status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert UnreachableBackend.attempts == 1


def test_an_explicit_backend_with_the_raise_policy_still_raises() -> None:
    backend = UnreachableBackend(namespace="down", failure_policy=FailurePolicy(on_error="raise"))
    app = starlette_app([MiddlewareThrottle(HTTPThrottle("down", "3/m"))], backend=backend)
    with TestClient(app) as client, pytest.raises(BackendConnectionError):
        client.get("/other")
