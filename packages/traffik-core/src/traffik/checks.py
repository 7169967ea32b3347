"""Startup checks: find throttles that would have no backend, before the first request.

A throttle without a backend of its own resolves one per request (the active
``async with backend():`` context, then the app's, registered by
``lifespan=backend.lifespan``). A forgotten lifespan therefore shows only when the
first throttled request fails. :class:`~traffik.starlette.ThrottleMiddleware` runs
:func:`check_backends` when the app has started, and fails the startup with the
list; any app can call it itself (in its own lifespan, or in a test)::

    from traffik.checks import check_backends

    check_backends(app)  # raises ConfigurationError naming each throttle and route

Throttles are found in the app's routes (Starlette endpoints decorated with
``traffik.starlette.throttled``, FastAPI dependencies ``Depends(throttle)`` and
``traffik.fastapi.throttled``, in mounted routers too) and in the rules of
``ThrottleMiddleware``. A callable that applies throttles lists them in its
:data:`THROTTLES_ATTRIBUTE` attribute to be found.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Iterator

from traffik.backends._context import get_throttle_backend
from traffik.exceptions import ConfigurationError
from traffik.throttles import BaseThrottle

if typing.TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend

__all__ = ["THROTTLES_ATTRIBUTE", "app_throttles", "check_backends", "missing_backends"]

#: Attribute of an endpoint wrapper or a dependency callable listing the throttles
#: it applies (a tuple), so that :func:`app_throttles` finds them.
THROTTLES_ATTRIBUTE = "__traffik_throttles__"


def _listed(call: object) -> Iterator[BaseThrottle[typing.Any]]:
    if isinstance(call, BaseThrottle):
        yield call
        return
    for throttle in getattr(call, THROTTLES_ATTRIBUTE, ()) or ():
        if isinstance(throttle, BaseThrottle):
            yield throttle


def _dependant(dependant: object, seen: set[int]) -> Iterator[BaseThrottle[typing.Any]]:
    """Throttles in a FastAPI dependency tree (read by duck typing: core needs no FastAPI)."""
    if dependant is None or id(dependant) in seen:
        return
    seen.add(id(dependant))
    yield from _listed(getattr(dependant, "call", None))
    for child in getattr(dependant, "dependencies", ()) or ():
        yield from _dependant(child, seen)


def _routes(
    routes: Iterable[object], prefix: str, inherited: tuple[BaseThrottle[typing.Any], ...] = ()
) -> Iterator[tuple[str, BaseThrottle[typing.Any]]]:
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            # A router FastAPI includes lazily (recent versions): its routes, under the
            # include's prefix and with the include's own dependencies.
            context = getattr(route, "include_context", None)
            extra = tuple(
                t
                for depends in getattr(context, "dependencies", None) or ()
                for t in _listed(getattr(depends, "dependency", None))
            )
            where = prefix + str(getattr(context, "prefix", "") or "")
            yield from _routes(getattr(included, "routes", ()) or (), where, inherited + extra)
            continue
        path = prefix + str(getattr(route, "path", ""))
        yield from ((path, t) for t in inherited)
        yield from ((path, t) for t in _listed(getattr(route, "endpoint", None)))
        yield from ((path, t) for t in _dependant(getattr(route, "dependant", None), set()))
        children = getattr(route, "routes", None)
        if children:
            yield from _routes(children, path, inherited)


def app_throttles(app: typing.Any) -> list[tuple[str, BaseThrottle[typing.Any]]]:
    """``(where, throttle)`` for every throttle found in ``app``'s routes and in the rules
    of its ``ThrottleMiddleware`` (``where`` is a route path, or ``"middleware"``)."""
    found = list(_routes(getattr(app, "routes", ()) or (), ""))
    for middleware in getattr(app, "user_middleware", ()) or ():
        kwargs = getattr(middleware, "kwargs", None) or {}
        if kwargs.get("backend") is not None:
            continue  # the middleware supplies its rules' backend
        for rule in kwargs.get("middleware_throttles", ()) or ():
            throttle = getattr(rule, "throttle", rule)
            if isinstance(throttle, BaseThrottle):
                found.append(("middleware", throttle))
    return found


def _served(
    throttle: BaseThrottle[typing.Any], fallback: ThrottleBackend[typing.Any, typing.Any] | None
) -> bool:
    return (
        throttle.rate.unlimited
        or throttle.context_backend  # resolved per call, by design
        or throttle.backend is not None  # its own, or the active context's
        or fallback is not None
    )


def missing_backends(
    app: typing.Any,
    throttles: Iterable[tuple[str, BaseThrottle[typing.Any]]] = (),
    *,
    backend: ThrottleBackend[typing.Any, typing.Any] | None = None,
) -> list[str]:
    """One line per throttle of ``app`` (and of ``throttles``) that would find no backend:
    none of its own, no active context, none registered on the app (``backend``: the
    one the caller supplies to ``throttles``, as ``ThrottleMiddleware(backend=)`` does)."""
    registered = get_throttle_backend(app)
    lines: list[str] = []
    seen: set[tuple[str, int]] = set()
    for where, throttle in [*app_throttles(app), *((w, t) for w, t in throttles)]:
        if (where, id(throttle)) in seen:
            continue
        seen.add((where, id(throttle)))
        supplied = backend if where == "middleware" and backend is not None else registered
        if not _served(throttle, supplied):
            lines.append(f"throttle {throttle.uid!r} ({where})")
    return lines


def check_backends(
    app: typing.Any,
    throttles: Iterable[tuple[str, BaseThrottle[typing.Any]]] = (),
    *,
    backend: ThrottleBackend[typing.Any, typing.Any] | None = None,
) -> None:
    """Raise :class:`~traffik.exceptions.ConfigurationError` if any throttle of ``app``
    would have no backend (see :func:`missing_backends`)."""
    missing = missing_backends(app, throttles, backend=backend)
    if missing:
        raise ConfigurationError(
            "These throttles have no backend: "
            + ", ".join(missing)
            + ". Start the app with lifespan=backend.lifespan (or enter 'async with "
            "backend(app)' in your lifespan), or pass backend= to the throttles."
        )
