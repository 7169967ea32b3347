"""HTTPThrottle / WebSocketThrottle through real Starlette and FastAPI apps."""

from __future__ import annotations

import typing

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket

from traffik import UNLIMITED
from traffik.backends.inmemory import InMemoryBackend
from traffik.decisions import Decision
from traffik.exceptions import ConfigurationError, ConnectionThrottled
from traffik.headers import RateLimitHeadersMiddleware, get_decisions
from traffik.rates import Rate
from traffik.strategies import BUILTIN_STRATEGIES
from traffik.throttles import BaseThrottle, HTTPThrottle, WebSocketThrottle


class FakeClock:
    """A settable millisecond clock."""

    def __init__(self, now: int = 1_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def client(app: typing.Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


def starlette_app(
    *throttles: HTTPThrottle, path: str = "/r", headers_mw: bool = False
) -> Starlette:
    async def endpoint(request: Request) -> JSONResponse:
        for throttle in throttles:
            await throttle(request)
        return JSONResponse({"ok": True})

    middleware = [Middleware(RateLimitHeadersMiddleware)] if headers_mw else []
    return Starlette(routes=[Route(path, endpoint, methods=["GET", "POST"])], middleware=middleware)


# -- construction ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"uid": "", "rate": "5/m"},
        {"uid": None, "rate": "5/m"},
        {"uid": "x", "rate": "5/lightyear"},
        {"uid": "x", "rate": "0/m"},
        {"uid": "x", "rate": 5},
        {"uid": "x", "rate": "5/m", "cost": 0},
        {"uid": "x", "rate": "5/m", "cost": -3},
        {"uid": "x", "rate": "5/m", "cost": 1.5},
        {"uid": "x", "rate": "5/m", "min_wait_period": -1},
        {"uid": "x", "rate": "5/m", "key_by": "host"},
        {"uid": "x", "rate": "5/m", "strategy": "fixed"},
        {"uid": "x", "rate": "5/m", "context_backend": True, "backend": InMemoryBackend()},
    ],
)
def test_bad_configuration_raises_value_error_at_construction(
    kwargs: dict[str, typing.Any],
) -> None:
    with pytest.raises(ValueError):
        HTTPThrottle(**kwargs)


def test_unknown_failure_action_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="on_error"):
        HTTPThrottle("x", "5/m", on_backend_error="ignore")


def test_attributes_follow_the_seed() -> None:
    throttle = HTTPThrottle("api", "5/10s", cost=2, min_wait_period=1500, headers={"X-A": "1"})
    assert throttle.uid == "api"
    assert throttle.rate == Rate(limit=5, seconds=10)
    assert (throttle.cost, throttle.min_wait_period, throttle.headers) == (2, 1500, {"X-A": "1"})
    assert throttle.backend is None
    assert throttle.context_backend is False
    assert throttle.hit.__name__ == "__call__"
    assert isinstance(throttle, BaseThrottle)


@pytest.mark.asyncio
async def test_no_backend_is_a_configuration_error_saying_how_to_provide_one() -> None:
    app = starlette_app(HTTPThrottle("nob", "5/m"))
    async with client(app) as c:
        with pytest.raises(ConfigurationError, match="lifespan"):
            await c.get("/r")


@pytest.mark.asyncio
async def test_per_call_cost_must_be_positive() -> None:
    backend = InMemoryBackend(namespace="t-cost", clock=FakeClock())
    throttle = HTTPThrottle("c", "5/m")
    seen: list[str] = []

    async def endpoint(request: Request) -> PlainTextResponse:
        for cost in (0, -100, True):
            try:
                await throttle(request, cost=cost)
            except ValueError:
                seen.append("refused")
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/c", endpoint)])
    async with backend(app), client(app) as c:
        assert (await c.get("/c")).status_code == 200
    assert seen == ["refused"] * 3


# -- Retry-After and the clock ---------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "strategy", [None, *BUILTIN_STRATEGIES], ids=lambda s: getattr(s, "name", "default")
)
async def test_waiting_exactly_retry_after_is_admitted_and_earlier_is_not(
    strategy: typing.Any,
) -> None:
    clock = FakeClock(1_000_000 + 3_700)
    backend = InMemoryBackend(namespace="t-retry", clock=clock)
    app = starlette_app(HTTPThrottle("ra", "2/10s", strategy=strategy))
    async with backend(app), client(app) as c:
        assert [(await c.get("/r")).status_code for _ in range(2)] == [200, 200]
        refused = await c.get("/r")
        assert refused.status_code == 429
        retry_after = int(refused.headers["Retry-After"])
        assert retry_after >= 1
        start = clock.now
        clock.now = start + retry_after * 1000 - 1000  # one second early
        assert (await c.get("/r")).status_code == 429
        clock.now = start + retry_after * 1000
        assert (await c.get("/r")).status_code == 200


@pytest.mark.asyncio
async def test_retry_after_rounds_up() -> None:
    clock = FakeClock(10_000 * 1000 + 8_001)  # 1999 ms before the 10 s boundary
    backend = InMemoryBackend(namespace="t-ceil", clock=clock)
    app = starlette_app(HTTPThrottle("ceil", "1/10s"))
    async with backend(app), client(app) as c:
        await c.get("/r")
        refused = await c.get("/r")
    assert refused.headers["Retry-After"] == "2"
    assert refused.headers["RateLimit"] == '"ceil";r=0;t=2'


@pytest.mark.asyncio
async def test_min_wait_period_only_lengthens_the_wait_of_a_throttled_request() -> None:
    clock = FakeClock(60_000 * 100)
    backend = InMemoryBackend(namespace="t-minwait", clock=clock)
    app = starlette_app(HTTPThrottle("mw", "2/s", min_wait_period=5_000))
    async with backend(app), client(app) as c:
        assert [(await c.get("/r")).status_code for _ in range(2)] == [200, 200]
        refused = await c.get("/r")
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "5"

    long_wait = starlette_app(HTTPThrottle("mw2", "1/m", min_wait_period=1_000))
    async with backend(long_wait), client(long_wait) as c:
        await c.get("/r")
        assert (await c.get("/r")).headers["Retry-After"] == "60"


@pytest.mark.asyncio
async def test_never_admissible_cost_is_429_without_retry_after() -> None:
    backend = InMemoryBackend(namespace="t-never", clock=FakeClock())
    throttle = HTTPThrottle("nv", "5/m")

    async def endpoint(request: Request) -> PlainTextResponse:
        await throttle(request, cost=6)
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/n", endpoint)])
    async with backend(app), client(app) as c:
        response = await c.get("/n")
    assert response.status_code == 429
    assert "Retry-After" not in response.headers
    assert "costs more than the quota" in response.text
    assert response.headers["RateLimit-Policy"] == '"nv";q=5;w=60'


# -- FastAPI dependency injection ----------------------------------------------------------


def fastapi_app(*throttles: HTTPThrottle) -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}", dependencies=[Depends(t) for t in throttles])
    async def item(item_id: int) -> dict[str, int]:
        return {"item": item_id}

    @app.get("/raw", dependencies=[Depends(t) for t in throttles])
    async def raw() -> PlainTextResponse:
        return PlainTextResponse("raw")

    @app.get("/returns-request")
    async def returns_request(request: Request = Depends(throttles[0])) -> dict[str, str]:
        return {"path": request.url.path}

    return app


def test_openapi_has_no_cost_or_context_key_parameter() -> None:
    http = HTTPThrottle("oa", "5/m")
    ws = WebSocketThrottle("oaws", "5/m")
    app = fastapi_app(http)

    @app.websocket("/ws")
    async def ws_endpoint(websocket: WebSocket, _: WebSocket = Depends(ws)) -> None:
        await websocket.close()

    schema = app.openapi()
    for path in schema["paths"].values():
        for operation in path.values():
            names = {p["name"] for p in operation.get("parameters", [])}
            assert not names & {
                "cost",
                "context_key",
                "connection",
                "request",
                "response",
                "args",
                "kwargs",
            }
            assert "requestBody" not in operation


@pytest.mark.asyncio
async def test_cost_query_parameter_does_nothing() -> None:
    backend = InMemoryBackend(namespace="t-qcost", clock=FakeClock(0))
    app = fastapi_app(HTTPThrottle("q", "3/m"))
    async with backend(app), client(app) as c:
        codes = [(await c.get("/items/1?cost=-100")).status_code for _ in range(3)]
        codes += [(await c.get("/items/1?cost=-100&context_key=x")).status_code for _ in range(2)]
    assert codes == [200, 200, 200, 429, 429]


@pytest.mark.asyncio
async def test_depends_headers_on_allowed_and_throttled_responses_single_and_stacked() -> None:
    backend = InMemoryBackend(namespace="t-dephdr", clock=FakeClock(0))
    app = fastapi_app(HTTPThrottle("burst", "2/m"), HTTPThrottle("sustained", "100/h"))
    async with backend(app), client(app) as c:
        ok = await c.get("/items/1")
        assert ok.json() == {"item": 1}
        assert ok.headers["RateLimit-Policy"] == '"burst";q=2;w=60,"sustained";q=100;w=3600'
        assert ok.headers["RateLimit"] == '"burst";r=1;t=60,"sustained";r=99;t=3600'
        ok2 = await c.get("/items/2")  # same route template: same budget
        assert ok2.headers["RateLimit"] == '"burst";r=0;t=60,"sustained";r=98;t=3600'
        refused = await c.get("/items/3")
        assert refused.status_code == 429
        assert refused.json() == {"detail": "Too many requests. Retry in 60 seconds."}
        assert refused.headers["Retry-After"] == "60"
        assert refused.headers["RateLimit"] == '"burst";r=0;t=60'

    single = fastapi_app(HTTPThrottle("solo", "5/m"))
    async with backend(single), client(single) as c:
        response = await c.get("/items/7")
        assert response.headers["RateLimit"] == '"solo";r=4;t=60'
        assert response.headers["RateLimit-Policy"] == '"solo";q=5;w=60'


@pytest.mark.asyncio
async def test_route_returning_a_response_gets_headers_from_the_middleware() -> None:
    backend = InMemoryBackend(namespace="t-rawresp", clock=FakeClock(0))
    app = fastapi_app(HTTPThrottle("rr", "5/m"))
    async with backend(app), client(app) as c:
        without = await c.get("/raw")
    assert "RateLimit" not in without.headers  # FastAPI drops the injected response's headers

    app = fastapi_app(HTTPThrottle("rr2", "5/m"))
    app.add_middleware(RateLimitHeadersMiddleware)
    async with backend(app), client(app) as c:
        with_mw = await c.get("/raw")
    assert with_mw.text == "raw"
    assert with_mw.headers["RateLimit"] == '"rr2";r=4;t=60'


@pytest.mark.asyncio
async def test_dependency_returns_the_request() -> None:
    backend = InMemoryBackend(namespace="t-retreq", clock=FakeClock())
    app = fastapi_app(HTTPThrottle("rq", "5/m"))
    async with backend(app), client(app) as c:
        assert (await c.get("/returns-request")).json() == {"path": "/returns-request"}


# -- keys ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_route_template_keys_share_and_key_by_path_separates() -> None:
    backend = InMemoryBackend(namespace="t-route", clock=FakeClock(0))
    for key_by, expected in (("route", [200, 429]), ("path", [200, 200])):
        throttle = HTTPThrottle(f"k-{key_by}", "1/m", key_by=key_by)

        async def endpoint(
            request: Request, throttle: HTTPThrottle = throttle
        ) -> PlainTextResponse:
            await throttle(request)
            return PlainTextResponse("ok")

        app = Starlette(routes=[Route("/items/{id}", endpoint)])
        async with backend(app), client(app) as c:
            assert [(await c.get(f"/items/{i}")).status_code for i in (1, 2)] == expected


@pytest.mark.asyncio
async def test_methods_have_separate_budgets() -> None:
    backend = InMemoryBackend(namespace="t-methods", clock=FakeClock(0))
    app = starlette_app(HTTPThrottle("m", "1/m"))
    async with backend(app), client(app) as c:
        assert (await c.get("/r")).status_code == 200
        assert (await c.post("/r")).status_code == 200
        assert (await c.get("/r")).status_code == 429


@pytest.mark.asyncio
async def test_keys_are_bounded_and_digests_cannot_collide_with_literals() -> None:
    keys: list[str] = []

    async def recording_strategy(
        key: typing.Any, rate: Rate, backend: typing.Any, cost: int = 1
    ) -> float:
        keys.append(str(key))
        return 0.0

    identities = iter(["user:42", "x" * 300, "has space", "{tag}", "#" + "0" * 32])

    async def identifier(connection: HTTPConnection) -> str:
        return next(identities)

    throttle = HTTPThrottle(
        "bound", "5/m", identifier=identifier, strategy=recording_strategy, key_by="path"
    )

    async def endpoint(request: Request) -> PlainTextResponse:
        await throttle(request)
        return PlainTextResponse("ok")

    backend = InMemoryBackend(namespace="t-bound")
    app = Starlette(routes=[Route("/{rest:path}", endpoint)])
    async with backend(app), client(app) as c:
        for path in ("/a/b", "/" + "p" * 300, "/with%20space", "/%7Bx%7D", "/ok"):
            assert (await c.get(path)).status_code == 200
    assert keys[0] == "bound:GET/a/b:user:42"
    for key in keys:
        assert len(key) < 200
        assert not set(key) & set(" {}\r\n\t")
    assert len(set(keys)) == len(keys)
    assert keys[1].startswith("bound:GET#")
    assert keys[1].count("#") == 2
    # An identity that looks like a digest is itself digested: it never equals one.
    assert keys[4].startswith("bound:GET/ok:#")
    assert keys[4] != "bound:GET/ok:#" + "0" * 32


@pytest.mark.asyncio
async def test_custom_get_key_override_is_used_and_bounded() -> None:
    keys: list[str] = []

    async def recording_strategy(
        key: typing.Any, rate: Rate, backend: typing.Any, cost: int = 1
    ) -> float:
        keys.append(str(key))
        return 0.0

    class TenantThrottle(HTTPThrottle):
        async def get_key(
            self, connection: typing.Any, *args: typing.Any, **kwargs: typing.Any
        ) -> str:
            return "tenant-" + connection.headers.get("x-tenant", "none")

    throttle = TenantThrottle("ten", "5/m", strategy=recording_strategy)
    backend = InMemoryBackend(namespace="t-getkey")
    app = starlette_app(throttle)
    async with backend(app), client(app) as c:
        await c.get("/r", headers={"X-Tenant": "acme"})
        await c.get("/r", headers={"X-Tenant": "a b"})
    assert keys[0] == "ten:tenant-acme:127.0.0.1"
    assert keys[1].startswith("ten:#")


# -- exemptions, backends, sharing -------------------------------------------------------


@pytest.mark.asyncio
async def test_unlimited_identifier_exempts_and_records_nothing() -> None:
    async def identifier(connection: HTTPConnection) -> typing.Any:
        return UNLIMITED if connection.headers.get("x-admin") else "user"

    throttle = HTTPThrottle("ex", "1/m", identifier=identifier)
    recorded: list[dict[str, Decision]] = []

    async def endpoint(request: Request) -> PlainTextResponse:
        await throttle(request)
        recorded.append(get_decisions(request))
        return PlainTextResponse("ok")

    backend = InMemoryBackend(namespace="t-exempt", clock=FakeClock(0))
    app = Starlette(routes=[Route("/e", endpoint)])
    async with backend(app), client(app) as c:
        assert [(await c.get("/e", headers={"X-Admin": "1"})).status_code for _ in range(3)] == [
            200
        ] * 3
        assert recorded == [{}, {}, {}]
        assert [(await c.get("/e")).status_code for _ in range(2)] == [200, 429]


@pytest.mark.asyncio
async def test_unlimited_rate_needs_no_backend() -> None:
    app = starlette_app(HTTPThrottle("free", Rate()))
    async with client(app) as c:
        assert (await c.get("/r")).status_code == 200


@pytest.mark.asyncio
async def test_context_backend_resolves_per_call() -> None:
    throttle = HTTPThrottle("ctx", "1/m", context_backend=True)
    app = starlette_app(throttle)
    first, second = (
        InMemoryBackend(namespace="ctx-a", clock=FakeClock()),
        InMemoryBackend(namespace="ctx-b", clock=FakeClock()),
    )
    async with client(app) as c:
        async with first():
            assert (await c.get("/r")).status_code == 200
            assert (await c.get("/r")).status_code == 429
        async with second():
            assert (await c.get("/r")).status_code == 200


@pytest.mark.asyncio
async def test_explicit_backend_wins_over_the_app_backend() -> None:
    own = InMemoryBackend(namespace="own", clock=FakeClock())
    app_backend = InMemoryBackend(namespace="appb", clock=FakeClock())
    app = starlette_app(HTTPThrottle("own", "1/m", backend=own))
    async with own(), app_backend(app), client(app) as c:
        assert (await c.get("/r")).status_code == 200
        assert (await c.get("/r")).status_code == 429
        await app_backend.reset()
        assert (await c.get("/r")).status_code == 429
        await own.reset()
        assert (await c.get("/r")).status_code == 200


@pytest.mark.asyncio
async def test_same_uid_shares_state_across_instances_and_apps() -> None:
    backend = InMemoryBackend(namespace="t-share", clock=FakeClock(0))
    app1 = starlette_app(HTTPThrottle("shared", "2/m"))
    app2 = starlette_app(HTTPThrottle("shared", "2/m"))
    app3 = starlette_app(HTTPThrottle("other", "2/m"))
    async with backend(), client(app1) as c1, client(app2) as c2, client(app3) as c3:
        assert (await c1.get("/r")).status_code == 200
        assert (await c2.get("/r")).status_code == 200
        assert (await c1.get("/r")).status_code == 429
        assert (await c2.get("/r")).status_code == 429
        assert (await c3.get("/r")).status_code == 200


MODULE_THROTTLE = HTTPThrottle("module-level", "1/m")


@pytest.mark.asyncio
async def test_module_level_throttle_follows_each_apps_backend_after_the_first_closed() -> None:
    for name in ("first", "second"):
        backend = InMemoryBackend(namespace=name, clock=FakeClock())
        app = starlette_app(MODULE_THROTTLE)
        app.router.lifespan_context = backend.lifespan
        with TestClient(app) as c:  # runs the lifespan: the backend opens, then closes
            assert c.get("/r").status_code == 200
            assert c.get("/r").status_code == 429
        assert backend.connection is None


def test_starlette_testclient_works_with_the_default_identifier() -> None:
    backend = InMemoryBackend(namespace="t-tc", clock=FakeClock())
    app = starlette_app(HTTPThrottle("tc", "1/m"))
    app.router.lifespan_context = backend.lifespan
    with TestClient(app) as c:
        assert [c.get("/r").status_code for _ in range(2)] == [200, 429]


@pytest.mark.asyncio
async def test_clients_without_an_address_share_one_anonymous_bucket() -> None:
    backend = InMemoryBackend(namespace="t-anon", clock=FakeClock(0))
    app = starlette_app(HTTPThrottle("anon", "2/m"))
    transport = httpx.ASGITransport(app=app, client=None)  # type: ignore[arg-type]
    async with backend(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert [(await c.get("/r")).status_code for _ in range(3)] == [200, 200, 429]


# -- strategies and handlers -----------------------------------------------------------


@pytest.mark.asyncio
async def test_custom_strategy_callable_is_wrapped_into_a_decision() -> None:
    waits = iter([0.0, 2500.0])

    async def strategy(key: typing.Any, rate: Rate, backend: typing.Any, cost: int = 1) -> float:
        return next(waits)

    backend = InMemoryBackend(namespace="t-custom", clock=FakeClock())
    app = starlette_app(HTTPThrottle("cus", "5/m", strategy=strategy), headers_mw=True)
    async with backend(app), client(app) as c:
        ok = await c.get("/r")
        refused = await c.get("/r")
    assert ok.headers["RateLimit-Policy"] == '"cus";q=5;w=60'
    assert "RateLimit" not in ok.headers  # remaining unknown
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "3"


@pytest.mark.asyncio
async def test_handler_that_returns_lets_the_request_through_and_gets_the_wait() -> None:
    calls: list[tuple[float, dict[str, typing.Any]]] = []

    async def soft(
        connection: HTTPConnection, wait_ms: float, *args: typing.Any, **kwargs: typing.Any
    ) -> None:
        calls.append((wait_ms, kwargs))

    backend = InMemoryBackend(namespace="t-soft", clock=FakeClock(0))
    app = starlette_app(
        HTTPThrottle("soft", "1/m", handle_throttled=soft, headers={"X-Extra": "1"})
    )
    async with backend(app), client(app) as c:
        assert [(await c.get("/r")).status_code for _ in range(2)] == [200, 200]
    assert len(calls) == 1
    wait, kwargs = calls[0]
    assert wait == 60_000.0
    assert kwargs["headers"]["X-Extra"] == "1"
    assert kwargs["headers"]["RateLimit"] == '"soft";r=0;t=60'


@pytest.mark.asyncio
async def test_on_backend_error_is_passed_as_the_failure_policy() -> None:
    backend = InMemoryBackend(namespace="t-fail")  # never initialised: every decision fails
    app = starlette_app(HTTPThrottle("fo", "1/m", backend=backend, on_backend_error="allow"))
    async with client(app) as c:
        assert (await c.get("/r")).status_code == 200


@pytest.mark.asyncio
async def test_stat_reports_without_recording_a_hit() -> None:
    backend = InMemoryBackend(namespace="t-stat", clock=FakeClock(0))
    throttle = HTTPThrottle("st", "3/m")
    stats: list[float] = []

    async def endpoint(request: Request) -> PlainTextResponse:
        stat = await throttle.stat(request)
        assert stat is not None
        stats.append(stat.hits_remaining)
        await throttle(request)
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/s", endpoint)])
    async with backend(app), client(app) as c:
        for _ in range(3):
            await c.get("/s")
    assert stats == [3.0, 2.0, 1.0]


# -- WebSocket --------------------------------------------------------------------------


def test_websocket_per_message_throttling_with_context_keys() -> None:
    backend = InMemoryBackend(namespace="t-ws", clock=FakeClock(0))
    throttle = WebSocketThrottle("wsm", "2/m")

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            message = await websocket.receive_json()
            if message.get("stop"):
                break
            try:
                await throttle(websocket, context_key=message.get("kind"))
                await websocket.send_json({"ok": True})
            except ConnectionThrottled as exc:
                await websocket.send_json(
                    {"ok": False, "status_code": exc.status_code, "retry_after": exc.retry_after}
                )
        await websocket.close()

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)], lifespan=backend.lifespan)
    with TestClient(app) as tc, tc.websocket_connect("/ws") as ws:
        replies = []
        for kind in ("chat", "chat", "chat", "typing"):
            ws.send_json({"kind": kind})
            replies.append(ws.receive_json())
        ws.send_json({"stop": True})
    assert [r["ok"] for r in replies] == [True, True, False, True]
    assert replies[2]["status_code"] == 429
    assert replies[2]["retry_after"] == 60


def test_websocket_throttle_as_fastapi_dependency() -> None:
    backend = InMemoryBackend(namespace="t-wsdep", clock=FakeClock())
    throttle = WebSocketThrottle("wsdep", "1/m")
    app = FastAPI(lifespan=backend.lifespan)

    @app.websocket("/ws")
    async def ws_endpoint(websocket: WebSocket = Depends(throttle)) -> None:
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    with TestClient(app) as tc:
        with tc.websocket_connect("/ws") as ws:
            assert ws.receive_text() == "hello"
        with pytest.raises(WebSocketDenialResponse) as denied, tc.websocket_connect("/ws"):
            pass
    assert denied.value.status_code == 429
    assert denied.value.headers["RateLimit-Policy"] == '"wsdep";q=1;w=60'
    assert denied.value.headers["Retry-After"] == "20"  # 1_000_000 ms is 40 s into a minute


@pytest.mark.asyncio
async def test_legacy_headers_option_on_the_throttle() -> None:
    backend = InMemoryBackend(namespace="t-legacy", clock=FakeClock(0))
    app = fastapi_app(HTTPThrottle("leg", "2/m", legacy_headers=True))
    async with backend(app), client(app) as c:
        ok = await c.get("/items/1")
        await c.get("/items/1")
        refused = await c.get("/items/1")
    assert ok.headers["X-RateLimit-Limit"] == "2"
    assert ok.headers["X-RateLimit-Remaining"] == "1"
    assert ok.headers["X-RateLimit-Reset"] == "60"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert refused.headers["Retry-After"] == "60"


@pytest.mark.asyncio
async def test_depends_and_a_direct_call_in_the_route_combine_in_the_middleware() -> None:
    backend = InMemoryBackend(namespace="t-combo", clock=FakeClock(0))
    guard = HTTPThrottle("guard", "10/m")
    exports = HTTPThrottle("exports", "100/m")
    app = FastAPI()
    app.add_middleware(RateLimitHeadersMiddleware)

    @app.post("/export", dependencies=[Depends(guard)])
    async def export(request: Request) -> dict[str, bool]:
        await exports(request, cost=30)
        return {"ok": True}

    async with backend(app), client(app) as c:
        response = await c.post("/export")
    assert response.headers["RateLimit"] == '"guard";r=9;t=60,"exports";r=70;t=60'
