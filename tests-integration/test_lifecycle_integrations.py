"""The response lifecycle through every integration, on real apps and a real uvicorn.

A recording throttle (``needs_lifecycle = True``) registers lifecycle callbacks when
it runs; each test checks when the status and the end arrive: Starlette's
middleware and decorator, FastAPI's ``Depends(throttle)`` and decorator,
WebSockets, streaming responses, a client leaving a slow endpoint, an endpoint
raising.
"""

from __future__ import annotations

import asyncio
import typing

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from traffik import InMemoryBackend
from traffik.fastapi import throttled as fastapi_throttled
from traffik.lifecycle import Outcome, attach
from traffik.starlette import MiddlewareThrottle, ThrottleMiddleware
from traffik.starlette import throttled as starlette_throttled
from traffik.throttles import HTTPThrottle, WebSocketThrottle

if typing.TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from conftest import ServeApp  # type: ignore[import-not-found]

pytestmark = pytest.mark.asyncio


class Record:
    """What the recording throttles saw, with an event per end."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.ends: list[tuple[int | None, Outcome]] = []
        self.ended = asyncio.Event()

    def register(self, connection: HTTPConnection) -> None:
        lc = attach(connection.scope)
        lc.on_status(self.statuses.append)
        lc.on_end(self._end)
        lc.watch_disconnect()

    def _end(self, status: int | None, outcome: Outcome) -> None:
        self.ends.append((status, outcome))
        self.ended.set()

    async def next_end(self) -> tuple[int | None, Outcome]:
        await asyncio.wait_for(self.ended.wait(), 5)
        self.ended.clear()
        return self.ends[-1]


#: The recording throttles decide nothing, but ThrottleMiddleware's startup check
#: (rightly) refuses to start an app whose throttles have no backend.
UNUSED_BACKEND = InMemoryBackend(namespace="lifecycle-recording")


class RecordingHTTP(HTTPThrottle):
    needs_lifecycle = True

    def __init__(self, record: Record) -> None:
        super().__init__("recording", "1000/s", backend=UNUSED_BACKEND)
        self.record = record

    async def __call__(  # type: ignore[override]
        self, connection: Request | None = None, *args: typing.Any, **kwargs: typing.Any
    ) -> Request:
        connection = connection or kwargs["request"]
        self.record.register(connection)
        return connection


class RecordingWS(WebSocketThrottle):
    needs_lifecycle = True

    def __init__(self, record: Record) -> None:
        super().__init__("recording-ws", "1000/s", backend=UNUSED_BACKEND)
        self.record = record

    async def __call__(  # type: ignore[override]
        self, connection: WebSocket | None = None, *args: typing.Any, **kwargs: typing.Any
    ) -> WebSocket:
        connection = connection or kwargs["websocket"]
        self.record.register(connection)
        return connection


def client(app: typing.Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def chunks(gate: asyncio.Event, record: Record, seen: list[int]) -> AsyncIterator[bytes]:
    yield b"first "
    seen.append(len(record.ends))
    await gate.wait()
    yield b"last"
    seen.append(len(record.ends))


# -- Starlette -----------------------------------------------------------------------------


async def test_middleware_rule_status_and_end() -> None:
    record = Record()

    async def ok(request: Request) -> Response:
        return PlainTextResponse("ok", status_code=201)

    async def missing(request: Request) -> Response:
        raise HTTPException(404)

    async def boom(request: Request) -> Response:
        raise RuntimeError("boom")

    app = Starlette(routes=[Route("/ok", ok), Route("/missing", missing), Route("/boom", boom)])
    app.add_middleware(ThrottleMiddleware, middleware_throttles=[RecordingHTTP(record)])
    async with client(app) as http:
        assert (await http.get("/ok")).status_code == 201
        assert await record.next_end() == (201, Outcome.COMPLETE)
        assert (await http.get("/missing")).status_code == 404
        assert await record.next_end() == (404, Outcome.COMPLETE)
        with pytest.raises(RuntimeError):
            await http.get("/boom")
        assert await record.next_end() == (None, Outcome.RAISED)
    assert record.statuses == [201, 404]


async def test_middleware_without_lifecycle_throttles_does_not_observe() -> None:
    seen: list[object] = []

    async def ok(request: Request) -> Response:
        seen.append(request.scope["state"].get("traffik.lifecycle"))
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", ok)])
    app.add_middleware(
        ThrottleMiddleware,
        middleware_throttles=[MiddlewareThrottle(HTTPThrottle("plain", "100/s"), prefix="/x")],
    )
    async with client(app) as http:
        assert (await http.get("/")).status_code == 200
    assert seen == [None]


async def test_starlette_decorator_sees_the_returned_response() -> None:
    record = Record()
    gate = asyncio.Event()
    seen: list[int] = []

    @starlette_throttled(RecordingHTTP(record))
    async def stream(request: Request) -> Response:
        return StreamingResponse(chunks(gate, record, seen), status_code=202)

    @starlette_throttled(RecordingHTTP(record))
    async def boom(request: Request) -> Response:
        raise RuntimeError("boom")

    app = Starlette(routes=[Route("/stream", stream), Route("/boom", boom)])
    gate.set()
    async with client(app) as http:
        response = await http.get("/stream")
        assert response.text == "first last"
        assert await record.next_end() == (202, Outcome.COMPLETE)
        assert seen == [0, 0]
        with pytest.raises(RuntimeError):
            await http.get("/boom")
        assert await record.next_end() == (None, Outcome.RAISED)


async def test_starlette_decorator_and_middleware_share_one_lifecycle() -> None:
    record = Record()

    @starlette_throttled(RecordingHTTP(record))
    async def ok(request: Request) -> Response:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", ok)])
    app.add_middleware(ThrottleMiddleware, middleware_throttles=[RecordingHTTP(record)])
    async with client(app) as http:
        assert (await http.get("/")).status_code == 200
    await record.next_end()
    assert record.ends == [(200, Outcome.COMPLETE), (200, Outcome.COMPLETE)]
    assert record.statuses == [200, 200]


async def test_starlette_websocket_decorator_ends_when_the_socket_closes(
    serve_app: ServeApp,
) -> None:
    import websockets

    record = Record()
    inside = asyncio.Event()

    @starlette_throttled(RecordingWS(record))
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        inside.set()
        async for message in websocket.iter_text():
            await websocket.send_text(message)

    app = Starlette(routes=[WebSocketRoute("/ws", echo)])
    async with serve_app(app) as address:
        async with websockets.connect(f"ws://{address}/ws") as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
            await inside.wait()
            assert record.ends == []
        assert (await record.next_end())[1] is Outcome.COMPLETE


async def test_middleware_websocket_holds_until_close(serve_app: ServeApp) -> None:
    import websockets

    record = Record()

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        async for message in websocket.iter_text():
            await websocket.send_text(message)

    app = Starlette(routes=[WebSocketRoute("/ws", echo)])
    app.add_middleware(ThrottleMiddleware, middleware_throttles=[RecordingWS(record)])
    async with serve_app(app) as address:
        async with websockets.connect(f"ws://{address}/ws") as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
            assert record.ends == []
        assert await record.next_end() == (101, Outcome.DISCONNECTED)
    assert record.statuses == [101]


# -- a real server: disconnects and streaming --------------------------------------------------


async def _open_and_leave(address: str, path: str, started: asyncio.Event) -> None:
    host, port = address.split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n".encode())
    await writer.drain()
    await asyncio.wait_for(started.wait(), 5)
    writer.close()
    await writer.wait_closed()


async def test_a_client_leaving_a_slow_endpoint_ends_at_once(serve_app: ServeApp) -> None:
    record = Record()
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(request: Request) -> Response:
        started.set()
        await release.wait()
        return PlainTextResponse("late")

    app = Starlette(routes=[Route("/slow", slow)])
    app.add_middleware(ThrottleMiddleware, middleware_throttles=[RecordingHTTP(record)])
    async with serve_app(app) as address:
        await _open_and_leave(address, "/slow", started)
        # The endpoint is still blocked: the end came from the disconnect itself.
        assert await record.next_end() == (None, Outcome.DISCONNECTED)
        assert not release.is_set()
        release.set()


async def test_a_client_leaving_a_stream_ends_disconnected(serve_app: ServeApp) -> None:
    record = Record()
    started = asyncio.Event()

    async def forever() -> AsyncIterator[bytes]:
        started.set()
        while True:
            yield b"."
            await asyncio.sleep(0.01)

    async def stream(request: Request) -> Response:
        return StreamingResponse(forever())

    app = Starlette(routes=[Route("/stream", stream)])
    app.add_middleware(ThrottleMiddleware, middleware_throttles=[RecordingHTTP(record)])
    async with serve_app(app) as address:
        await _open_and_leave(address, "/stream", started)
        assert await record.next_end() == (200, Outcome.DISCONNECTED)


async def test_a_stream_ends_after_its_last_chunk_on_a_real_server(serve_app: ServeApp) -> None:
    record = Record()
    gate = asyncio.Event()
    seen: list[int] = []

    async def stream(request: Request) -> Response:
        return StreamingResponse(chunks(gate, record, seen))

    app = Starlette(routes=[Route("/stream", stream)])
    app.add_middleware(ThrottleMiddleware, middleware_throttles=[RecordingHTTP(record)])
    async with serve_app(app) as address, httpx.AsyncClient() as http:
        async with http.stream("GET", f"http://{address}/stream") as response:
            parts = response.aiter_bytes()
            assert await parts.__anext__() == b"first "
            assert record.ends == []
            gate.set()
            assert b"".join([part async for part in parts]) == b"last"
        assert await record.next_end() == (200, Outcome.COMPLETE)
    assert seen == [0, 0]


# -- FastAPI ---------------------------------------------------------------------------------


def fastapi_app(record: Record, gate: asyncio.Event, seen: list[int]) -> FastAPI:
    app = FastAPI()
    throttle = RecordingHTTP(record)

    @app.get("/depends", dependencies=[Depends(throttle)], status_code=201)
    async def depends() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/decorated")
    @fastapi_throttled(RecordingHTTP(record))
    async def decorated() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/stream", dependencies=[Depends(throttle)])
    async def stream() -> StreamingResponse:
        return StreamingResponse(chunks(gate, record, seen))

    @app.get("/boom", dependencies=[Depends(throttle)])
    async def boom() -> None:
        raise RuntimeError("boom")

    @app.get("/missing", dependencies=[Depends(throttle)])
    async def missing() -> None:
        raise HTTPException(404)

    return app


async def test_fastapi_depends_and_decorator_end_after_the_response() -> None:
    record = Record()
    gate = asyncio.Event()
    gate.set()
    seen: list[int] = []
    app = fastapi_app(record, gate, seen)
    async with client(app) as http:
        for path, status in (("/depends", 201), ("/decorated", 200)):
            # The first request of a route ends by FastAPI's request-scoped exit, the
            # status unknown; it wraps the route, whose later requests are observed.
            assert (await http.get(path)).status_code == status
            # FastAPI 0.16x runs included routes without calling route.app: the status
            # stays unknown there. Older FastAPI (the lowest bound, 0.133) calls it.
            assert await record.next_end() in {(None, Outcome.COMPLETE), (202, Outcome.COMPLETE)}
            assert (await http.get(path)).status_code == status
            assert await record.next_end() == (status, Outcome.COMPLETE)
        for _ in range(2):
            before = len(record.ends)
            assert (await http.get("/stream")).text == "first last"
            await record.next_end()
            # Neither chunk was sent after the end.
            assert seen[-2:] == [before, before]
        assert record.ends[-2:] == [(None, Outcome.COMPLETE), (200, Outcome.COMPLETE)]
        for _ in range(2):
            with pytest.raises(RuntimeError):
                await http.get("/boom")
            assert (await record.next_end())[1] is Outcome.RAISED
        assert (await http.get("/missing")).status_code == 404
        assert (await record.next_end())[1] is Outcome.RAISED
        assert (await http.get("/missing")).status_code == 404
        assert await record.next_end() == (404, Outcome.COMPLETE)


async def test_fastapi_streaming_dependency_holds_until_the_last_chunk(
    serve_app: ServeApp,
) -> None:
    record = Record()
    gate = asyncio.Event()
    seen: list[int] = []
    app = fastapi_app(record, gate, seen)
    async with serve_app(app) as address, httpx.AsyncClient() as http:
        # The first request runs unobserved (FastAPI's exit), the second observed.
        for _ in range(2):
            gate.clear()
            async with http.stream("GET", f"http://{address}/stream") as response:
                parts = response.aiter_bytes()
                assert await parts.__anext__() == b"first "
                assert len(record.ends) == len(seen) // 2
                gate.set()
                assert b"".join([part async for part in parts]) == b"last"
            await record.next_end()
    assert record.ends == [(None, Outcome.COMPLETE), (200, Outcome.COMPLETE)]
    assert seen == [0, 0, 1, 1]


async def test_fastapi_websocket_depends_holds_until_close(serve_app: ServeApp) -> None:
    import websockets

    record = Record()
    app = FastAPI()

    @app.websocket("/ws")
    async def echo(websocket: WebSocket, _: object = Depends(RecordingWS(record))) -> None:
        await websocket.accept()
        async for message in websocket.iter_text():
            await websocket.send_text(message)

    async with serve_app(app) as address:
        for _ in range(2):
            async with websockets.connect(f"ws://{address}/ws") as ws:
                await ws.send("hi")
                assert await ws.recv() == "hi"
                assert len(record.ends) < 2
            await record.next_end()
    # First unobserved (the endpoint returned after iter_text saw the close), then
    # observed (the disconnect message itself).
    assert record.ends == [(None, Outcome.COMPLETE), (101, Outcome.DISCONNECTED)]


async def test_a_backend_context_observes_fastapi_routes_from_their_first_request() -> None:
    from traffik.backends.inmemory import InMemoryBackend
    from traffik.lifecycle import LifecycleObserver, observe_routes

    record = Record()
    gate = asyncio.Event()
    gate.set()
    app = fastapi_app(record, gate, [])
    sub = FastAPI()

    @sub.get("/inner", dependencies=[Depends(RecordingHTTP(record))])
    async def inner() -> str:
        return "inner"

    @sub.get("/plain")
    async def plain() -> str:
        return "plain"

    app.mount("/sub", sub)
    backend = InMemoryBackend(namespace="lifecycle-routes")
    async with backend(app), client(app) as http:
        assert (await http.get("/depends")).status_code == 201
        assert await record.next_end() == (201, Outcome.COMPLETE)
        assert (await http.get("/missing")).status_code == 404
        assert await record.next_end() == (404, Outcome.COMPLETE)
        assert (await http.get("/sub/inner")).status_code == 200
        assert await record.next_end() == (200, Outcome.COMPLETE)
    observed = {
        getattr(r, "path", ""): isinstance(getattr(r, "app", None), LifecycleObserver)
        for r in [*app.routes, *sub.routes]
    }
    assert observed["/depends"]
    assert observed["/inner"]
    assert observed["/decorated"]
    assert not observed["/plain"]
    assert observe_routes(app) == 0  # already observed: nothing wrapped twice


async def test_included_routers_end_by_fastapi_exit_unless_the_app_is_observed() -> None:
    from fastapi import APIRouter

    from traffik.lifecycle import LifecycleObserver

    record = Record()
    router = APIRouter(dependencies=[Depends(RecordingHTTP(record))])

    @router.get("/routed", status_code=202)
    async def routed() -> str:
        return "routed"

    plain, observed = FastAPI(), FastAPI()
    for app in (plain, observed):
        app.include_router(router)
    observed.add_middleware(LifecycleObserver)  # observe every request, routers included
    async with client(plain) as http:
        # FastAPI runs included routes through its own (private) route contexts, which
        # no public attribute reaches: every request ends by the request-scoped exit.
        for _ in range(2):
            assert (await http.get("/routed")).status_code == 202
            # FastAPI 0.16x runs included routes without calling route.app: the status
            # stays unknown there. Older FastAPI (the lowest bound, 0.133) calls it.
            assert await record.next_end() in {(None, Outcome.COMPLETE), (202, Outcome.COMPLETE)}
    async with client(observed) as http:
        assert (await http.get("/routed")).status_code == 202
        assert await record.next_end() == (202, Outcome.COMPLETE)
