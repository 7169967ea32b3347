"""One client's state, for operators: the key of a client without its request.

:meth:`~traffik.throttles.BaseThrottle.client_stat` and
:meth:`~traffik.throttles.BaseThrottle.reset_client` build the throttle key a
request of that client on that route would get, with the same bounded parts
(:mod:`traffik._keys`), then read or reset it on the backend.
"""

from __future__ import annotations

import ipaddress
import typing

from traffik._keys import _METHODS, memo_identity_part, route_part, template_part
from traffik.backends._context import get_throttle_backend
from traffik.exceptions import ConfigurationError
from traffik.identifiers import _DEFAULT, _read_app_config, connection_identifier

if typing.TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend
    from traffik.throttles import BaseThrottle

__all__ = ["client_key", "operator_backend", "resolve"]


def operator_backend(
    throttle: BaseThrottle[typing.Any],
    backend: ThrottleBackend[typing.Any, typing.Any] | None,
    app: typing.Any,
) -> ThrottleBackend[typing.Any, typing.Any]:
    """The backend to read or reset on: ``backend``, else the throttle's (its own or
    the active context's), else ``app``'s."""
    if throttle.needs_lifecycle:
        raise ConfigurationError(
            f"Throttle {throttle.uid!r} holds slots for requests in flight, not a quota: "
            f"its slots free when those requests end (or their leases expire), so there is "
            f"nothing to read or reset here."
        )
    found = backend or throttle.backend or (get_throttle_backend(app) if app else None)
    if found is None:
        raise ConfigurationError(
            f"No backend to find throttle {throttle.uid!r}'s clients on. Pass backend= (or "
            f"app=, whose lifespan set one), or call it inside 'async with backend():'."
        )
    return found


def _identity(
    throttle: BaseThrottle[typing.Any],
    backend: ThrottleBackend[typing.Any, typing.Any],
    identity: object,
    app: typing.Any,
) -> str:
    """The identity as the default identifier would key it (an IPv6 address becomes its
    network); any other identifier's value is used as it is."""
    text = str(identity)
    if (throttle.identifier or backend.identifier) is not connection_identifier:
        return text
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return text
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    config = _read_app_config(app) if app is not None else _DEFAULT
    return config.group(ip)


def client_key(
    throttle: BaseThrottle[typing.Any],
    backend: ThrottleBackend[typing.Any, typing.Any],
    identity: object,
    route: str,
    method: str,
    context_key: object,
    app: typing.Any,
    area: str | None = None,
    key_by: str | None = None,
) -> str:
    """The throttle key of ``identity``'s requests to ``route`` (a route template with
    ``key_by="route"``, a path with ``key_by="path"``, or what an overridden
    ``get_key`` returns), as the request path builds it; with ``area``, the key a
    middleware rule gives the whole area (``route`` is then ignored)."""
    who = memo_identity_part(_identity(throttle, backend, identity, app))
    prefix = (throttle._plan or throttle._make_plan()).prefix
    if area is not None:
        part = "*" + route_part(area)
        if context_key is not None:
            part = f"{part}|{route_part(str(context_key))}"
        return f"{prefix}{part}:{who}"
    if not isinstance(route, str) or not route:
        raise ValueError(
            f"route must be the route template the client called (for example "
            f"'/items/{{item_id}}'), got {route!r}."
        )
    if throttle._custom_key:
        part = route_part(route)
    else:
        if throttle._scope_type == "websocket":
            verb = "ws"
        else:
            verb = _METHODS.get(method.upper(), "OTHER")
        by = throttle.key_by if key_by is None else key_by
        if by not in ("route", "path"):
            raise ValueError(f"key_by must be 'route' or 'path', got {by!r}.")
        part = verb + (template_part(route) if by == "route" else route_part(route))
        if context_key is not None:
            part = f"{part}|{route_part(str(context_key))}"
    return f"{prefix}{part}:{who}"


def resolve(
    throttle: BaseThrottle[typing.Any],
    identity: object,
    route: str,
    method: str,
    context_key: object,
    backend: ThrottleBackend[typing.Any, typing.Any] | None,
    app: typing.Any,
    area: str | None = None,
    key_by: str | None = None,
) -> tuple[ThrottleBackend[typing.Any, typing.Any], str]:
    """The backend and the throttle key of one client, for the operator methods."""
    found = operator_backend(throttle, backend, app)
    key = client_key(throttle, found, identity, route, method, context_key, app, area, key_by)
    return found, key
