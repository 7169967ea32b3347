"""RateLimit fields: rendering from decisions, recording, and the headers middleware."""

from __future__ import annotations

import typing

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from traffik.backends.inmemory import InMemoryBackend
from traffik.decisions import NEVER, Decision
from traffik.exceptions import ConnectionThrottled
from traffik.headers import (
    DECISIONS_STATE_KEY,
    RateLimitHeadersMiddleware,
    get_decisions,
    rate_limit_headers,
    record_decision,
    sf_string,
)
from traffik.strategies import GCRAStrategy, TokenBucketStrategy
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


# -- the one merge, in raw ASGI form -------------------------------------------------


@pytest.mark.parametrize(
    ("decisions", "legacy"),
    [
        ({"a": ALLOWED}, False),
        ({"a": REFUSED}, False),
        ({"a": Decision(True, 5, -1, 0, 0, 1_000)}, False),
        ({"a": ALLOWED}, True),
        ({"a": ALLOWED, "b": REFUSED}, False),
        ({'we\u00efrd "name"': ALLOWED}, False),
    ],
)
def test_raw_fields_are_the_encoded_rendering(decisions: dict[str, Decision], legacy: bool) -> None:
    from traffik.headers import rate_limit_fields

    expected = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in rate_limit_headers(decisions, legacy=legacy)
    ]
    assert rate_limit_fields(decisions, legacy) == expected


def test_merge_replaces_every_ratelimit_field_and_keeps_the_rest() -> None:
    from traffik.headers import merge_fields, message_with_fields, write_recorded_fields

    state = {DECISIONS_STATE_KEY: {"a": ALLOWED}}
    raw = [(b"ratelimit", b"stale"), (b"X-RateLimit-Limit", b"1"), (b"x-other", b"keep")]
    merged = merge_fields(raw, [(b"ratelimit", b"new")])
    assert merged == [(b"x-other", b"keep"), (b"ratelimit", b"new")]

    message = {"type": "http.response.start", "status": 200, "headers": raw}
    sent = message_with_fields(message, state)
    assert message["headers"] is raw  # the response's own list is left alone
    assert sent["headers"] == [
        (b"x-other", b"keep"),
        (b"ratelimit-policy", b'"a";q=100;w=60'),
        (b"ratelimit", b'"a";r=50;t=30'),
    ]
    assert message_with_fields(message, {}) is message

    from starlette.responses import Response

    response = Response("x", headers={"RateLimit": "old"})
    for _ in range(2):  # applying twice never duplicates a field
        write_recorded_fields(state, response)
    assert response.headers.getlist("ratelimit") == ['"a";r=50;t=30']
    assert response.headers.getlist("ratelimit-policy") == ['"a";q=100;w=60']


# -- burst strategies: the quota is the configured rate ------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("strategy", "first", "second"),
    [
        # 5/s with a burst of 1: one unit now, the next 200 ms later.
        (GCRAStrategy(burst=1), '"b";r=0;t=1', '"b";r=0;t=1'),
        # 10/m with a bucket of 20: 20 units now, refilled at 10 per minute.
        (TokenBucketStrategy(burst_size=20), '"b";r=19;t=6', '"b";r=18;t=12'),
    ],
)
async def test_burst_strategies_report_the_configured_rate_as_quota(
    strategy: typing.Any, first: str, second: str
) -> None:
    from starlette.responses import Response

    rate = "5/s" if isinstance(strategy, GCRAStrategy) else "10/m"
    backend = InMemoryBackend(namespace="hdr-burst", clock=frozen_clock)
    throttle = HTTPThrottle("b", rate, strategy=strategy)
    app = Starlette()
    scope = {"type": "http", "method": "GET", "path": "/", "client": ("1.2.3.4", 1), "app": app}
    answers = []
    async with backend(app):
        for _ in range(2):
            response = Response()
            try:
                await throttle(request=Request(dict(scope)), response=response)
            except ConnectionThrottled as exc:
                answers.append((429, dict(exc.headers or {})))
            else:
                answers.append((200, dict(response.headers)))
    quota = '"b";q=5;w=1' if rate == "5/s" else '"b";q=10;w=60'
    assert [
        headers["ratelimit-policy" if code == 200 else "RateLimit-Policy"]
        for code, headers in answers
    ] == [quota, quota]
    assert answers[0] == (
        200,
        {"content-length": "0", "ratelimit-policy": quota, "ratelimit": first},
    )
    if rate == "5/s":
        assert answers[1][0] == 429  # the burst of 1 is spent: one unit per 200 ms
        assert answers[1][1]["RateLimit"] == second
    else:
        assert answers[1] == (
            200,
            {"content-length": "0", "ratelimit-policy": quota, "ratelimit": second},
        )
