"""A pool of memcached servers, and which of them holds a key (rendezvous hashing).

Every key lives on exactly one server: the one with the highest score
``BLAKE2b-64(key, key=address)`` (rendezvous, or highest-random-weight, hashing).
Every app instance configured with the same addresses picks the same server for
a key, whatever the order of the list. Adding a server to ``N`` moves only the
keys the newcomer now wins, about ``1/(N+1)`` of them, and all of them to it;
removing one moves only its own keys.

A server that does not answer keeps its keys: they are not re-hashed onto the
others (a client moved to another server would start there with a fresh quota,
then find its old state again when its server returns). Its keys follow the
failure policy until it answers again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import typing

from traffik.exceptions import BackendConnectionError, ConfigurationError
from traffik.memcached._generations import Generations
from traffik.memcached._protocol import MemcachedClient

if typing.TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = [
    "Server",
    "ServerPool",
    "check_number",
    "parse_address",
    "rendezvous",
    "seed",
    "server_addresses",
]

logger = logging.getLogger("traffik.memcached")

_ADDRESS = re.compile(
    r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[^\s:\[\]]+)):(?P<port>[0-9]{1,5})"
)


def parse_address(address: object) -> tuple[str, int]:
    """``(host, port)`` of ``"host:port"`` (``"[::1]:11211"`` for IPv6), or ConfigurationError."""
    match = _ADDRESS.fullmatch(address) if isinstance(address, str) else None
    port = int(match["port"]) if match else 0
    if match is None or not 1 <= port <= 65535:
        raise ConfigurationError(
            f"A memcached server address must be 'host:port' with a port from 1 to 65535 "
            f"(IPv6: '[::1]:11211'), got {address!r}."
        )
    return match["ipv6"] or match["host"], port


def check_number(name: str, value: object, *, minimum: float, integer: bool = False) -> None:
    """Raise ConfigurationError unless ``value`` is a number (``integer``: an int) >= ``minimum``."""
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or float(value) < minimum:  # type: ignore[arg-type]
        what = "a whole number" if integer else "a number"
        raise ConfigurationError(f"{name} must be {what} of at least {minimum}, got {value!r}.")


def server_addresses(
    host: str | None, port: int | None, servers: Sequence[str] | None
) -> list[tuple[str, int]]:
    """The ``(host, port)`` of every server, from ``host`` and ``port`` or from ``servers``."""
    if servers is None:
        host = "localhost" if host is None else host
        port = 11211 if port is None else port
        if not isinstance(host, str) or not host:
            raise ConfigurationError(f"host must be a non-empty string, got {host!r}.")
        check_number("port", port, minimum=1, integer=True)
        return [(host, port)]
    if host is not None or port is not None:
        raise ConfigurationError(
            f"Give either host and port (one server) or servers=[...] (a pool), not both; "
            f"got host={host!r}, port={port!r} and servers={servers!r}. Put every server "
            f"in servers, as 'host:port'."
        )
    if isinstance(servers, str) or not servers:
        raise ConfigurationError(
            f"servers must be a non-empty list of 'host:port' strings, got {servers!r}."
        )
    addresses = [parse_address(address) for address in servers]
    if len(set(addresses)) != len(addresses):
        raise ConfigurationError(f"servers lists the same server twice: {list(servers)!r}.")
    return addresses


def seed(address: str) -> bytes:
    """The hashing key of server ``address`` (BLAKE2b keys are at most 64 bytes)."""
    raw = address.encode("utf-8")
    return raw if len(raw) <= 64 else hashlib.blake2b(raw, digest_size=64).digest()


def rendezvous(key: str, seeds: Sequence[bytes]) -> int:
    """The index of the seed (server) with the highest score for ``key``."""
    if len(seeds) == 1:
        return 0
    data = key.encode("utf-8", "surrogatepass")
    best, best_score = 0, -1
    for index, seed in enumerate(seeds):
        score = int.from_bytes(hashlib.blake2b(data, digest_size=8, key=seed).digest(), "big")
        if score > best_score:
            best, best_score = index, score
    return best


class Server:
    """One memcached server of the pool: its own connections and namespace generations."""

    __slots__ = ("address", "client", "generations")

    def __init__(self, address: str, client: MemcachedClient, generations: Generations) -> None:
        self.address = address
        self.client = client
        self.generations = generations

    def __repr__(self) -> str:
        return f"<memcached server {self.address}>"


class ServerPool:
    """The servers of one backend, and the routing of keys to them."""

    __slots__ = ("servers",)

    def __init__(self, servers: Sequence[Server]) -> None:
        self.servers = list(servers)

    async def connect(self, tags: Iterable[str]) -> None:
        """Connect to every server and read the generations of ``tags`` there.

        Servers that cannot be reached are logged and skipped (their keys follow the
        failure policy until they answer); if none can be reached, or a server fails
        otherwise (out of memory, ...), this raises.
        """
        wanted = list(tags)

        async def one(server: Server) -> None:
            await server.client.connect()
            await server.generations.load(server.client, wanted)

        results = await asyncio.gather(*(one(s) for s in self.servers), return_exceptions=True)
        unreachable: list[str] = []
        for server, result in zip(self.servers, results, strict=True):
            if isinstance(result, BackendConnectionError):
                unreachable.append(f"{server.address} ({result})")
            elif isinstance(result, BaseException):
                raise result
        if len(unreachable) == len(self.servers):
            raise BackendConnectionError(
                f"Cannot connect to memcached at {', '.join(unreachable)}."
            )
        for problem in unreachable:
            logger.warning(
                "traffik: memcached %s does not answer; its keys follow the failure policy "
                "until it does.",
                problem,
            )

    async def close(self) -> None:
        for server in self.servers:
            await server.client.close()

    async def stats(self) -> dict[bytes, int]:
        """The numeric ``stats`` of every server, added up."""
        total: dict[bytes, int] = {}
        for part in await asyncio.gather(*(s.client.stats() for s in self.servers)):
            for name, value in part.items():
                total[name] = total.get(name, 0) + value
        return total
