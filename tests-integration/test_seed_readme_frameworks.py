"""The traffik 1.0.0b2 README's framework examples, run as written (minimal adaptations).

Covered: Quick Start 3 (decorator, Redis); the whole "Throttle Middleware" section;
"Throttle Backend Selection"; "Application Lifespan Management" (Starlette and
FastAPI); "Context-Aware (Dynamic) Backend Resolution".

Adaptations, each marked ``# README adaptation`` below:
- ``redis://localhost:6379/0`` (and the tenant URLs) become the session test server.
- Redis namespaces get a unique suffix, so runs sharing the server never see each
  other's counters; Redis examples whose assertions count requests get a fixed
  ``clock=`` so that a window boundary can never fall inside the test.
- Starlette's middleware entry ``(ThrottleMiddleware, {...})`` becomes
  ``Middleware(ThrottleMiddleware, **{...})``: Starlette >= 0.35 no longer accepts
  2-tuples (it raises ValueError before traffik is involved).
- ``routes=[...]`` become real routes; names the README leaves undefined
  (``app``/``backend`` in the filtering snippets, ``MyCustomBackend``,
  ``redis_backend``, a RedisBackend on the test server) are defined.
- Context-aware resolution: ``jwt.decode`` is replaced by a tiny stand-in decoding
  base64 JSON (no PyJWT dependency); ``request: Depends(api_throttle)`` (an
  annotation, which FastAPI rejects) becomes ``request: Request = Depends(api_throttle)``.
"""

from __future__ import annotations

import base64
import json
import typing
import uuid

import pytest
from starlette.testclient import TestClient

NOW = 1_699_999_980_000  # a multiple of 60 s: fixed windows start here


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


# -- Quick Start 3: decorators (FastAPI), Redis ---------------------------------


@pytest.mark.redis
def test_quick_start_3_decorator_with_redis(redis_url: str) -> None:
    from contextlib import asynccontextmanager

    from fastapi import FastAPI

    from traffik.backends.redis import RedisBackend
    from traffik.decorators import throttled
    from traffik.throttles import HTTPThrottle

    backend = RedisBackend(
        connection=redis_url,  # README adaptation: the test server
        namespace=unique("api"),  # README adaptation: unique namespace
        persistent=True,
        clock=lambda: NOW,  # README adaptation: no window boundary inside the test
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> typing.AsyncIterator[None]:
        async with backend(app):
            yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/api/limited")
    @throttled(HTTPThrottle(uid="limited", rate="5/m"))
    async def limited_endpoint() -> dict[str, str]:
        return {"data": "Limited access"}

    with TestClient(app) as client:
        statuses = [client.get("/api/limited").status_code for _ in range(6)]
        assert client.get("/api/limited").headers["retry-after"] == "60"
    assert statuses == [200] * 5 + [429]


# -- Throttle Middleware -----------------------------------------------------------


def test_middleware_basic_setup_fastapi() -> None:
    from fastapi import FastAPI

    from traffik.backends.inmemory import InMemoryBackend
    from traffik.middleware import MiddlewareThrottle, ThrottleMiddleware
    from traffik.throttles import HTTPThrottle

    app = FastAPI()
    backend = InMemoryBackend(namespace="api")

    # Create throttle
    api_throttle = HTTPThrottle(uid="api_global", rate="100/m")

    # Wrap in middleware throttle
    middleware_throttle = MiddlewareThrottle(api_throttle)

    # Add middleware
    app.add_middleware(
        ThrottleMiddleware, middleware_throttles=[middleware_throttle], backend=backend
    )

    @app.get("/a")
    async def a() -> dict[str, str]:
        return {"a": "a"}

    @app.get("/b")
    async def b() -> dict[str, str]:
        return {"b": "b"}

    backend.clock = lambda: NOW  # README adaptation: fixed clock for exact counts
    with TestClient(app) as client:
        statuses = [client.get("/a" if i % 2 else "/b").status_code for i in range(101)]
    # "api_global": one budget for the whole app per client, not one per path.
    assert statuses == [200] * 100 + [429]


def test_middleware_basic_setup_starlette() -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from traffik.backends.inmemory import InMemoryBackend
    from traffik.middleware import MiddlewareThrottle, ThrottleMiddleware
    from traffik.throttles import HTTPThrottle

    async def home(request: typing.Any) -> PlainTextResponse:
        return PlainTextResponse("home")

    backend = InMemoryBackend(namespace="api")

    api_throttle = HTTPThrottle(uid="api_throttle", rate="50/m")
    middleware_throttle = MiddlewareThrottle(api_throttle)

    app = Starlette(
        routes=[Route("/", home)],  # README adaptation: a real route
        middleware=[
            # README adaptation: Starlette >= 0.35 unpacks middleware entries as
            # (cls, args, kwargs); the README's 2-tuple (cls, kwargs) raises ValueError
            # inside Starlette, so it is written with Middleware(...).
            Middleware(
                ThrottleMiddleware,
                middleware_throttles=[middleware_throttle],
                backend=backend,
            )
        ],
    )
    backend.clock = lambda: NOW
    with TestClient(app) as client:
        statuses = [client.get("/").status_code for _ in range(51)]
    assert statuses == [200] * 50 + [429]


def filtering_app(backend: typing.Any = None) -> tuple[typing.Any, typing.Any]:
    """The ``app`` and ``backend`` the README's filtering snippets assume."""
    from fastapi import FastAPI

    from traffik.backends.inmemory import InMemoryBackend

    backend = backend or InMemoryBackend(namespace="filters", clock=lambda: NOW)
    app = FastAPI(lifespan=backend.lifespan)

    for path in ("/api/items", "/api/reports/x", "/admin/panel", "/public"):

        async def endpoint() -> dict[str, str]:
            return {"ok": "yes"}

        app.api_route(path, methods=["GET", "HEAD", "POST", "PUT", "DELETE"])(endpoint)
    return app, backend


def test_method_based_filtering() -> None:
    from traffik.middleware import MiddlewareThrottle, ThrottleMiddleware
    from traffik.throttles import HTTPThrottle

    app, backend = filtering_app()

    # Strict limits for write operations
    write_throttle = HTTPThrottle(uid="writes", rate="10/m")
    read_throttle = HTTPThrottle(uid="reads", rate="1000/m")

    write_middleware_throttle = MiddlewareThrottle(
        write_throttle, methods={"POST", "PUT", "DELETE"}
    )

    read_middleware_throttle = MiddlewareThrottle(read_throttle, methods={"GET", "HEAD"})

    app.add_middleware(
        ThrottleMiddleware,
        middleware_throttles=[write_middleware_throttle, read_middleware_throttle],
        backend=backend,  # If not set, uses app lifespan backend
    )
    with TestClient(app) as client:
        writes = [
            client.request(method, "/api/items").status_code
            for method in ("POST", "PUT", "DELETE") * 4
        ]
        reads = [client.get("/api/items").status_code for _ in range(20)]
    # Ten writes in all, whatever the method; reads are not affected.
    assert writes == [200] * 10 + [429] * 2
    assert reads == [200] * 20


def test_path_pattern_filtering() -> None:
    from traffik.middleware import MiddlewareThrottle, ThrottleMiddleware
    from traffik.throttles import HTTPThrottle

    app, backend = filtering_app()

    # String patterns and regex
    api_throttle = HTTPThrottle(uid="api", rate="100/m")
    admin_throttle = HTTPThrottle(uid="admin", rate="5/m")

    api_middleware_throttle = MiddlewareThrottle(
        api_throttle,
        path="/api/",  # Starts with /api/
    )
    admin_middleware_throttle = MiddlewareThrottle(
        admin_throttle,
        path=r"^/admin/.*",  # Regex pattern
    )

    app.add_middleware(
        ThrottleMiddleware,
        middleware_throttles=[admin_middleware_throttle, api_middleware_throttle],
        backend=backend,
    )
    with TestClient(app) as client:
        admin = [client.get("/admin/panel").status_code for _ in range(6)]
        api = [client.get("/api/items").status_code for _ in range(6)]
        public = [client.get("/public").status_code for _ in range(6)]
    assert admin == [200] * 5 + [429]
    assert api == public == [200] * 6


def test_custom_hook_based_filtering() -> None:
    from starlette.requests import HTTPConnection

    from traffik.middleware import MiddlewareThrottle, ThrottleMiddleware
    from traffik.throttles import HTTPThrottle

    app, backend = filtering_app()

    async def authenticated_only(connection: HTTPConnection) -> bool:
        """Apply throttle only to authenticated users"""
        return connection.headers.get("authorization") is not None

    async def intensive_operations(connection: HTTPConnection) -> bool:
        """Throttle resource-intensive endpoints"""
        intensive_paths = ["/api/reports/", "/api/analytics/", "/api/exports/"]
        return any(connection.scope["path"].startswith(p) for p in intensive_paths)

    auth_throttle = HTTPThrottle(uid="auth", rate="200/m")
    intensive_throttle = HTTPThrottle(uid="intensive", rate="20/m")

    auth_middleware_throttle = MiddlewareThrottle(auth_throttle, hook=authenticated_only)
    intensive_middleware_throttle = MiddlewareThrottle(
        intensive_throttle, hook=intensive_operations
    )

    app.add_middleware(
        ThrottleMiddleware,
        middleware_throttles=[intensive_middleware_throttle, auth_middleware_throttle],
        backend=backend,
    )
    with TestClient(app) as client:
        reports = [client.get("/api/reports/x").status_code for _ in range(21)]
        anonymous = [client.get("/api/items").status_code for _ in range(5)]
        authed = client.get("/api/items", headers={"authorization": "Bearer x"})
    assert reports == [200] * 20 + [429]
    assert anonymous == [200] * 5
    assert authed.headers["ratelimit"] == '"auth";r=199;t=60'


@pytest.mark.redis
def test_combined_filtering_and_best_practice_ordering(redis_url: str) -> None:
    from starlette.requests import HTTPConnection

    from traffik.backends.redis import RedisBackend
    from traffik.middleware import MiddlewareThrottle, ThrottleMiddleware
    from traffik.throttles import HTTPThrottle

    # README adaptation: the "redis_backend" the snippet assumes, on the test server.
    redis_backend = RedisBackend(connection=redis_url, namespace=unique("bp"), clock=lambda: NOW)
    app, redis_backend = filtering_app(redis_backend)

    async def authenticated_only(connection: HTTPConnection) -> bool:
        return connection.headers.get("authorization") is not None

    complex_throttle = HTTPThrottle(uid="complex", rate="25/m")

    # Combines ALL criteria: path AND method AND hook
    complex_middleware_throttle = MiddlewareThrottle(
        complex_throttle, path="/api/", methods={"POST"}, hook=authenticated_only
    )
    admin_middleware_throttle = MiddlewareThrottle(
        HTTPThrottle(uid="admin", rate="5/m"), path=r"^/admin/.*"
    )
    intensive_middleware_throttle = MiddlewareThrottle(
        HTTPThrottle(uid="intensive", rate="20/m"), path="/api/reports/"
    )
    api_middleware_throttle = MiddlewareThrottle(
        HTTPThrottle(uid="api", rate="100/m"), path="/api/"
    )

    # Example: Optimal middleware ordering
    app.add_middleware(
        ThrottleMiddleware,
        middleware_throttles=[
            complex_middleware_throttle,
            admin_middleware_throttle,  # Most specific
            intensive_middleware_throttle,  # Specific paths
            api_middleware_throttle,  # General API
        ],
        backend=redis_backend,
    )
    auth = {"authorization": "Bearer x"}
    with TestClient(app) as client:
        posts = [client.post("/api/items", headers=auth).status_code for _ in range(26)]
        unauthenticated = client.post("/api/items")
        report = client.get("/api/reports/x")
    assert posts == [200] * 25 + [429]
    assert unauthenticated.status_code == 200
    # The specific and the general throttle both count the report request.
    assert '"intensive";r=19' in report.headers["ratelimit"]
    assert '"api";r=73' in report.headers["ratelimit"]  # 25 posts + 1 unauthenticated + this


# -- Throttle Backend Selection ---------------------------------------------------


@pytest.mark.redis
def test_throttle_backend_selection(redis_url: str) -> None:
    from fastapi import Depends, FastAPI, Request

    from traffik.backends.inmemory import InMemoryBackend
    from traffik.backends.redis import RedisBackend
    from traffik.throttles import HTTPThrottle

    MyCustomBackend = InMemoryBackend  # README adaptation: a concrete "custom" backend

    shared_redis_backend = RedisBackend(
        connection=redis_url,  # README adaptation
        namespace=unique("shared"),  # README adaptation
        clock=lambda: NOW,  # README adaptation
    )
    app = FastAPI(lifespan=shared_redis_backend.lifespan)

    own = MyCustomBackend(namespace="own", clock=lambda: NOW)
    throttle_with_own_backend = HTTPThrottle(
        uid="custom_backend",
        rate="100/m",
        backend=own,  # Uses its own backend
    )
    # Uses backend from app lifespan
    throttle_with_shared_backend = HTTPThrottle(
        uid="shared_backend",
        rate="50/m",
    )

    @app.get("/api/custom", dependencies=[Depends(throttle_with_shared_backend)])
    async def endpoint_custom(
        request: Request = Depends(throttle_with_own_backend),
    ) -> dict[str, str]:
        return {"message": "Uses its own backend"}

    import asyncio

    asyncio.run(own.initialize())  # a custom backend has no lifespan here: open it once
    with TestClient(app) as client:
        response = client.get("/api/custom")
    assert response.json() == {"message": "Uses its own backend"}
    assert '"shared_backend";r=49' in response.headers["ratelimit"]
    assert '"custom_backend";r=99' in response.headers["ratelimit"]
    # The own-backend throttle's state is in the in-memory store, not in Redis.
    assert own.connection is not None
    assert [k for k in own.connection if "custom_backend" in k]
    assert not [k for k in own.connection if "shared_backend" in k]
    assert app.openapi()["paths"]["/api/custom"]["get"].get("parameters") is None


# -- Application Lifespan Management ---------------------------------------------


def test_lifespan_starlette() -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from traffik.backends.inmemory import InMemoryBackend
    from traffik.throttles import HTTPThrottle

    throttle = HTTPThrottle(uid="life", rate="1/m")

    async def home(request: typing.Any) -> PlainTextResponse:
        await throttle(request)
        return PlainTextResponse("ok")

    backend = InMemoryBackend(namespace="app")

    app = Starlette(
        routes=[Route("/", home)],  # README adaptation: a real route
        lifespan=backend.lifespan,  # Automatic cleanup
    )
    backend.clock = lambda: NOW
    with TestClient(app) as client:
        assert client.get("/").status_code == 200
        assert client.get("/").status_code == 429


@pytest.mark.redis
def test_lifespan_fastapi(redis_url: str) -> None:
    from contextlib import asynccontextmanager

    from fastapi import Depends, FastAPI

    from traffik.backends.redis import RedisBackend
    from traffik.throttles import HTTPThrottle

    backend = RedisBackend(connection=redis_url, namespace=unique("app"))  # README adaptation

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> typing.AsyncIterator[None]:
        # Startup
        async with backend(app, persistent=True, close_on_exit=True):
            yield
        # Shutdown - backend cleanup automatic

    app = FastAPI(lifespan=lifespan)

    @app.get("/", dependencies=[Depends(HTTPThrottle(uid="life", rate="100/m"))])
    async def home() -> dict[str, str]:
        return {"ok": "yes"}

    with TestClient(app) as client:
        assert client.get("/").status_code == 200
        assert client.get("/").headers["ratelimit-policy"] == '"life";q=100;w=60'


# -- Context-Aware (Dynamic) Backend Resolution ------------------------------------


class _FakeJWT:
    """README adaptation: stands in for PyJWT's ``jwt.decode`` (base64 JSON, no signature)."""

    @staticmethod
    def decode(token: str, key: str, algorithms: list[str]) -> dict[str, typing.Any]:
        return typing.cast("dict[str, typing.Any]", json.loads(base64.urlsafe_b64decode(token)))

    @staticmethod
    def encode(payload: dict[str, typing.Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


@pytest.mark.redis
def test_context_aware_backend_resolution(redis_url: str) -> None:
    import asyncio

    import redis.asyncio as redis_asyncio
    from fastapi import Depends, FastAPI, Request

    from traffik.backends.inmemory import InMemoryBackend
    from traffik.backends.redis import RedisBackend
    from traffik.throttles import HTTPThrottle

    jwt = _FakeJWT  # README adaptation: no PyJWT
    suffix = uuid.uuid4().hex[:8]

    # Shared throttle with context-aware backend resolution
    api_throttle = HTTPThrottle(
        uid="api_quota",
        rate="1000/h",
        context_backend=True,  # Resolve backend at runtime based on request context
    )

    TENANT_CONFIG = {
        "enterprise": {"redis_url": redis_url, "multiplier": 5.0},  # README adaptation
        "premium": {"redis_url": redis_url, "multiplier": 2.0},  # README adaptation
        "free": {"redis_url": None, "multiplier": 1.0},
    }

    async def tenant_middleware(request: Request, call_next: typing.Any) -> typing.Any:
        """Set up tenant-specific backend based on JWT"""
        token = (
            request.headers.get("authorization", "").split(" ")[1]
            if request.headers.get("authorization")
            else None
        )

        if token:
            payload = jwt.decode(token, "secret", algorithms=["HS256"])
            tier = payload.get("tenant_tier", "free")
            tenant_id = payload.get("tenant_id", "default")
        else:
            tier, tenant_id = "free", "anonymous"

        config = TENANT_CONFIG[tier]

        # Select backend based on tenant tier
        backend: typing.Any
        if config["redis_url"]:
            backend = RedisBackend(
                connection=config["redis_url"],
                namespace=f"tenant_{tenant_id}_{suffix}",  # README adaptation: unique
                persistent=True,
            )
        else:
            backend = InMemoryBackend(namespace=f"tenant_{tenant_id}")

        # Execute within tenant's backend context
        async with backend(request.app):
            return await call_next(request)

    app = FastAPI()
    app.middleware("http")(tenant_middleware)

    @app.get("/api/data")
    async def get_data(
        request: Request = Depends(api_throttle),
    ) -> dict[str, str]:  # README adaptation
        return {"data": "tenant-specific data"}

    token = jwt.encode({"tenant_tier": "enterprise", "tenant_id": "acme"})
    with TestClient(app) as client:
        enterprise = client.get("/api/data", headers={"authorization": f"Bearer {token}"})
        anonymous = client.get("/api/data")
    assert enterprise.json() == anonymous.json() == {"data": "tenant-specific data"}
    assert enterprise.headers["ratelimit"].startswith('"api_quota";r=999;')

    async def tenant_keys() -> list[bytes]:
        client = redis_asyncio.from_url(redis_url)
        try:
            return [k async for k in client.scan_iter(match=f"*tenant_acme_{suffix}*")]
        finally:
            await client.aclose()

    # The enterprise tenant's state went to its Redis namespace.
    assert asyncio.run(tenant_keys())
