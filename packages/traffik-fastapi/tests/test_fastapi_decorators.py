"""traffik.fastapi.throttled: decorator and dependency, signatures and OpenAPI.

This module uses ``from __future__ import annotations`` on purpose: every route
annotation below is a string that FastAPI must resolve through the wrapper.
"""

from __future__ import annotations

import inspect
import typing
from typing import Annotated

import pytest
from fastapi import APIRouter, Body, Depends, FastAPI, Header, Query, WebSocket
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel
from starlette.testclient import TestClient, WebSocketDenialResponse

from traffik.backends.inmemory import InMemoryBackend
from traffik.decorators import throttled as seed_throttled
from traffik.fastapi import DecoratorDepends, ThrottleDepends, apply_throttle, throttled
from traffik.throttles import HTTPThrottle, WebSocketThrottle

NOW = 1_699_999_980_000  # a multiple of 60 s: fixed windows start here


class Item(BaseModel):
    name: str
    price: float


class Receipt(BaseModel):
    id: int
    item: Item


def common(x_trace: Annotated[str | None, Header()] = None) -> str | None:
    return x_trace


def build_app(throttle_factory: typing.Callable[[], typing.Any] | None) -> FastAPI:
    """The same app, with every route throttled or not."""
    backend = InMemoryBackend(namespace="fa", clock=lambda: NOW)
    app = FastAPI(lifespan=backend.lifespan)
    router = APIRouter(prefix="/r")

    def deco() -> typing.Any:
        if throttle_factory is None:
            return lambda f: f
        return throttle_factory()

    @app.get("/items/{item_id}", response_model=Item)
    @deco()
    async def read_item(
        item_id: int,
        q: Annotated[str | None, Query(max_length=10)] = None,
        trace: Annotated[str | None, Depends(common)] = None,
    ) -> dict[str, typing.Any]:
        return {"name": f"{item_id}{q or ''}{trace or ''}", "price": 1.0}

    @app.post("/items", status_code=201)
    @deco()
    def create_item(item: Item, note: Annotated[str, Body()] = "") -> Receipt:
        return Receipt(id=1, item=item)

    @router.put("/things/{name}")
    @deco()
    async def put_thing(name: str, item: Item, count: int = 1) -> dict[str, int]:
        return {"count": count}

    @app.get("/plain", response_class=PlainTextResponse)
    @deco()
    async def plain() -> PlainTextResponse:
        return PlainTextResponse("plain")

    app.include_router(router)
    return app


def single() -> ThrottleDepends:
    return throttled(HTTPThrottle("openapi", "100/m"))


def stacked() -> typing.Callable[[typing.Any], typing.Any]:
    def apply(route: typing.Any) -> typing.Any:
        route = throttled(HTTPThrottle("a", "100/m"))(route)
        return throttled(HTTPThrottle("b", "100/m"), HTTPThrottle("c", "100/m"))(route)

    return apply


@pytest.mark.parametrize("factory", [single, stacked])
def test_openapi_document_is_unchanged(factory: typing.Callable[[], typing.Any]) -> None:
    assert build_app(factory).openapi() == build_app(None).openapi()


def test_routes_work_with_string_annotations_and_annotated_dependencies() -> None:
    app = build_app(single)
    with TestClient(app) as client:
        response = client.get("/items/3", params={"q": "x"}, headers={"x-trace": "t"})
        assert response.json() == {"name": "3xt", "price": 1.0}
        assert response.headers["ratelimit-policy"] == '"openapi";q=100;w=60'
        created = client.post("/items", json={"item": {"name": "n", "price": 2}, "note": "z"})
        assert created.status_code == 201
        assert created.json() == {"id": 1, "item": {"name": "n", "price": 2.0}}
        assert client.put("/r/things/a?count=4", json={"name": "n", "price": 1}).json() == {
            "count": 4
        }
        assert client.get("/items/3", params={"q": "x" * 11}).status_code == 422


def test_signature_keeps_the_route_parameters() -> None:
    async def route(item_id: int, q: str | None = None) -> dict[str, int]:
        return {"item_id": item_id}

    wrapped = throttled(HTTPThrottle("sig", "1/m"))(route)
    params = inspect.signature(wrapped).parameters
    # One hidden leading dependency parameter, then the route's own, untouched.
    assert [p for p in params if not p.startswith("__traffik_")] == ["item_id", "q"]
    # Annotations are evaluated exactly as FastAPI evaluates the route's own.
    evaluated = inspect.signature(route, eval_str=True)
    assert params["item_id"] == evaluated.parameters["item_id"]
    assert params["q"] == evaluated.parameters["q"]
    assert inspect.signature(wrapped).return_annotation == dict[str, int]
    assert wrapped.__name__ == "route"
    assert wrapped.__wrapped__ is route
    assert inspect.iscoroutinefunction(wrapped)

    def sync_route() -> int:
        return 1

    sync_wrapped = throttled(HTTPThrottle("sig2", "1/m"))(sync_route)
    assert not inspect.iscoroutinefunction(sync_wrapped)
    assert sync_wrapped(__traffik_dependency_0=None) == 1


@pytest.mark.parametrize("sync", [False, True])
def test_decorator_throttles_sync_and_async_routes(sync: bool) -> None:
    backend = InMemoryBackend(namespace="sa", clock=lambda: NOW)
    app = FastAPI(lifespan=backend.lifespan)
    throttle = HTTPThrottle("limited", "2/m")

    if sync:

        @app.get("/limited")
        @throttled(throttle)
        def limited() -> dict[str, str]:
            return {"data": "Limited access"}

    else:

        @app.get("/limited")
        @throttled(throttle)
        async def limited() -> dict[str, str]:
            return {"data": "Limited access"}

    with TestClient(app) as client:
        assert client.get("/limited").json() == {"data": "Limited access"}
        second = client.get("/limited")
        assert second.headers["ratelimit"] == '"limited";r=0;t=60'
        refused = client.get("/limited")
    assert refused.status_code == 429
    assert refused.json() == {"detail": "Too many requests. Retry in 60 seconds."}
    assert refused.headers["retry-after"] == "60"


def test_stacking_order_and_dependencies_form() -> None:
    backend = InMemoryBackend(namespace="st", clock=lambda: NOW)
    app = FastAPI(lifespan=backend.lifespan)
    order: list[str] = []

    class Recording(HTTPThrottle):
        async def __call__(
            self, connection: typing.Any = None, *args: typing.Any, **kw: typing.Any
        ) -> typing.Any:
            order.append(self.uid)
            return await super().__call__(connection, *args, **kw)

    outer, inner, both1, both2 = (Recording(n, "5/m") for n in ("outer", "inner", "b1", "b2"))
    route_dep = Recording("route-dep", "5/m")

    @app.get("/stacked", dependencies=[throttled(route_dep)])
    @throttled(outer)
    @throttled(inner)
    async def stacked_route() -> str:
        return "ok"

    @app.get("/many", dependencies=[throttled(both1, both2)])
    async def many() -> str:
        return "ok"

    with TestClient(app) as client:
        response = client.get("/stacked")
        assert order == ["route-dep", "outer", "inner"]
        assert response.headers["ratelimit-policy"].count(";q=5") == 3
        order.clear()
        client.get("/many")
        assert order == ["b1", "b2"]


def test_route_returning_a_response_gets_the_fields() -> None:
    backend = InMemoryBackend(namespace="resp", clock=lambda: NOW)
    app = FastAPI(lifespan=backend.lifespan)

    @app.get("/raw")
    @throttled(HTTPThrottle("raw", "3/m"))
    async def raw() -> PlainTextResponse:
        return PlainTextResponse("raw", headers={"RateLimit": "stale"})

    with TestClient(app) as client:
        response = client.get("/raw")
    assert response.text == "raw"
    assert response.headers.get_list("ratelimit") == ['"raw";r=2;t=60']


def test_seed_forms() -> None:
    backend = InMemoryBackend(namespace="seed", clock=lambda: NOW)
    app = FastAPI(lifespan=backend.lifespan)

    async def seed_route() -> str:
        return "seed"

    app.get("/seed")(seed_throttled(HTTPThrottle("seed", "1/m"), seed_route))
    app.get("/apply")(apply_throttle(seed_route, HTTPThrottle("apply", "1/m")))
    assert DecoratorDepends is ThrottleDepends
    with TestClient(app) as client:
        assert client.get("/seed").status_code == 200
        assert client.get("/seed").status_code == 429
        assert client.get("/apply").status_code == 200
        assert client.get("/apply").status_code == 429


def test_websocket_route_throttled_at_connect() -> None:
    backend = InMemoryBackend(namespace="ws", clock=lambda: NOW)
    app = FastAPI(lifespan=backend.lifespan)

    @app.websocket("/ws")
    @throttled(WebSocketThrottle("fa-ws", "1/m"))
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hi")
        await websocket.close()

    with TestClient(app) as client:
        with client.websocket_connect("/ws") as session:
            assert session.receive_text() == "hi"
        with pytest.raises(WebSocketDenialResponse) as denied, client.websocket_connect("/ws"):
            pass
    assert denied.value.status_code == 429


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="at least one throttle"):
        throttled()
    with pytest.raises(TypeError, match="takes throttles"):
        throttled("nope")
    with pytest.raises(TypeError, match="decorates a route function"):
        throttled(HTTPThrottle("x", "1/m"))(42)  # type: ignore[type-var]

    async def clash(__traffik_dependency_0: int) -> None:
        return None

    with pytest.raises(TypeError, match="reserves"):
        throttled(HTTPThrottle("x", "1/m"))(clash)
