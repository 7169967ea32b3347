"""Client identity: peer address, trusted proxies, IPv6 grouping, malformed headers."""

from __future__ import annotations

import asyncio
import typing

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from traffik.backends.inmemory import InMemoryBackend
from traffik.exceptions import AnonymousConnection
from traffik.identifiers import (
    ProxyConfig,
    client_address,
    configure_trusted_proxies,
    connection_identifier,
    get_ip_address,
    ip_identifier,
)
from traffik.throttles import HTTPThrottle


def make_request(
    client: tuple[str, int] | None = ("203.0.113.7", 1234),
    headers: typing.Sequence[tuple[str, str]] = (),
    app: typing.Any = None,
) -> Request:
    scope: dict[str, typing.Any] = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        "client": client,
    }
    if app is not None:
        scope["app"] = app
    return Request(scope)


PROXY = ProxyConfig.build(["10.0.0.0/8", "192.0.2.1"])


@pytest.mark.asyncio
async def test_default_identifier_is_the_peer_address() -> None:
    assert await connection_identifier(make_request()) == "203.0.113.7"


@pytest.mark.asyncio
async def test_forwarding_headers_are_ignored_without_trusted_proxies() -> None:
    request = make_request(headers=[("X-Forwarded-For", "1.1.1.1"), ("Forwarded", "for=2.2.2.2")])
    assert await connection_identifier(request) == "203.0.113.7"


def test_trusted_proxy_hop_walk_takes_the_first_untrusted_from_the_nearest() -> None:
    request = make_request(
        client=("10.0.0.5", 1),
        headers=[("X-Forwarded-For", "6.6.6.6, 198.51.100.9, 10.1.2.3, 192.0.2.1")],
    )
    assert str(client_address(request, PROXY)) == "198.51.100.9"


def test_untrusted_peer_ignores_headers_even_when_proxies_are_configured() -> None:
    request = make_request(client=("198.51.100.1", 1), headers=[("X-Forwarded-For", "6.6.6.6")])
    assert str(client_address(request, PROXY)) == "198.51.100.1"


def test_all_hops_trusted_gives_the_farthest() -> None:
    request = make_request(
        client=("10.0.0.5", 1), headers=[("X-Forwarded-For", "10.0.0.9, 10.0.0.8")]
    )
    assert str(client_address(request, PROXY)) == "10.0.0.9"


FORWARDED_PROXY = ProxyConfig.build(["10.0.0.0/8", "192.0.2.1"], headers=["forwarded"])


def test_rfc7239_forwarded_is_parsed_when_declared() -> None:
    request = make_request(
        client=("10.0.0.5", 1),
        headers=[
            ("Forwarded", 'for="[2001:db8:cafe::17]:4711";proto=https, for=10.0.0.7:80'),
            ("X-Forwarded-For", "9.9.9.9"),
        ],
    )
    assert str(client_address(request, FORWARDED_PROXY)) == "2001:db8:cafe::17"


def test_a_header_the_proxy_does_not_write_cannot_spoof_the_client() -> None:
    # A proxy that appends to X-Forwarded-For (nginx, ALB, Traefik, Caddy, Envoy) passes
    # a client's own Forwarded header through untouched: by default it is never read.
    ips = set()
    for forged in ("for=1.1.1.1", "for=2.2.2.2", "for=3.3.3.3"):
        request = make_request(
            client=("10.0.0.5", 1),
            headers=[("Forwarded", forged), ("X-Forwarded-For", "198.51.100.8")],
        )
        ips.add(str(client_address(request, PROXY)))
    assert ips == {"198.51.100.8"}


def test_forwarded_garbage_beyond_the_client_is_never_read() -> None:
    request = make_request(
        client=("10.0.0.5", 1),
        headers=[("Forwarded", "garbage;;x, proto, for=198.51.100.4;proto=https")],
    )
    assert str(client_address(request, FORWARDED_PROXY)) == "198.51.100.4"


def test_multiple_header_lines_are_joined_in_order() -> None:
    request = make_request(
        client=("10.0.0.5", 1),
        headers=[("X-Forwarded-For", "198.51.100.3"), ("X-Forwarded-For", "10.0.0.4")],
    )
    assert str(client_address(request, PROXY)) == "198.51.100.3"


@pytest.mark.parametrize(
    "headers",
    [
        [("X-Forwarded-For", "not-an-ip")],
        [("X-Forwarded-For", "1.2.3.4, garbage")],
        [("X-Forwarded-For", "[::1")],
        [("X-Forwarded-For", "999.1.1.1")],
        [("Forwarded", "for")],
        [("Forwarded", "proto=https")],
        [("Forwarded", "for=unknown")],
        [("Forwarded", 'for="_hidden"')],
        [("Forwarded", "for=[zz::1]")],
        [("X-Forwarded-For", "\u00e9\u00e9")],
    ],
)
def test_malformed_nearest_entry_falls_back_to_the_peer(headers: list[tuple[str, str]]) -> None:
    request = make_request(client=("10.0.0.5", 1), headers=headers)
    config = FORWARDED_PROXY if headers[0][0] == "Forwarded" else PROXY
    assert str(client_address(request, config)) == "10.0.0.5"


def test_garbage_beyond_the_client_is_never_read() -> None:
    request = make_request(
        client=("10.0.0.5", 1), headers=[("X-Forwarded-For", "garbage, 198.51.100.4")]
    )
    assert str(client_address(request, PROXY)) == "198.51.100.4"


@pytest.mark.asyncio
async def test_ipv6_clients_are_grouped_by_64_by_default() -> None:
    a = await connection_identifier(make_request(client=("2001:db8:1:2::1", 1)))
    b = await connection_identifier(make_request(client=("2001:db8:1:2:ffff:ffff:ffff:fffe", 1)))
    c = await connection_identifier(make_request(client=("2001:db8:1:3::1", 1)))
    assert a == b == "2001:db8:1:2::/64"
    assert c != a


@pytest.mark.asyncio
async def test_ipv6_prefix_is_configurable() -> None:
    per_address = ip_identifier(ipv6_prefix=128)
    per_56 = ip_identifier(ipv6_prefix=56)
    assert await per_address(make_request(client=("2001:db8::1", 1))) == "2001:db8::1"
    assert await per_56(make_request(client=("2001:db8:0:ff::1", 1))) == "2001:db8::/56"


@pytest.mark.asyncio
async def test_ipv4_mapped_ipv6_counts_as_ipv4() -> None:
    assert (
        await connection_identifier(make_request(client=("::ffff:198.51.100.2", 1)))
        == "198.51.100.2"
    )
    config = ProxyConfig.build(["::ffff:10.0.0.0/104"])
    request = make_request(client=("10.0.0.5", 1), headers=[("X-Forwarded-For", "198.51.100.8")])
    assert str(client_address(request, config)) == "198.51.100.8"


@pytest.mark.asyncio
async def test_non_ip_peer_is_keyed_by_its_name() -> None:
    assert await connection_identifier(make_request(client=("testclient", 50000))) == "testclient"


@pytest.mark.asyncio
async def test_no_client_raises_anonymous_connection() -> None:
    with pytest.raises(AnonymousConnection):
        await connection_identifier(make_request(client=None))
    assert get_ip_address(make_request(client=None)) is None


@pytest.mark.asyncio
async def test_unix_socket_proxy_can_be_trusted() -> None:
    identify = ip_identifier(["unix"])
    request = make_request(client=None, headers=[("X-Forwarded-For", "198.51.100.5")])
    assert await identify(request) == "198.51.100.5"
    with pytest.raises(AnonymousConnection):
        await identify(make_request(client=None))


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((["10.0.0.0/33"],), {}),
        ((["proxy.example"],), {}),
        (([],), {"ipv6_prefix": 0}),
        (([],), {"ipv6_prefix": 129}),
        (([],), {"ipv4_prefix": 33}),
        (([],), {"headers": ["x-real-ip"]}),
    ],
)
def test_bad_proxy_settings_raise_value_error(
    args: tuple[typing.Any, ...], kwargs: dict[str, typing.Any]
) -> None:
    with pytest.raises(ValueError):
        ProxyConfig.build(*args, **kwargs)


def test_a_single_string_is_one_proxy() -> None:
    assert ProxyConfig.build("10.0.0.1").is_trusted(
        ProxyConfig.build("10.0.0.1").trusted_proxies[0].network_address
    )


# -- through a real app ------------------------------------------------------------


def _app(backend: InMemoryBackend, throttle: HTTPThrottle) -> Starlette:
    async def endpoint(request: Request) -> JSONResponse:
        await throttle(request)
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/r", endpoint)], lifespan=backend.lifespan)


@pytest.mark.asyncio
async def test_rotated_x_forwarded_for_does_not_change_identity_without_trusted_proxies() -> None:
    backend = InMemoryBackend(namespace="ident-rot", clock=lambda: 0)
    app = _app(backend, HTTPThrottle("rot", "2/m"))
    async with (
        backend(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
    ):
        codes = [
            (
                await c.get(
                    "/r",
                    headers={
                        "X-Forwarded-For": f"198.51.100.{i}",
                        "Forwarded": f"for=198.51.100.{i}",
                    },
                )
            ).status_code
            for i in range(5)
        ]
    assert codes == [200, 200, 429, 429, 429]


@pytest.mark.asyncio
async def test_with_trusted_proxies_each_forwarded_client_has_its_own_budget() -> None:
    backend = InMemoryBackend(namespace="ident-trust", clock=lambda: 0)
    app = _app(backend, HTTPThrottle("trust", "1/m"))
    configure_trusted_proxies(app, ["127.0.0.1"])  # httpx's ASGITransport peer
    async with (
        backend(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
    ):
        first = await c.get("/r", headers={"X-Forwarded-For": "6.6.6.6, 198.51.100.1"})
        again = await c.get("/r", headers={"X-Forwarded-For": "7.7.7.7, 198.51.100.1"})
        other = await c.get("/r", headers={"X-Forwarded-For": "198.51.100.2"})
    assert (first.status_code, again.status_code, other.status_code) == (200, 429, 200)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "value",
    [
        "",
        ",,,",
        "not-an-ip",
        "1.2.3.4.5",
        "[::1",
        "for=",
        "\x7f",
        "a" * 5000,
        "::ffff:999.0.0.1",
        "1.2.3.4:99999:1",
    ],
)
async def test_forged_or_malformed_headers_never_500(value: str) -> None:
    backend = InMemoryBackend(namespace="ident-bad", clock=lambda: 0)
    app = _app(backend, HTTPThrottle("bad", "100/m"))
    configure_trusted_proxies(app, ["127.0.0.0/8"])
    async with (
        backend(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
    ):
        for name in ("X-Forwarded-For", "Forwarded"):
            response = await c.get("/r", headers={name: value})
            assert response.status_code == 200, (name, value, response.text)


@pytest.mark.asyncio
async def test_ipv6_clients_of_one_64_share_a_budget_in_an_app() -> None:
    backend = InMemoryBackend(namespace="ident-v6", clock=lambda: 0)
    app = _app(backend, HTTPThrottle("v6", "2/m"))

    async def get(host: str) -> int:
        transport = httpx.ASGITransport(app=app, client=(host, 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return (await c.get("/r")).status_code

    async with backend(app):
        codes = [await get(f"2001:db8:aa:bb::{i}") for i in range(1, 4)]
        other = await get("2001:db8:aa:cc::1")
        mapped = [await get("::ffff:198.51.100.77"), await get("198.51.100.77")]
        mapped.append(await get("::ffff:198.51.100.77"))
    assert codes == [200, 200, 429]
    assert other == 200
    assert mapped == [200, 200, 429]


_HEADER_BYTES = st.binary(max_size=300) | st.text(
    alphabet=st.sampled_from(list('0123456789abcdef.:[]",; =_-forFORunknown\t')), max_size=120
).map(lambda text: text.encode("latin-1"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.lists(
        st.tuples(st.sampled_from([b"x-forwarded-for", b"forwarded"]), _HEADER_BYTES),
        max_size=4,
    ),
    peer=st.sampled_from(["10.0.0.5", "::ffff:10.0.0.5", "fe80::1%eth0", "testclient", None]),
    forwarded=st.booleans(),
)
def test_arbitrary_forwarding_bytes_through_a_real_app_never_500(
    values: list[tuple[bytes, bytes]], peer: str | None, forwarded: bool
) -> None:
    backend = InMemoryBackend(namespace="ident-fuzz", clock=lambda: 0)
    app = _app(backend, HTTPThrottle("fuzz", "1000/m"))
    configure_trusted_proxies(
        app, ["10.0.0.0/8", "unix"], headers=["forwarded"] if forwarded else ["x-forwarded-for"]
    )
    scope: dict[str, typing.Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/r",
        "raw_path": b"/r",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"t"), *values],
        "client": None if peer is None else (peer, 1),
        "server": ("t", 80),
    }
    statuses: list[int] = []

    async def receive() -> dict[str, typing.Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: typing.MutableMapping[str, typing.Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def run() -> None:
        async with backend(app):
            await app(scope, receive, send)

    asyncio.run(run())
    assert statuses == [200]


# --- The bound on forwarding hops ---------------------------------------------


def _count_calls(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    import traffik.identifiers as identifiers

    calls = [0]
    real = getattr(identifiers, name)

    def counting(*args: typing.Any) -> typing.Any:
        calls[0] += 1
        return real(*args)

    monkeypatch.setattr(identifiers, name, counting)
    return calls


MEGABYTE_OF_TRUSTED = ", ".join(["10.1.2.3"] * 105_000)  # > 1 MB, all trusted


def test_max_hops_default_is_documented_and_validated() -> None:
    from traffik.identifiers import MAX_HOPS

    assert ProxyConfig.build(["10.0.0.0/8"]).max_hops == MAX_HOPS == 16
    for bad in (0, -1, True, 2.5, "8"):
        with pytest.raises(ValueError, match="max_hops must be a positive int"):
            ProxyConfig.build(["10.0.0.0/8"], max_hops=bad)  # type: ignore[arg-type]


def test_a_megabyte_of_trusted_hops_examines_only_max_hops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert len(MEGABYTE_OF_TRUSTED) > 1_000_000
    parsed = _count_calls(monkeypatch, "_node_ip")
    request = make_request(
        client=("10.0.0.5", 1),
        headers=[("X-Forwarded-For", "198.51.100.77, " + MEGABYTE_OF_TRUSTED)],
    )
    # Every hop examined is trusted and the walk stops at the bound: the farthest
    # hop examined is the client, as when the header ends there.
    assert str(client_address(request, PROXY)) == "10.1.2.3"
    assert parsed[0] == 16
    config = ProxyConfig.build(["10.0.0.0/8"], max_hops=3)
    parsed[0] = 0
    assert str(client_address(request, config)) == "10.1.2.3"
    assert parsed[0] == 3


def test_the_bound_counts_entries_across_repeated_header_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parsed = _count_calls(monkeypatch, "_node_ip")
    config = ProxyConfig.build(["10.0.0.0/8"], max_hops=4)
    lines = [("X-Forwarded-For", "198.51.100.1, 10.0.0.1")] + [
        ("X-Forwarded-For", "10.0.0.2, 10.0.0.3")
    ] * 1000
    request = make_request(client=("10.0.0.5", 1), headers=lines)
    assert str(client_address(request, config)) == "10.0.0.2"
    assert parsed[0] == 4
    # Within the bound, the client is found as before.
    near = make_request(
        client=("10.0.0.5", 1),
        headers=[("X-Forwarded-For", "6.6.6.6, 198.51.100.1, 10.0.0.2, 10.0.0.3")],
    )
    assert str(client_address(near, config)) == "198.51.100.1"


def test_forwarded_header_is_bounded_too(monkeypatch: pytest.MonkeyPatch) -> None:
    elements = _count_calls(monkeypatch, "_forwarded_node")
    config = ProxyConfig.build(["10.0.0.0/8"], headers=["forwarded"], max_hops=5)
    huge = ", ".join(["for=10.9.9.9;proto=https"] * 50_000)
    request = make_request(
        client=("10.0.0.5", 1), headers=[("Forwarded", "for=198.51.100.2, " + huge)]
    )
    assert str(client_address(request, config)) == "10.9.9.9"
    assert elements[0] == 5


def test_max_hops_reaches_configure_trusted_proxies_and_ip_identifier() -> None:
    app = Starlette()
    assert configure_trusted_proxies(app, ["10.0.0.0/8"], max_hops=2).max_hops == 2
    identifier = ip_identifier(["10.0.0.0/8"], max_hops=7)
    assert identifier.proxy_config.max_hops == 7  # type: ignore[attr-defined]


def test_empty_entries_count_towards_the_bound() -> None:
    config = ProxyConfig.build(["10.0.0.0/8"], max_hops=4)
    request = make_request(
        client=("10.0.0.5", 1), headers=[("X-Forwarded-For", "198.51.100.1" + "," * 100_000)]
    )
    # Nothing but empty entries within the bound: no hop to read, the peer is the client.
    assert str(client_address(request, config)) == "10.0.0.5"
