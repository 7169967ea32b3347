"""RateLimit fields: rendering from decisions, recording, and the headers middleware."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from traffik.backends.inmemory import InMemoryBackend
from traffik.decisions import NEVER, Decision
from traffik.headers import (
    DECISIONS_STATE_KEY,
    RateLimitHeadersMiddleware,
    get_decisions,
    rate_limit_headers,
    record_decision,
    sf_string,
)
from traffik.throttles import HTTPThrottle

ALLOWED = Decision(True, 100, 50, 30_000, 0, 60_000)
REFUSED = Decision(False, 10, 0, 4_001, 4_001, 1_000)


def frozen_clock() -> int:
    """A clock stopped at a window boundary of every window used here."""
    return 100 * 3_600_000


def test_single_allowed_decision() -> None:
    assert rate_limit_headers({"burst": ALLOWED}) == [
        ("RateLimit-Policy", '"burst";q=100;w=60'),
        ("RateLimit", '"burst";r=50;t=30'),
    ]


def test_window_and_times_round_up_to_whole_seconds() -> None:
    d = Decision(True, 5, 4, 1, 0, 500)
    assert dict(rate_limit_headers({"x": d})) == {
        "RateLimit-Policy": '"x";q=5;w=1',
        "RateLimit": '"x";r=4;t=1',
    }


def test_refused_decision_t_is_the_wait_and_retry_after_is_opt_in() -> None:
    fields = dict(rate_limit_headers({"p": REFUSED}, retry_after=True))
    assert fields["RateLimit"] == '"p";r=0;t=5'
    assert fields["Retry-After"] == "5"
    assert "Retry-After" not in dict(rate_limit_headers({"p": REFUSED}))


def test_never_admissible_decision_has_no_retry_after() -> None:
    never = Decision(False, 10, 10, 0, NEVER, 60_000)
    fields = dict(rate_limit_headers({"n": never}, retry_after=True))
    assert "Retry-After" not in fields
    assert fields["RateLimit"] == '"n";r=10;t=0'


def test_stacked_decisions_combine_most_restrictive_first() -> None:
    sustained = Decision(True, 1000, 900, 3_600_000, 0, 3_600_000)
    burst = Decision(True, 10, 2, 20_000, 0, 60_000)
    fields = dict(rate_limit_headers({"sustained": sustained, "burst": burst}))
    assert fields["RateLimit-Policy"] == '"burst";q=10;w=60,"sustained";q=1000;w=3600'
    assert fields["RateLimit"] == '"burst";r=2;t=20,"sustained";r=900;t=3600'
    refused_last = dict(rate_limit_headers([("burst", burst), ("p", REFUSED)], retry_after=True))
    assert refused_last["RateLimit"].startswith('"p";r=0;t=5,')
    assert refused_last["Retry-After"] == "5"


def test_unknown_remaining_is_left_out_of_the_ratelimit_field() -> None:
    custom = Decision(True, 10, -1, 0, 0, 60_000)
    fields = dict(rate_limit_headers({"custom": custom, "burst": ALLOWED}))
    assert fields["RateLimit-Policy"] == '"burst";q=100;w=60,"custom";q=10;w=60'
    assert fields["RateLimit"] == '"burst";r=50;t=30'


def test_legacy_fields_describe_the_most_restrictive_policy_with_delta_reset() -> None:
    fields = dict(rate_limit_headers({"a": ALLOWED, "p": REFUSED}, legacy=True))
    assert fields["X-RateLimit-Limit"] == "10"
    assert fields["X-RateLimit-Remaining"] == "0"
    assert fields["X-RateLimit-Reset"] == "5"
    assert "X-RateLimit-Limit" not in dict(rate_limit_headers({"a": ALLOWED}))


def test_no_decisions_no_fields() -> None:
    assert rate_limit_headers({}) == []


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("api", '"api"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("caf\u00e9\n", '"caf??"'),
    ],
)
def test_policy_names_are_valid_sf_strings(name: str, expected: str) -> None:
    assert sf_string(name) == expected


def test_record_and_get_decisions_on_a_scope() -> None:
    scope: dict[str, object] = {"type": "http"}
    record_decision(scope, "a", ALLOWED)
    record_decision(scope, "b", REFUSED)
    record_decision(scope, "a", REFUSED)
    assert get_decisions(scope) == {"a": REFUSED, "b": REFUSED}
    assert list(get_decisions(scope)) == ["a", "b"]
    assert get_decisions({"type": "http"}) == {}


# -- middleware ---------------------------------------------------------------------


def _app(backend: InMemoryBackend, *throttles: HTTPThrottle, legacy: bool = False) -> Starlette:
    async def endpoint(request: Request) -> JSONResponse:
        for throttle in throttles:
            await throttle(request)
        seen = {uid: d.remaining for uid, d in request.state.traffik_decisions.items()}
        return JSONResponse(seen, headers={"RateLimit": "stale"})

    async def plain(request: Request) -> PlainTextResponse:
        return PlainTextResponse("no throttle")

    return Starlette(
        routes=[Route("/t", endpoint), Route("/plain", plain)],
        middleware=[Middleware(RateLimitHeadersMiddleware, legacy=legacy)],
    )


@pytest.mark.asyncio
async def test_middleware_adds_fields_to_allowed_and_throttled_responses() -> None:
    backend = InMemoryBackend(namespace="hdr-mw", clock=frozen_clock)
    app = _app(backend, HTTPThrottle("burst", "2/m"), HTTPThrottle("sustained", "10/h"))
    async with (
        backend(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
    ):
        first = await c.get("/t")
        assert first.status_code == 200
        assert first.json() == {"burst": 1, "sustained": 9}
        assert first.headers.get_list("RateLimit") == ['"burst";r=1;t=60,"sustained";r=9;t=3600']
        assert first.headers["RateLimit-Policy"] == '"burst";q=2;w=60,"sustained";q=10;w=3600'
        await c.get("/t")
        third = await c.get("/t")
        assert third.status_code == 429
        assert third.headers["Retry-After"] == "60"
        assert third.headers.get_list("RateLimit") == ['"burst";r=0;t=60']
        plain = await c.get("/plain")
        assert "RateLimit" not in plain.headers


@pytest.mark.asyncio
async def test_middleware_legacy_option() -> None:
    backend = InMemoryBackend(namespace="hdr-legacy", clock=frozen_clock)
    app = _app(backend, HTTPThrottle("one", "3/m"), legacy=True)
    async with (
        backend(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
    ):
        response = await c.get("/t")
    assert response.headers["X-RateLimit-Limit"] == "3"
    assert response.headers["X-RateLimit-Remaining"] == "2"
    assert response.headers["X-RateLimit-Reset"] == "60"


@pytest.mark.asyncio
async def test_middleware_passes_lifespan_and_websocket_through() -> None:
    calls = []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        calls.append(scope["type"])

    middleware = RateLimitHeadersMiddleware(app)
    await middleware({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    await middleware({"type": "websocket"}, None, None)  # type: ignore[arg-type]
    assert calls == ["lifespan", "websocket"]


@pytest.mark.asyncio
async def test_state_key_is_request_state_attribute() -> None:
    backend = InMemoryBackend(namespace="hdr-state", clock=frozen_clock)
    throttle = HTTPThrottle("st", "5/m")

    async def endpoint(request: Request) -> JSONResponse:
        await throttle(request)
        decision = get_decisions(request)["st"]
        assert request.scope["state"][DECISIONS_STATE_KEY]["st"] is decision
        return JSONResponse({"remaining": decision.remaining, "allowed": decision.allowed})

    app = Starlette(routes=[Route("/s", endpoint)])
    async with (
        backend(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
    ):
        assert (await c.get("/s")).json() == {"remaining": 4, "allowed": True}


def test_set_response_headers_replaces_same_named_fields_only() -> None:
    from starlette.responses import Response

    from traffik.headers import set_response_headers

    response = Response("x", headers={"RateLimit": "old", "X-Other": "keep"})
    set_response_headers(response, rate_limit_headers({"a": ALLOWED}))
    assert response.headers.getlist("ratelimit") == ['"a";r=50;t=30']
    assert response.headers["ratelimit-policy"] == '"a";q=100;w=60'
    assert response.headers["x-other"] == "keep"
    assert response.headers["content-length"] == "1"
