"""Dependency helpers: identify clients by a FastAPI dependency, pick a throttle per tier.

::

    async def get_current_user(token: str = Header()) -> User: ...

    per_user = HTTPThrottle("per-user", "100/m", identifier=user_identifier(get_current_user))

    @app.get("/me", dependencies=[throttled(per_user)])
    async def me(user: User = Depends(get_current_user)): ...

    async def get_tier(user: User = Depends(get_current_user)) -> str:
        return user.plan

    @app.get("/search", dependencies=[tiered({"free": free, "pro": pro}, get_tier)])
    async def search(): ...

FastAPI solves the identifying dependency (once per request: its cache is shared
with the route's own ``Depends(get_current_user)``) before the throttle runs.
"""

from __future__ import annotations

import typing

from starlette.requests import HTTPConnection

from traffik.exceptions import ConfigurationError
from traffik.fastapi.decorators import ThrottleDepends, _identifier_dependencies
from traffik.identifiers import connection_identifier
from traffik.throttles import BaseThrottle
from traffik.types import UNLIMITED

if typing.TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Mapping, Sequence

__all__ = ["DependencyIdentifier", "store_resolved", "tiered", "user_identifier"]

#: ``scope`` key of the dependency values resolved for traffik on this request.
_SCOPE_KEY = "traffik.fastapi.resolved"

_MISSING: typing.Any = object()


def store_resolved(connection: HTTPConnection, resolved: Mapping[str, typing.Any]) -> None:
    """Keep dependency values resolved for traffik where its identifiers can read them."""
    connection.scope.setdefault(_SCOPE_KEY, {}).update(resolved)


class DependencyIdentifier:
    """A throttle identifier whose identity comes from a FastAPI dependency.

    Build it with :func:`user_identifier`. It works when the throttle runs through
    :func:`~traffik.fastapi.throttled` or :func:`tiered` (which ask FastAPI to solve
    the dependency first); a plain ``Depends(throttle)`` cannot solve it and raises
    :class:`~traffik.exceptions.ConfigurationError`.
    """

    def __init__(
        self,
        dependency: Callable[..., typing.Any],
        *,
        key: Callable[[typing.Any], typing.Any] | None = None,
        fallback: Callable[..., typing.Awaitable[typing.Any]] | None = None,
    ) -> None:
        if not callable(dependency):
            raise TypeError(f"user_identifier() needs a dependency callable, got {dependency!r}.")
        self.dependency = dependency
        self.key = key
        self.fallback = fallback or connection_identifier
        #: Name under which the resolved value travels (unique per identifier).
        self.slot = f"__traffik_identity_{id(self):x}"

    async def __call__(
        self, connection: HTTPConnection, *args: typing.Any, **kwargs: typing.Any
    ) -> typing.Any:
        resolved = connection.scope.get(_SCOPE_KEY, {})
        if self.slot not in resolved:
            name = getattr(self.dependency, "__name__", repr(self.dependency))
            raise ConfigurationError(
                f"This throttle identifies clients with the dependency {name}, which only "
                "traffik.fastapi.throttled(...) or tiered(...) can solve; use "
                "dependencies=[throttled(throttle)] (or @throttled(throttle)) instead of "
                "Depends(throttle)."
            )
        value = resolved[self.slot]
        if self.key is not None and value is not None:
            value = self.key(value)
        if value is None:
            return await self.fallback(connection, *args, **kwargs)
        if value is UNLIMITED:
            return UNLIMITED
        return f"user:{value}"

    def __repr__(self) -> str:
        name = getattr(self.dependency, "__name__", repr(self.dependency))
        return f"user_identifier({name})"


def user_identifier(
    dependency: Callable[..., typing.Any],
    *,
    key: Callable[[typing.Any], typing.Any] | None = None,
    fallback: Callable[..., typing.Awaitable[typing.Any]] | None = None,
) -> DependencyIdentifier:
    """An identifier keying clients by what ``dependency`` returns (e.g. the current user).

    ``key`` maps that value to the identity (default: the value itself, as text);
    it may return :data:`~traffik.types.UNLIMITED` to exempt the client. When the
    dependency (or ``key``) returns ``None`` (an anonymous visitor), ``fallback`` is
    used: by default traffik's IP identifier. Users are keyed ``user:<key>``, so a
    user id never shares a bucket with an IP address.
    """
    return DependencyIdentifier(dependency, key=key, fallback=fallback)


def tiered(
    throttles: Mapping[Hashable, BaseThrottle[typing.Any] | None],
    tier: Callable[..., typing.Any],
    *,
    default: BaseThrottle[typing.Any] | None = _MISSING,
) -> ThrottleDepends:
    """Choose the throttle per request from the value of the ``tier`` dependency.

    ``throttles`` maps each tier to its throttle (``None`` = not throttled). A tier
    not in the mapping uses ``default``; without a default it is a server error
    (:class:`~traffik.exceptions.ConfigurationError`, answered 500) naming the tier.
    The result is a ``Depends`` for ``dependencies=[...]`` and a route decorator.
    """
    if not callable(tier):
        raise TypeError(f"tiered() needs the tier dependency as its second argument, got {tier!r}.")
    table = dict(throttles)
    if not table:
        raise ValueError("tiered() needs at least one tier, e.g. {'free': free_throttle}.")
    choices = [t for t in table.values() if t is not None]
    if default is not _MISSING and default is not None:
        choices.append(default)
    for name, throttle in table.items():
        if throttle is not None and not isinstance(throttle, BaseThrottle):
            raise TypeError(
                f"Tier {name!r} maps to {throttle!r}, which is not a throttle (or None)."
            )
    if default is not _MISSING and default is not None and not isinstance(default, BaseThrottle):
        raise TypeError(f"default must be a throttle or None, got {default!r}.")
    slot = f"__traffik_tier_{id(table):x}"
    tier_name = getattr(tier, "__name__", repr(tier))

    def select(
        connection: HTTPConnection, resolved: dict[str, typing.Any]
    ) -> Sequence[BaseThrottle[typing.Any]]:
        value = resolved[slot]
        try:
            chosen = table[value]
        except (KeyError, TypeError):
            if default is _MISSING:
                raise ConfigurationError(
                    f"The tier dependency {tier_name} returned {value!r}, which tiered() has "
                    "no throttle for; add it to the mapping or pass default=."
                ) from None
            chosen = default
        return () if chosen is None else (chosen,)

    extra = {slot: tier, **_identifier_dependencies(choices)}
    return ThrottleDepends(select, extra=extra, throttles=choices)
