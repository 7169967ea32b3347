"""Shadow mode (issue 24 item 1): a shadow throttle never changes a status code.

It decides and charges as when enforcing; its would-be refusals are reported (the
``shadow_throttled`` event and the ``refused_shadow`` metric outcome); clients see
none of its RateLimit fields unless ``shadow_headers=True``; enforcing throttles on
the same route are unaffected. Checked through every integration.
"""

from __future__ import annotations

import typing

import pytest
from fastapi import Depends, FastAPI
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from traffik import events, metrics
from traffik.backends.inmemory import InMemoryBackend
from traffik.exceptions import ConnectionThrottled
from traffik.fastapi import throttled as fastapi_throttled
from traffik.starlette import MiddlewareThrottle, ThrottleMiddleware
from traffik.starlette import throttled as starlette_throttled
from traffik.throttles import HTTPThrottle, WebSocketThrottle

NOW = 1_699_999_980_000  # a multiple of 60 s: the window never rolls over here
INTEGRATIONS = ["depends", "fastapi-decorator", "starlette-decorator", "direct", "middleware"]


def build(
    integration: str,
    *,
    shadow: bool,
    shadow_headers: bool = False,
    backend: InMemoryBackend | None = None,  # type: ignore[type-arg]
) -> typing.Any:
    """``/r`` behind an enforcing throttle (5/m) and, with ``shadow``, a tighter shadow
    one (2/m) that runs first, so that it sees every request."""
    if backend is None:
        backend = InMemoryBackend(namespace="shadow", clock=lambda: NOW)
    enforced = HTTPThrottle("enforced", "5/m")
    candidate = HTTPThrottle("candidate", "2/m", shadow=True, shadow_headers=shadow_headers)
    throttles = [candidate, enforced] if shadow else [enforced]

    async def plain(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    if integration == "middleware":
        rules = [MiddlewareThrottle(t) for t in throttles]
        return Starlette(
            routes=[Route("/r", plain)],
            middleware=[Middleware(ThrottleMiddleware, middleware_throttles=rules)],
            lifespan=backend.lifespan,
        )
    if integration == "starlette-decorator":
        return Starlette(
            routes=[Route("/r", starlette_throttled(*throttles)(plain))],
            lifespan=backend.lifespan,
        )
    if integration == "direct":

        async def direct(request: Request) -> PlainTextResponse:
            for throttle in throttles:
                await throttle(request)
            return PlainTextResponse("ok")

        return Starlette(routes=[Route("/r", direct)], lifespan=backend.lifespan)
    app = FastAPI(lifespan=backend.lifespan)
    if integration == "depends":
        dependencies = [Depends(t) for t in throttles]
    else:
        dependencies = [fastapi_throttled(*throttles)]

    @app.get("/r", dependencies=dependencies)
    async def route() -> PlainTextResponse:
        return PlainTextResponse("ok")

    return app


def run(app: typing.Any, n: int = 8) -> list[tuple[int, str]]:
    with TestClient(app) as client:
        answers = [client.get("/r") for _ in range(n)]
    return [(a.status_code, a.headers.get("ratelimit-policy", "")) for a in answers]


@pytest.fixture
def seen() -> typing.Iterator[list[events.ThrottleEvent]]:
    recorded: list[events.ThrottleEvent] = []
    stop = events.subscribe(recorded.append)
    yield recorded
    stop()


@pytest.mark.parametrize("integration", INTEGRATIONS)
def test_a_shadow_throttle_never_changes_a_status_code(
    integration: str, seen: list[events.ThrottleEvent]
) -> None:
    without = run(build(integration, shadow=False))
    assert [status for status, _ in without] == [200] * 5 + [429] * 3
    seen.clear()
    with_shadow = run(build(integration, shadow=True))
    # The same answers, fields included: the shadow throttle's are not sent.
    assert with_shadow == without
    assert all("candidate" not in policy for _, policy in with_shadow)
    # It decided and charged as when enforcing: refusals from the third request on.
    kinds = [e.kind for e in seen if e.policy == "candidate"]
    assert kinds == ["allowed"] * 2 + ["shadow_throttled"] * 6
    assert [e.kind for e in seen if e.policy == "enforced"] == ["allowed"] * 5 + ["throttled"] * 3
    refusal = next(e for e in seen if e.kind == "shadow_throttled")
    assert refusal.decision is not None
    assert not refusal.decision.allowed


@pytest.mark.parametrize("integration", ["starlette-decorator", "middleware"])
def test_shadow_headers_show_the_coming_limit(integration: str) -> None:
    # (Integrations that write fields on a response of their own; a FastAPI route that
    # returns its own Response shows none, shadow or not.)
    answers = run(build(integration, shadow=True, shadow_headers=True), n=3)
    assert [status for status, _ in answers] == [200, 200, 200]
    assert all('"candidate";q=2;w=60' in policy for _, policy in answers)
    assert all('"enforced";q=5;w=60' in policy for _, policy in answers)


def test_would_be_refusals_are_a_metric_outcome() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics.instrument(meter_provider=provider)
    try:
        run(build("depends", shadow=True))
    finally:
        metrics.uninstrument()
    data = reader.get_metrics_data()
    outcomes: dict[tuple[str, str], int] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "traffik.decisions":
                    for point in metric.data.data_points:
                        attributes = dict(point.attributes or {})
                        key = (
                            str(attributes["traffik.throttle"]),
                            str(attributes["traffik.outcome"]),
                        )
                        outcomes[key] = int(point.value)
    provider.shutdown()
    assert outcomes == {
        ("candidate", "admitted"): 2,
        ("candidate", "refused_shadow"): 6,
        ("enforced", "admitted"): 5,
        ("enforced", "refused"): 3,
    }


def test_a_middleware_rule_can_be_shadow_on_its_own() -> None:
    backend = InMemoryBackend(namespace="rule", clock=lambda: NOW)
    shared = HTTPThrottle("shared", "1/m")

    async def plain(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Route("/a", plain)],
        middleware=[
            Middleware(
                ThrottleMiddleware, middleware_throttles=[MiddlewareThrottle(shared, shadow=True)]
            )
        ],
        lifespan=backend.lifespan,
    )
    with TestClient(app) as client:
        assert [client.get("/a").status_code for _ in range(3)] == [200, 200, 200]
    assert shared.shadow is False  # the throttle itself still enforces elsewhere


def test_a_backend_in_shadow_puts_every_throttle_of_the_app_in_shadow(
    seen: list[events.ThrottleEvent],
) -> None:
    backend = InMemoryBackend(namespace="whole", clock=lambda: NOW)
    app = build("depends", shadow=False, backend=backend)
    backend.shadow = True
    with TestClient(app) as client:
        assert [client.get("/r").status_code for _ in range(8)] == [200] * 8
        backend.shadow = False  # read per request: enforcing again, same budget
        assert client.get("/r").status_code == 429
    kinds = [e.kind for e in seen if e.policy == "enforced"]
    assert kinds == ["allowed"] * 5 + ["shadow_throttled"] * 3 + ["throttled"]


def test_a_shadow_websocket_throttle_never_refuses_a_message(
    seen: list[events.ThrottleEvent],
) -> None:
    backend = InMemoryBackend(namespace="ws", clock=lambda: NOW)
    throttle = WebSocketThrottle("chat", "2/m", shadow=True)

    async def chat(websocket: WebSocket) -> None:
        await websocket.accept()
        for _ in range(4):
            await websocket.receive_text()
            try:
                await throttle(websocket)
            except ConnectionThrottled:
                await websocket.send_text("refused")
            else:
                await websocket.send_text("ok")
        await websocket.close()

    app = Starlette(routes=[WebSocketRoute("/chat", chat)], lifespan=backend.lifespan)
    with TestClient(app) as client, client.websocket_connect("/chat") as ws:
        replies = []
        for _ in range(4):
            ws.send_text("hi")
            replies.append(ws.receive_text())
    assert replies == ["ok"] * 4
    assert [e.kind for e in seen if e.policy == "chat"] == ["allowed"] * 2 + [
        "shadow_throttled"
    ] * 2


def test_shadow_flags_are_checked() -> None:
    with pytest.raises(ValueError, match="shadow must be True or False"):
        HTTPThrottle("x", "1/m", shadow="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shadow_headers must be True or False"):
        HTTPThrottle("x", "1/m", shadow_headers=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="shadow must be True or False"):
        MiddlewareThrottle(HTTPThrottle("x", "1/m"), shadow=None)  # type: ignore[arg-type]
