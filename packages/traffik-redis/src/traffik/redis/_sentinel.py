"""``redis+sentinel://`` URLs: a client of the primary that Sentinel names.

The URL form is the one ``limits`` (and so flask-limiter and slowapi) uses::

    redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db]

The client is redis-py's ``Sentinel(...).master_for(service_name)``: its connections
ask the sentinels for the primary's address each time they connect, and a
connection that meets a demoted primary (a ``READONLY`` reply) is dropped, so
commands follow a failover once Sentinel has promoted a replica.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from traffik.exceptions import ConfigurationError

__all__ = ["SCHEME", "SentinelURL", "is_sentinel_url", "parse_sentinel_url"]

SCHEME = "redis+sentinel"

_FORM = "redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db]"


@dataclass(frozen=True)
class SentinelURL:
    """The parts of a ``redis+sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    username: str | None
    password: str | None

    def describe(self) -> str:
        """``service 'mymaster' (sentinels h:p,h:p)``, for error messages."""
        nodes = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        return f"service {self.service!r} (sentinels {nodes})"

    def auth(self) -> dict[str, typing.Any]:
        """``username`` and ``password`` as redis-py takes them (only those given)."""
        given = {"username": self.username, "password": self.password}
        return {name: value for name, value in given.items() if value is not None}


def is_sentinel_url(url: str) -> bool:
    return url.lower().startswith(SCHEME + "://")


def _bad(url: str, why: str) -> ConfigurationError:
    return ConfigurationError(f"{_redact(url)!r} is not a Sentinel URL: {why}. Use {_FORM}.")


def _redact(url: str) -> str:
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, sep, credentials = head.partition("://")
    user = credentials.partition(":")[0]
    return f"{scheme}{sep}{user}:***@{tail}" if ":" in credentials else url


def parse_sentinel_url(url: str) -> SentinelURL:
    """Split ``url``; raises ConfigurationError naming what is wrong."""
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise _bad(url, "it has a query or a fragment; pass options as keyword arguments")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username: str | None = None
    password: str | None = None
    if userinfo:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels = []
    for node in hosts.split(","):
        host, colon, port = node.strip().rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise _bad(url, f"{node!r} is not host:port")
        sentinels.append((host.strip("[]"), int(port)))
    path = [unquote(piece) for piece in parts.path.split("/")[1:]]
    if not path or not path[0]:
        raise _bad(url, "it names no service")
    if len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise _bad(url, f"{parts.path!r} is not /service_name or /service_name/db")
    db = int(path[1]) if len(path) == 2 else 0
    return SentinelURL(tuple(sentinels), path[0], db, username, password)
