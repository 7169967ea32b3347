"""Client identity: who is making this request?

The default identifier, :func:`connection_identifier`, keys a connection by the
client's IP address as the ASGI server reports it (``scope["client"]``). It trusts
no forwarding header: anyone can send ``X-Forwarded-For``. Behind a reverse proxy,
declare the proxies you trust, once per app::

    configure_trusted_proxies(app, ["10.0.0.0/8", "127.0.0.1"])

or build an identifier with its own settings and pass it to a throttle or backend::

    throttle = HTTPThrottle("api", "100/m", identifier=ip_identifier(trusted_proxies=["10.0.0.1"]))

With trusted proxies, ``X-Forwarded-For`` (or, when declared with
``headers=("forwarded",)``, RFC 7239 ``Forwarded``) is read from the nearest hop
outward: trusted hops are skipped and the first untrusted address is the client. A malformed or obfuscated entry where the client
should be makes the identifier fall back to the peer address (never an error).
At most ``max_hops`` entries (default :data:`MAX_HOPS`) are examined, nearest
first, so a huge header costs no more than a short one.

IPv6 clients are grouped by network (``ipv6_prefix``, default /64: one customer
usually owns a whole /64), IPv4-mapped IPv6 addresses count as IPv4. A peer that
is not an IP address (Starlette's ``TestClient`` reports ``"testclient"``) is keyed
by that name. A connection with no client at all (a Unix-socket server) raises
:class:`~traffik.exceptions.AnonymousConnection`; throttles put such connections
in one shared ``"anonymous"`` bucket per route (see ``docs/identity.md``).
Add ``"unix"`` to the trusted proxies when a proxy talks to the app over a Unix
socket, so its forwarding headers are used.
"""

from __future__ import annotations

import ipaddress
import logging
import typing
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field

from traffik.exceptions import AnonymousConnection

if typing.TYPE_CHECKING:
    from starlette.requests import HTTPConnection

__all__ = [
    "ANONYMOUS",
    "MAX_HOPS",
    "PROXY_CONFIG_STATE_KEY",
    "ProxyConfig",
    "client_address",
    "configure_trusted_proxies",
    "connection_identifier",
    "get_ip_address",
    "ip_identifier",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

logger = logging.getLogger("traffik.throttles")

#: The identity throttles give connections that have no client address.
ANONYMOUS = "anonymous"

#: Attribute of ``app.state`` holding the app's :class:`ProxyConfig`. Set it with
#: :func:`configure_trusted_proxies`: a value assigned directly is read once, at the
#: app's first throttled request, and not looked up again.
PROXY_CONFIG_STATE_KEY = "traffik_proxy_config"

#: Forwarding headers understood.
_KNOWN_HEADERS = ("forwarded", "x-forwarded-for")
#: The header read by default: the one proxies write (nginx, HAProxy, ALB, Traefik, Caddy,
#: Envoy). Only a header the proxy writes may be read: a proxy passes the others through
#: from the client untouched, so reading them would let any client pick its identity.
_HEADERS = ("x-forwarded-for",)

#: How many forwarding entries are examined by default, nearest first. Real chains
#: have a handful of proxies; a header longer than this (only a client or a
#: misconfigured chain writes one) is read no further, so its cost is bounded.
MAX_HOPS = 16

#: Bound on the per-process cache of peer address -> identity.
_CACHE_SIZE = 4096


@dataclass(frozen=True)
class ProxyConfig:
    """How to find the client address: trusted proxies, header order, address grouping.

    ``trusted_proxies``: exact addresses and CIDR networks (strings or ``ipaddress``
    objects), plus ``"unix"`` to trust peers without an address. ``headers``: which
    forwarding headers to read, in order of preference (the first one present is
    used); default ``("x-forwarded-for",)``. List only headers your proxy writes
    (``("forwarded",)`` for an RFC 7239 proxy): one it passes through is the client's
    to forge. ``ipv6_prefix`` / ``ipv4_prefix``: clients are keyed by their network of
    that length (128 / 32 key single addresses). ``max_hops``: at most that many
    forwarding entries are examined, nearest first (default :data:`MAX_HOPS`).
    """

    trusted_proxies: tuple[IPNetwork, ...] = ()
    trust_unix: bool = False
    headers: tuple[str, ...] = _HEADERS
    ipv6_prefix: int = 64
    ipv4_prefix: int = 32
    max_hops: int = MAX_HOPS
    #: Peer address -> identity, for configurations that trust no proxy.
    _cache: dict[str, str] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @classmethod
    def build(
        cls,
        trusted_proxies: Iterable[str | IPAddress | IPNetwork] = (),
        *,
        headers: Iterable[str] = _HEADERS,
        ipv6_prefix: int = 64,
        ipv4_prefix: int = 32,
        max_hops: int = MAX_HOPS,
    ) -> ProxyConfig:
        """Validate and normalise settings; raises ``ValueError`` naming the bad one."""
        if isinstance(trusted_proxies, str):
            trusted_proxies = [trusted_proxies]
        networks: list[IPNetwork] = []
        trust_unix = False
        for item in trusted_proxies:
            if item == "unix":
                trust_unix = True
                continue
            try:
                network = ipaddress.ip_network(item, strict=False)
            except (TypeError, ValueError):
                raise ValueError(
                    f"Trusted proxy {item!r} is not an IP address or CIDR network; "
                    f"write it like '10.0.0.1', '10.0.0.0/8' or '2001:db8::/32' (or 'unix')."
                ) from None
            if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
                mapped = network.network_address.ipv4_mapped
                if mapped is not None:
                    network = ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")
            networks.append(network)
        names = tuple(str(h).lower() for h in headers)
        for name in names:
            if name not in _KNOWN_HEADERS:
                raise ValueError(
                    f"Unknown forwarding header {name!r}; use 'forwarded' and/or 'x-forwarded-for'."
                )
        for name, value, top in (
            ("ipv6_prefix", ipv6_prefix, 128),
            ("ipv4_prefix", ipv4_prefix, 32),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
                raise ValueError(f"{name} must be an int from 1 to {top}, got {value!r}.")
        if isinstance(max_hops, bool) or not isinstance(max_hops, int) or max_hops < 1:
            raise ValueError(
                f"max_hops must be a positive int (the number of forwarding entries "
                f"examined, nearest first), got {max_hops!r}."
            )
        return cls(tuple(networks), trust_unix, names, ipv6_prefix, ipv4_prefix, max_hops)

    def is_trusted(self, ip: IPAddress) -> bool:
        """True if ``ip`` is one of the trusted proxies."""
        for network in self.trusted_proxies:
            if ip.version == network.version and ip in network:
                return True
        return False

    def group(self, ip: IPAddress) -> str:
        """The identity of ``ip``: its address, or its network for prefixes shorter than a host."""
        if ip.version == 6:
            if self.ipv6_prefix == 128:
                return str(ip)
            return str(ipaddress.IPv6Network((ip, self.ipv6_prefix), strict=False))
        if self.ipv4_prefix == 32:
            return str(ip)
        return str(ipaddress.IPv4Network((ip, self.ipv4_prefix), strict=False))


_DEFAULT = ProxyConfig()


def configure_trusted_proxies(
    app: typing.Any,
    trusted_proxies: Iterable[str | IPAddress | IPNetwork],
    *,
    headers: Iterable[str] = _HEADERS,
    ipv6_prefix: int = 64,
    ipv4_prefix: int = 32,
    max_hops: int = MAX_HOPS,
) -> ProxyConfig:
    """Declare the reverse proxies ``app`` sits behind; the default identifier then reads
    their forwarding headers (at most ``max_hops`` entries, nearest first). Stored on
    ``app.state``; returns the validated config."""
    config = ProxyConfig.build(
        trusted_proxies,
        headers=headers,
        ipv6_prefix=ipv6_prefix,
        ipv4_prefix=ipv4_prefix,
        max_hops=max_hops,
    )
    setattr(app.state, PROXY_CONFIG_STATE_KEY, config)
    _remember(app, config)
    return config


def _parse_ip(text: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if ip.version == 6:
        mapped = ip.ipv4_mapped
        if mapped is not None:
            return mapped
        if ip.scope_id:
            return ipaddress.IPv6Address(str(ip).split("%", 1)[0])
    return ip


def get_ip_address(connection: HTTPConnection) -> IPAddress | None:
    """The ASGI peer address of ``connection``, or None when it has none or it is not an IP."""
    client = connection.scope.get("client")
    if not client:
        return None
    host = client[0]
    return _parse_ip(host) if isinstance(host, str) else None


def _forwarded_node(element: str) -> str | None:
    """The ``for=`` node of one RFC 7239 element, or None if it is malformed or has none."""
    node = None
    for pair in element.split(";"):
        name, sep, raw = pair.strip().partition("=")
        if not sep:
            if pair.strip():
                return None
            continue
        if name.strip().lower() == "for":
            node = raw.strip()
    return node


def _tail(values: list[bytes], limit: int) -> list[str]:
    """The last ``limit`` comma-separated entries of raw header ``values``, nearest last.

    Entries are cut from the end with ``rfind``, and only they are decoded, so the
    work is bounded by ``limit``, not by the header's length: the rest of a long
    header is neither copied, decoded nor split. Empty entries count towards the bound.
    """
    entries: list[str] = []
    for value in reversed(values):
        end = len(value)
        while True:
            if len(entries) >= limit:
                entries.reverse()
                return entries
            start = value.rfind(b",", 0, end)
            entries.append(value[start + 1 : end].decode("latin-1"))
            if start < 0:
                break
            end = start
    entries.reverse()
    return entries


def _forwarded_for(values: list[bytes], limit: int) -> list[str | None]:
    """The ``for=`` nodes of the last ``limit`` RFC 7239 ``Forwarded`` elements, nearest
    last; None where malformed.

    Elements are judged one by one: garbage a client put beyond the hops the proxies
    wrote is never reached by the walk, so it must not spoil the whole header.
    """
    return [_forwarded_node(element) for element in _tail(values, limit)]


def _node_ip(node: str | None) -> IPAddress | None:
    """The address of a ``Forwarded`` node or an ``X-Forwarded-For`` entry (ports dropped)."""
    if node is None:
        return None
    node = node.strip()
    if len(node) >= 2 and node[0] == '"' and node[-1] == '"':
        node = node[1:-1]
    if node.startswith("["):
        end = node.find("]")
        return _parse_ip(node[1:end]) if end > 0 else None
    if node.count(":") == 1:
        node = node.split(":", 1)[0]  # IPv4 with a port
    return _parse_ip(node)


def _hops(connection: HTTPConnection, config: ProxyConfig) -> list[str | None]:
    # The raw ASGI headers, not ``connection.headers``: Starlette would decode every
    # value whole, and only the last ``max_hops`` entries are ever read.
    raw: list[tuple[bytes, bytes]] = connection.scope.get("headers") or []
    for name in config.headers:
        key = name.encode("latin-1")
        values = [value for header, value in raw if header.lower() == key]
        if not values:
            continue
        if name == "forwarded":
            return _forwarded_for(values, config.max_hops)
        hops: list[str | None] = [
            entry for entry in _tail(values, config.max_hops) if entry.strip()
        ]
        return hops
    return []


def client_address(
    connection: HTTPConnection, config: ProxyConfig | None = None
) -> IPAddress | str | None:
    """The client's address: an IP, the peer's name when it is not an IP, or None.

    Forwarding headers count only when the peer is a trusted proxy (``config``,
    else the app's configuration, else none); they are walked from the nearest hop
    outward and the first untrusted address wins. A malformed entry on that path
    makes the answer the peer address.
    """
    if config is None:
        config = _app_config(connection)
    client = connection.scope.get("client")
    host = client[0] if client else None
    peer: IPAddress | None = None
    if host is None:
        if not config.trust_unix:
            return None
    else:
        if not isinstance(host, str):
            return None
        peer = _parse_ip(host)
        if peer is None:
            return host
        if not config.trusted_proxies or not config.is_trusted(peer):
            return peer
    hops = _hops(connection, config)
    found: IPAddress | None = None
    for node in reversed(hops):
        ip = _node_ip(node)
        if ip is None:
            return peer
        found = ip
        if not config.is_trusted(ip):
            return ip
    # Every hop examined is a trusted proxy: the farthest one is the client (also
    # when the walk stopped at max_hops: the header is read no further).
    return found if found is not None else peer


#: id(app) -> its ProxyConfig, read from ``app.state`` once per app; configure_trusted_proxies()
#: updates it. Keyed by id (a dict lookup, where a WeakKeyDictionary builds a weak
#: reference per call), with the entry dropped when the app is collected, so an id is
#: never reused while its entry is here.
_app_configs: dict[int, ProxyConfig] = {}


def _read_app_config(app: typing.Any) -> ProxyConfig:
    state = getattr(app, "state", None)
    config = getattr(state, PROXY_CONFIG_STATE_KEY, None) if state is not None else None
    return config if isinstance(config, ProxyConfig) else _DEFAULT


def _remember(app: typing.Any, config: ProxyConfig) -> None:
    key = id(app)
    if key not in _app_configs:
        try:
            weakref.finalize(app, _app_configs.pop, key, None)
        except TypeError:  # an app that cannot be weakly referenced is read every time
            return
    _app_configs[key] = config


def _app_config(connection: HTTPConnection) -> ProxyConfig:
    """The proxy configuration of the connection's app (the default when it has none).

    Built once per app, not per request: ``app.state`` is read at the app's first
    throttled request (a missing attribute costs Starlette an exception each time)
    and :func:`configure_trusted_proxies` replaces it at once.
    """
    app = connection.scope.get("app")
    if app is None:
        return _DEFAULT
    config = _app_configs.get(id(app))
    if config is not None:
        return config
    config = _read_app_config(app)
    _remember(app, config)
    return config


_anonymous_warned = False


def _warn_anonymous() -> None:
    global _anonymous_warned
    if not _anonymous_warned:
        _anonymous_warned = True
        logger.warning(
            "A connection without a client address was throttled in the shared %r bucket. "
            "Behind a proxy on a Unix socket, add 'unix' to the trusted proxies "
            "(traffik.identifiers.configure_trusted_proxies); otherwise pass an identifier.",
            ANONYMOUS,
        )


def _identify(connection: HTTPConnection, config: ProxyConfig) -> str:
    client = connection.scope.get("client")
    host = client[0] if client else None
    # Fast path: no forwarding to consider, so the identity depends on the peer only.
    if isinstance(host, str) and not config.trusted_proxies:
        cache = config._cache
        identity = cache.get(host)
        if identity is None:
            ip = _parse_ip(host)
            identity = host if ip is None else config.group(ip)
            if len(cache) >= _CACHE_SIZE:
                cache.clear()
            cache[host] = identity
        return identity
    address = client_address(connection, config)
    if address is None:
        raise AnonymousConnection(
            "The connection has no client address to key it by. Behind a proxy on a Unix "
            "socket, add 'unix' to the trusted proxies; otherwise pass an identifier."
        )
    if isinstance(address, str):
        return address
    return config.group(address)


def _identity_of(connection: HTTPConnection) -> str:
    """What :func:`connection_identifier` returns, computed synchronously (the hot path).

    Two dict lookups when the app trusts no proxy and the peer was seen before:
    the app's configuration by id, then the peer's cached identity.
    """
    scope = connection.scope
    app = scope.get("app")
    config = _app_configs.get(id(app)) if app is not None else _DEFAULT
    if config is None:
        config = _app_config(connection)
    if not config.trusted_proxies:
        client = scope.get("client")
        if client:
            identity = config._cache.get(client[0])
            if identity is not None:
                return identity
    return _identify(connection, config)


async def connection_identifier(
    connection: HTTPConnection, *args: typing.Any, **kwargs: typing.Any
) -> str:
    """The default identifier: the client's address (or IPv6 network), per the app's proxy settings.

    Raises :class:`~traffik.exceptions.AnonymousConnection` when there is no client address.
    """
    return _identity_of(connection)


def ip_identifier(
    trusted_proxies: Iterable[str | IPAddress | IPNetwork] = (),
    *,
    headers: Iterable[str] = _HEADERS,
    ipv6_prefix: int = 64,
    ipv4_prefix: int = 32,
    max_hops: int = MAX_HOPS,
) -> typing.Callable[..., typing.Awaitable[str]]:
    """An identifier keyed by client address with its own proxy settings (ignores the app's)."""
    config = ProxyConfig.build(
        trusted_proxies,
        headers=headers,
        ipv6_prefix=ipv6_prefix,
        ipv4_prefix=ipv4_prefix,
        max_hops=max_hops,
    )

    async def identifier(
        connection: HTTPConnection, *args: typing.Any, **kwargs: typing.Any
    ) -> str:
        return _identify(connection, config)

    identifier.proxy_config = config  # type: ignore[attr-defined]
    return identifier
