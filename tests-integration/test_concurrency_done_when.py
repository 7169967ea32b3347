"""Issue 23, done when: concurrency limits on real servers, through every integration.

- 10 concurrent requests to a slow route with limit=2 from one client: exactly
  2 x 200 and 8 x 429, and two more admitted once those finish (memory, Redis, the
  3-master Cluster, Memcached). The slow route awaits an event, not the clock.
- every integration: FastAPI Depends and decorator, Starlette middleware rules and
  decorator, ``hold()``, combined with a rate throttle; WebSockets (3 open per client);
- a streaming response holds its slot until its last chunk; a client leaving frees
  its slot at once (a real uvicorn);
- two uvicorn processes sharing Redis hold at most ``limit`` together; a process
  SIGKILLed while holding slots frees them within one lease.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import textwrap
import time
import typing
import uuid

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from traffik import events
from traffik.backends.inmemory import InMemoryBackend
from traffik.concurrency import ConcurrencyThrottle
from traffik.exceptions import ConnectionThrottled
from traffik.fastapi import throttled as fastapi_throttled
from traffik.starlette import MiddlewareThrottle, ThrottleMiddleware
from traffik.starlette import throttled as starlette_throttled
from traffik.testing.servers import find_free_port
from traffik.throttles import HTTPThrottle

if typing.TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from conftest import ServeApp  # type: ignore[import-not-found]

pytestmark = pytest.mark.asyncio


def make_backend(request: pytest.FixtureRequest, kind: str, namespace: str) -> typing.Any:
    if kind == "memory":
        return InMemoryBackend(namespace=namespace)
    if kind in ("redis", "cluster"):
        from traffik.redis import RedisBackend

        if kind == "redis":
            return RedisBackend(request.getfixturevalue("redis_url"), namespace=namespace)
        cluster = request.getfixturevalue("redis_cluster")
        return RedisBackend(cluster.url, namespace=namespace, cluster=True)
    from traffik.memcached import MemcachedBackend

    server = request.getfixturevalue("memcached_server")
    return MemcachedBackend(server.host, server.port, namespace=namespace)


class Gate:
    """A slow route's switch: counts who is inside, and lets them out on ``open()``."""

    def __init__(self, expect: int) -> None:
        self.inside = 0
        self.expect = expect
        self.all_inside = asyncio.Event()
        self.released = asyncio.Event()

    async def pass_through(self) -> None:
        self.inside += 1
        if self.inside >= self.expect:
            self.all_inside.set()
        await self.released.wait()


def client(app: typing.Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def ten_then_two(http: httpx.AsyncClient, path: str, gate: Gate) -> None:
    """The done-when scenario: 10 at once with limit 2, then 2 more after they finish."""
    tasks = [asyncio.ensure_future(http.get(path)) for _ in range(10)]
    await asyncio.wait_for(gate.all_inside.wait(), 10)
    refused = []
    for task in asyncio.as_completed(tasks):
        response = await task
        if response.status_code == 429:
            refused.append(response)
        if len(refused) == 8:
            break
    assert len(refused) == 8
    assert all(r.headers["retry-after"] == "1" for r in refused)
    assert gate.inside == 2
    gate.released.set()
    codes = collections.Counter(r.status_code for r in await asyncio.gather(*tasks))
    assert codes == {200: 2, 429: 8}
    more = await asyncio.gather(http.get(path), http.get(path))
    assert [r.status_code for r in more] == [200, 200]


@pytest.mark.parametrize(
    "kind",
    [
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("cluster", marks=pytest.mark.cluster),
        pytest.param("memcached", marks=pytest.mark.memcached),
    ],
)
async def test_ten_concurrent_requests_with_limit_two(
    request: pytest.FixtureRequest, kind: str
) -> None:
    backend = make_backend(request, kind, f"conc-{uuid.uuid4().hex[:8]}")
    gate = Gate(expect=2)
    reports = ConcurrencyThrottle("reports", 2, backend=backend)
    app = FastAPI()

    @app.get("/report", dependencies=[Depends(reports)])
    async def report() -> dict[str, str]:
        await gate.pass_through()
        return {"report": "ready"}

    seen: list[str] = []
    unsubscribe = events.subscribe(lambda e: seen.append(e.kind))
    try:
        async with backend(), client(app) as http:
            await ten_then_two(http, "/report", gate)
    finally:
        unsubscribe()
    assert seen.count("slot_taken") == 4
    assert seen.count("slot_refused") == 8
    assert "backend_error" not in seen
    assert "slot_expired" not in seen


async def test_every_http_integration_admits_exactly_the_limit() -> None:
    backend = InMemoryBackend(namespace="conc-integrations")
    gates: dict[str, Gate] = {}

    def gate_for(path: str) -> Gate:
        return gates.setdefault(path, Gate(expect=2))

    # Starlette: a middleware rule, and the decorator.
    @starlette_throttled(ConcurrencyThrottle("decorated", 2))
    async def decorated(request: Request) -> Response:
        await gate_for("/decorated").pass_through()
        return PlainTextResponse("ok")

    async def ruled(request: Request) -> Response:
        await gate_for("/ruled").pass_through()
        return PlainTextResponse("ok")

    held = ConcurrencyThrottle("held", 2)

    async def direct(request: Request) -> Response:
        async with held.hold(request):
            await gate_for("/direct").pass_through()
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Route("/decorated", decorated), Route("/ruled", ruled), Route("/direct", direct)],
        lifespan=backend.lifespan,
    )
    app.add_middleware(
        ThrottleMiddleware,
        middleware_throttles=[MiddlewareThrottle(ConcurrencyThrottle("ruled", 2), prefix="/ruled")],
    )
    # FastAPI: the decorator, and a rate throttle beside a concurrency throttle.
    api = FastAPI(lifespan=backend.lifespan)

    @api.get("/fdecorated")
    @fastapi_throttled(ConcurrencyThrottle("fdecorated", 2))
    async def fdecorated() -> str:
        await gate_for("/fdecorated").pass_through()
        return "ok"

    @api.get(
        "/combined",
        dependencies=[Depends(HTTPThrottle("rate", "100/m")), Depends(ConcurrencyThrottle("c", 2))],
    )
    async def combined() -> str:
        await gate_for("/combined").pass_through()
        return "ok"

    async with backend():
        async with client(app) as http:
            for path in ("/decorated", "/ruled", "/direct"):
                await ten_then_two(http, path, gate_for(path))
        async with client(api) as http:
            for path in ("/fdecorated", "/combined"):
                await ten_then_two(http, path, gate_for(path))
            # The rate throttle (first) counted all 13 requests of /combined, the 8
            # refused by the concurrency throttle included.
            response = await http.get("/combined")
            assert response.headers["ratelimit"].startswith('"rate";r=87;')


async def test_a_rate_refusal_after_the_slot_gives_the_slot_back() -> None:
    backend = InMemoryBackend(namespace="conc-rate-after")
    api = FastAPI()
    slots = ConcurrencyThrottle("slots", 1, backend=backend)

    @api.get(
        "/",
        dependencies=[Depends(slots), Depends(HTTPThrottle("rate", "1/m", backend=backend))],
    )
    async def root() -> str:
        return "ok"

    seen: list[str] = []
    unsubscribe = events.subscribe(lambda e: seen.append(e.kind))
    try:
        async with backend(), client(api) as http:
            codes = [(await http.get("/")).status_code for _ in range(3)]
    finally:
        unsubscribe()
    # The rate refuses after the slot was taken: each refusal gives its slot back,
    # so every request got one (a kept slot would refuse the next with limit=1).
    assert codes == [200, 429, 429]
    assert seen.count("slot_taken") == 3
    assert "slot_refused" not in seen


async def test_hold_refuses_through_the_handler_and_outside_integrations_says_how() -> None:
    backend = InMemoryBackend(namespace="conc-hold")
    throttle = ConcurrencyThrottle("hold", 1, backend=backend)
    request = Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/",
            "headers": [],
            "client": ("1.2.3.4", 1),
            "state": {},
        }
    )
    async with backend():
        async with throttle.hold(request):
            with pytest.raises(ConnectionThrottled) as refused:
                async with throttle.hold(request):
                    pass
            assert refused.value.headers["Retry-After"] == "1"
        async with throttle.hold(request):
            pass
        from traffik.exceptions import ConfigurationError

        with pytest.raises(ConfigurationError, match="hold"):
            await throttle(request)


async def test_bad_limits_and_leases_fail_at_construction() -> None:
    for limit in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="limit must be a positive whole number"):
            ConcurrencyThrottle("bad", limit)  # type: ignore[arg-type]
    for lease in (0, -1, float("inf"), float("nan"), True, "30"):
        with pytest.raises(ValueError, match="lease must be a positive number of seconds"):
            ConcurrencyThrottle("bad", 1, lease=lease)  # type: ignore[arg-type]


# -- a real uvicorn: WebSockets, streaming, disconnects -------------------------------------


async def test_at_most_three_open_websockets_per_client(serve_app: ServeApp) -> None:
    import websockets
    from websockets.exceptions import InvalidStatus

    backend = InMemoryBackend(namespace="conc-ws")

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        async for message in websocket.iter_text():
            await websocket.send_text(message)

    app = Starlette(routes=[WebSocketRoute("/ws", echo)], lifespan=backend.lifespan)
    app.add_middleware(ThrottleMiddleware, middleware_throttles=[ConcurrencyThrottle("sockets", 3)])
    async with serve_app(app) as address:
        url = f"ws://{address}/ws"
        sockets = [await websockets.connect(url) for _ in range(3)]
        for ws in sockets:
            await ws.send("hi")
            assert await ws.recv() == "hi"
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(url)
        assert refused.value.response.status_code == 429
        await sockets.pop().close()
        for _ in range(50):  # the close reaches the server, then the slot is free
            try:
                sockets.append(await websockets.connect(url))
                break
            except InvalidStatus:
                await asyncio.sleep(0.02)
        assert len(sockets) == 3, "no slot came back after a close"
        for ws in sockets:
            await ws.close()


async def test_a_stream_holds_its_slot_until_its_last_chunk(serve_app: ServeApp) -> None:
    backend = InMemoryBackend(namespace="conc-stream")
    last = asyncio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        yield b"first "
        await last.wait()
        yield b"last"

    async def stream(request: Request) -> Response:
        if request.query_params.get("stream"):
            return StreamingResponse(chunks())
        return PlainTextResponse("quick")

    app = Starlette(routes=[Route("/stream", stream)], lifespan=backend.lifespan)
    app.add_middleware(ThrottleMiddleware, middleware_throttles=[ConcurrencyThrottle("stream", 1)])
    async with serve_app(app) as address, httpx.AsyncClient() as http:
        url = f"http://{address}/stream"
        async with http.stream("GET", url, params={"stream": "1"}) as response:
            parts = response.aiter_bytes()
            assert await parts.__anext__() == b"first "
            assert (await http.get(url)).status_code == 429
            last.set()
            assert b"".join([p async for p in parts]) == b"last"
        assert (await http.get(url)).status_code == 200


async def test_a_client_leaving_frees_its_slot_at_once(serve_app: ServeApp) -> None:
    backend = InMemoryBackend(namespace="conc-leave")
    entered = asyncio.Event()
    never = asyncio.Event()

    async def slow(request: Request) -> Response:
        if request.query_params.get("block"):
            entered.set()
            await never.wait()
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/slow", slow)], lifespan=backend.lifespan)
    app.add_middleware(ThrottleMiddleware, middleware_throttles=[ConcurrencyThrottle("leave", 1)])
    async with serve_app(app) as address, httpx.AsyncClient() as http:
        host, port = address.split(":")
        _reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"GET /slow?block=1 HTTP/1.1\r\nHost: {address}\r\n\r\n".encode())
        await writer.drain()
        await asyncio.wait_for(entered.wait(), 5)
        assert (await http.get(f"http://{address}/slow")).status_code == 429
        writer.close()
        await writer.wait_closed()
        started = time.monotonic()
        for _ in range(100):
            status = (await http.get(f"http://{address}/slow")).status_code
            if status == 200:
                break
            await asyncio.sleep(0.01)
        assert status == 200, "the slot of a client that left was never freed"
        # "At once": while the endpoint is still blocked, well under a second.
        assert time.monotonic() - started < 1.0
        assert not never.is_set()
        never.set()


# -- processes sharing Redis -----------------------------------------------------------------

APP = """
import asyncio, os
from fastapi import Depends, FastAPI
from traffik.concurrency import ConcurrencyThrottle
from traffik.redis import RedisBackend

backend = RedisBackend(os.environ["REDIS_URL"], namespace=os.environ["NAMESPACE"])
slots = ConcurrencyThrottle("slow", 2, lease=float(os.environ["LEASE"]))
app = FastAPI(lifespan=backend.lifespan)

inside = 0

@app.get("/slow", dependencies=[Depends(slots)])
async def slow(hold: float = 0.5):
    global inside
    inside += 1
    try:
        await asyncio.sleep(hold)
    finally:
        inside -= 1
    return {"ok": True}

@app.get("/inside")
async def how_many_inside():
    return inside
"""


class Uvicorn:
    def __init__(self, folder: Path, redis_url: str, namespace: str, lease: float) -> None:
        self.port = find_free_port()
        env = {**os.environ, "REDIS_URL": redis_url, "NAMESPACE": namespace, "LEASE": str(lease)}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "slow_app:app",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            cwd=folder,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    async def ready(self, http: httpx.AsyncClient) -> None:
        for _ in range(300):
            try:
                await http.get(f"{self.url}/docs")
                return
            except httpx.TransportError:
                await asyncio.sleep(0.05)
        raise RuntimeError("uvicorn did not start")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def app_folder(tmp_path: Path) -> Path:
    (tmp_path / "slow_app.py").write_text(textwrap.dedent(APP))
    return tmp_path


@pytest.mark.redis
async def test_two_processes_sharing_redis_hold_at_most_the_limit(
    app_folder: Path, redis_url: str
) -> None:
    namespace = f"conc-procs-{uuid.uuid4().hex[:8]}"
    servers = [Uvicorn(app_folder, redis_url, namespace, lease=30) for _ in range(2)]
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            for server in servers:
                await server.ready(http)
            responses = await asyncio.gather(
                *(http.get(f"{servers[n % 2].url}/slow", params={"hold": 1}) for n in range(10))
            )
            codes = collections.Counter(r.status_code for r in responses)
            assert codes == {200: 2, 429: 8}
    finally:
        for server in servers:
            server.stop()


@pytest.mark.redis
async def test_a_killed_process_frees_its_slots_within_one_lease(
    app_folder: Path, redis_url: str
) -> None:
    namespace = f"conc-kill-{uuid.uuid4().hex[:8]}"
    lease = 1.0
    doomed = Uvicorn(app_folder, redis_url, namespace, lease=lease)
    other = Uvicorn(app_folder, redis_url, namespace, lease=lease)
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            await doomed.ready(http)
            await other.ready(http)
            holding = [
                asyncio.ensure_future(http.get(f"{doomed.url}/slow", params={"hold": 3600}))
                for _ in range(2)
            ]
            for _ in range(200):
                if (await http.get(f"{doomed.url}/inside")).json() == 2:
                    break
                await asyncio.sleep(0.02)
            else:
                pytest.fail(f"the doomed process never held its two slots: {holding}")
            assert (await http.get(f"{other.url}/slow", params={"hold": 0})).status_code == 429
            doomed.process.send_signal(signal.SIGKILL)
            doomed.process.wait()
            killed = time.monotonic()
            await asyncio.gather(*holding, return_exceptions=True)
            for _ in range(200):
                if (await http.get(f"{other.url}/slow", params={"hold": 0})).status_code == 200:
                    break
                await asyncio.sleep(0.02)
            freed_after = time.monotonic() - killed
            assert freed_after <= lease + 0.5, f"slots freed {freed_after:.2f} s after the kill"
    finally:
        doomed.stop()
        other.stop()


async def test_websocket_slots_through_fastapi_depends_and_the_starlette_decorator() -> None:
    import contextlib

    from starlette.testclient import TestClient, WebSocketDenialResponse

    backend = InMemoryBackend(namespace="conc-ws-more")
    api = FastAPI(lifespan=backend.lifespan)

    @api.websocket("/ws", dependencies=[Depends(ConcurrencyThrottle("f-sockets", 2))])
    async def fastapi_ws(websocket: WebSocket) -> None:
        await websocket.accept()
        async for message in websocket.iter_text():
            await websocket.send_text(message)

    @starlette_throttled(ConcurrencyThrottle("s-sockets", 2))
    async def starlette_ws(websocket: WebSocket) -> None:
        await websocket.accept()
        async for message in websocket.iter_text():
            await websocket.send_text(message)

    app = Starlette(routes=[WebSocketRoute("/ws", starlette_ws)], lifespan=backend.lifespan)
    for target in (api, app):
        with TestClient(target) as http:
            with contextlib.ExitStack() as sockets:
                for _ in range(2):
                    sockets.enter_context(http.websocket_connect("/ws"))
                with (
                    pytest.raises(WebSocketDenialResponse) as refused,
                    http.websocket_connect("/ws"),
                ):
                    pass
                assert refused.value.status_code == 429
            with http.websocket_connect("/ws") as ws:
                ws.send_text("again")
                assert ws.receive_text() == "again"


async def test_fastapi_shows_no_throttle_parameter_in_openapi() -> None:
    api = FastAPI()
    slots = ConcurrencyThrottle("slots", 2)

    @api.get("/dep", dependencies=[Depends(slots)])
    async def dep(q: int = 0) -> int:
        return q

    @api.get("/deco")
    @fastapi_throttled(slots)
    async def deco(q: int = 0) -> int:
        return q

    paths = api.openapi()["paths"]
    for path in ("/dep", "/deco"):
        names = [p["name"] for p in paths[path]["get"].get("parameters", [])]
        assert names == ["q"], f"{path} shows {names}"


@pytest.mark.redis
async def test_a_dead_redis_falls_back_to_slots_in_this_process(
    make_redis_server: typing.Callable[..., typing.Any],
) -> None:
    from traffik.redis import RedisBackend

    server = make_redis_server()
    backend = RedisBackend(server.url, namespace="conc-dead")
    throttle = ConcurrencyThrottle("dead", 1, backend=backend)
    seen: list[str] = []
    unsubscribe = events.subscribe(lambda e: seen.append(e.kind))
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "state": {},
             "client": ("10.0.0.1", 1)}  # fmt: skip
    try:
        async with backend():
            server.kill()
            # The default policy falls back to local slots: the limit still holds here,
            # and nobody gets a 500.
            async with throttle.hold(Request(scope)):
                with pytest.raises(ConnectionThrottled):
                    async with throttle.hold(Request(scope)):
                        pass
            async with throttle.hold(Request(scope)):
                pass
    finally:
        unsubscribe()
    assert "backend_error" in seen
    assert "fallback" in seen
