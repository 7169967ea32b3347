"""``throttled``: throttle a FastAPI route with a decorator or in ``dependencies=[...]``.

::

    @app.get("/items")
    @throttled(HTTPThrottle("items", "10/m"))
    async def items(): ...

    @app.get("/other", dependencies=[throttled(burst, sustained)])
    async def other(): ...

The decorator goes *under* ``@app.get(...)``. The route keeps its parameters,
annotations and OpenAPI schema: the throttles run as a FastAPI dependency attached
through the wrapper's signature (see :mod:`traffik.fastapi._signature`), never as a
query parameter. Several throttles run in the order given; stacked decorators run
outermost first.
"""

from __future__ import annotations

import inspect
import typing

from starlette.requests import HTTPConnection
from starlette.responses import Response

from fastapi import params
from traffik.charging import ChargeWhen, charge_by_status, check_charge_when
from traffik.checks import THROTTLES_ATTRIBUTE
from traffik.fastapi._headers import set_rate_limit_headers
from traffik.fastapi._signature import with_dependencies
from traffik.lifecycle import Lifecycle, connection_lifecycle
from traffik.throttles import BaseThrottle

if typing.TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

__all__ = ["DecoratorDepends", "ThrottleDepends", "apply_throttle", "throttled"]

F = typing.TypeVar("F", bound="Callable[..., typing.Any]")

#: The dependency parameter carrying the connection's lifecycle (see _build_dependency).
_LIFECYCLE = "traffik_lifecycle"

#: ``(connection, resolved) -> throttles to apply``: ``resolved`` maps the names of
#: the extra dependencies to what FastAPI resolved for them on this request.
Selector = typing.Callable[
    [HTTPConnection, "dict[str, typing.Any]"], "Sequence[BaseThrottle[typing.Any]]"
]


def _identifier_dependencies(
    throttles: Sequence[BaseThrottle[typing.Any]],
) -> dict[str, Callable[..., typing.Any]]:
    # Identifiers built by traffik.fastapi.dependencies.user_identifier() need a
    # FastAPI dependency solved first (see DependencyIdentifier).
    from traffik.fastapi.dependencies import DependencyIdentifier

    found: dict[str, Callable[..., typing.Any]] = {}
    for throttle in throttles:
        identifier = getattr(throttle, "identifier", None)
        if isinstance(identifier, DependencyIdentifier):
            found[identifier.slot] = identifier.dependency
    return found


class _Finish:
    """What the dependency returns: puts the fields on a ``Response`` the route returns
    (FastAPI drops the injected response's headers then); see ``_signature``."""

    __slots__ = ("connection",)

    def __init__(self, connection: HTTPConnection) -> None:
        self.connection = connection

    def __call__(self, returned: Response) -> None:
        set_rate_limit_headers(self.connection, returned)


def _build_dependency(
    select: Selector,
    extra: Mapping[str, Callable[..., typing.Any]],
    fixed: Sequence[BaseThrottle[typing.Any]] | None = None,
    *,
    lifecycle: bool = False,
    charge_when: ChargeWhen | None = None,
) -> Callable[..., Awaitable[Callable[[Response], None]]]:
    """A FastAPI dependency that runs the selected throttles on the connection.

    ``fixed``: the throttles when they do not depend on the request (``throttled``),
    applied without calling ``select``. With ``lifecycle`` (a throttle acts on the
    response lifecycle) it also asks FastAPI for the request-scoped
    :func:`traffik.lifecycle.connection_lifecycle`, which ends the connection's
    lifecycle once the response is over. ``charge_when`` refunds each throttle's
    charge of a request whose status it answers False for.
    """
    from traffik.fastapi.dependencies import store_resolved

    names = tuple(extra)

    async def throttle_dependency(
        connection: HTTPConnection, response: Response, **resolved: typing.Any
    ) -> Callable[[Response], None]:
        resolved.pop(_LIFECYCLE, None)
        if resolved:
            store_resolved(connection, resolved)
        for throttle in select(connection, resolved) if fixed is None else fixed:
            await throttle(connection)
            if charge_when is not None:
                charge_by_status(throttle, connection, charge_when)
        set_rate_limit_headers(connection, response)
        return _Finish(connection)

    parameters = [
        inspect.Parameter(
            "connection", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=HTTPConnection
        ),
        inspect.Parameter("response", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Response),
    ]
    parameters.extend(
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=typing.Annotated[typing.Any, params.Depends(extra[name])],
        )
        for name in names
    )
    if lifecycle:
        parameters.append(
            inspect.Parameter(
                _LIFECYCLE,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=typing.Annotated[
                    Lifecycle, params.Depends(connection_lifecycle, scope="request")
                ],
            )
        )
    throttle_dependency.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    return throttle_dependency


class ThrottleDepends(params.Depends):
    """A FastAPI ``Depends`` that applies throttles, usable as a route decorator too.

    Put it in ``dependencies=[...]`` (of a route, router or app), or decorate a
    route function with it (under ``@app.get(...)``). Build it with
    :func:`throttled` or :func:`traffik.fastapi.dependencies.tiered`. ``fixed=True``
    says that ``select`` always returns ``throttles`` (it is then not called).
    """

    #: The throttles this dependency may apply.
    throttles: tuple[BaseThrottle[typing.Any], ...]

    def __init__(
        self,
        select: Selector,
        *,
        extra: Mapping[str, Callable[..., typing.Any]] | None = None,
        throttles: Sequence[BaseThrottle[typing.Any]] = (),
        charge_when: ChargeWhen | None = None,
        fixed: bool = False,
    ) -> None:
        for throttle in throttles:
            check_charge_when(charge_when, throttle.strategy)
        lifecycle = charge_when is not None or any(t.needs_lifecycle for t in throttles)
        dependency = _build_dependency(
            select,
            dict(extra or {}),
            tuple(throttles) if fixed else None,
            lifecycle=lifecycle,
            charge_when=charge_when,
        )
        super().__init__(dependency)
        # Depends is a frozen dataclass in recent FastAPI versions.
        object.__setattr__(self, "throttles", tuple(throttles))
        # Found by the startup checks (traffik.checks) in the app's dependency tree.
        setattr(self.dependency, THROTTLES_ATTRIBUTE, self.throttles)

    def __call__(self, route: F) -> F:
        """Throttle ``route``: the same dependency, attached through the route's signature."""
        if not callable(route):
            raise TypeError(
                f"throttled(...) decorates a route function; got {route!r}. Use it as "
                "@throttled(throttle) under @app.get(...), or in dependencies=[...]."
            )
        return with_dependencies(route, [self])

    def __repr__(self) -> str:
        uids = ", ".join(repr(getattr(t, "uid", t)) for t in self.throttles)
        return f"{type(self).__name__}({uids})"

    # Depends is a dataclass comparing its fields; each ThrottleDepends is its own
    # dependency (two throttled(t) objects must not be merged by FastAPI's cache).
    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)


#: The traffik 1.0.0b2 name of :class:`ThrottleDepends`.
DecoratorDepends = ThrottleDepends


def _check_throttles(throttles: Sequence[typing.Any]) -> tuple[BaseThrottle[typing.Any], ...]:
    if not throttles:
        raise TypeError(
            "throttled() needs at least one throttle, e.g. throttled(HTTPThrottle(...))."
        )
    for throttle in throttles:
        if not isinstance(throttle, BaseThrottle):
            raise TypeError(
                f"throttled() takes throttles (HTTPThrottle, WebSocketThrottle or another "
                f"BaseThrottle), got {throttle!r}."
            )
    return tuple(throttles)


@typing.overload
def throttled(
    throttle: BaseThrottle[typing.Any],
    /,
    *more: BaseThrottle[typing.Any],
    charge_when: ChargeWhen | None = None,
) -> ThrottleDepends: ...


@typing.overload
def throttled(
    throttle: BaseThrottle[typing.Any], route: F, /, *, charge_when: ChargeWhen | None = None
) -> F: ...


def throttled(
    *args: typing.Any, route: typing.Any = None, charge_when: ChargeWhen | None = None
) -> typing.Any:
    """Throttle a route with one or more throttles, applied in the order given.

    ``throttled(t1, t2)`` returns a :class:`ThrottleDepends`: a decorator for a
    route function (sync or async) and a ``Depends`` for ``dependencies=[...]``.
    ``throttled(throttle, route)`` (the traffik 1.0.0b2 form) returns the throttled
    route directly. ``charge_when``: ``(connection, status_code) -> bool``, sync or
    async; False gives every throttle's charge for the request back
    (:mod:`traffik.charging`), replacing the throttles' own ``charge_when``.
    """
    items = list(args)
    if (
        route is None
        and len(items) == 2
        and not isinstance(items[1], BaseThrottle)
        and callable(items[1])
    ):
        route = items.pop()
    checked = _check_throttles(items)

    def select(
        connection: HTTPConnection, resolved: dict[str, typing.Any]
    ) -> Sequence[BaseThrottle[typing.Any]]:
        return checked

    depends = ThrottleDepends(
        select,
        extra=_identifier_dependencies(checked),
        throttles=checked,
        charge_when=charge_when,
        fixed=True,
    )
    if route is not None:
        return depends(route)
    return depends


def apply_throttle(route: F, *throttles: BaseThrottle[typing.Any]) -> F:
    """``route`` throttled by ``throttles`` (same as ``throttled(*throttles)(route)``)."""
    result: F = throttled(*throttles)(route)
    return result
