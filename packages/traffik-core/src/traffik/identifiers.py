"""Client identity: who is making this request? (placeholder, extended by the identity work)"""

from __future__ import annotations

import ipaddress
import typing

from traffik.exceptions import AnonymousConnection

if typing.TYPE_CHECKING:
    from starlette.requests import HTTPConnection

__all__ = ["connection_identifier", "get_ip_address"]


def get_ip_address(connection: HTTPConnection) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The ASGI client address of ``connection``, or None when it has none or it is not an IP."""
    client = connection.scope.get("client")
    if not client:
        return None
    try:
        return ipaddress.ip_address(client[0])
    except ValueError:
        return None


async def connection_identifier(connection: HTTPConnection, *args: typing.Any, **kwargs: typing.Any) -> str:
    """The default identifier: the client's IP address."""
    ip = get_ip_address(connection)
    if ip is None:
        raise AnonymousConnection("The connection has no client IP address to key it by.")
    return ip.exploded
