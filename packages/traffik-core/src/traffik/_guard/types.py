"""What the guard needs of a backend and of a custom strategy (types; no backend import).

The guard sits below :mod:`traffik.backends`: it knows a backend only by this
protocol, which :class:`~traffik.backends.base.ThrottleBackend` satisfies.
"""

from __future__ import annotations

import abc
import typing

if typing.TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Hashable

    from traffik.decisions import Decision
    from traffik.rates import Rate
    from traffik.strategies._base import Strategy

__all__ = ["Backend", "BackendClass", "CustomStrategy"]


class Backend(typing.Protocol):
    """The part of a backend the guard uses."""

    def failure_domain(self, key: str) -> Hashable: ...

    async def initialize(self) -> None: ...

    async def decide(self, key: str, strategy: Strategy, rate: Rate, cost: int = 1) -> Decision: ...


class BackendClass(abc.ABC):  # noqa: B024 - a registry, nothing to implement
    """The classes whose instances ``on_error`` accepts as a fallback backend.

    :class:`~traffik.backends.base.ThrottleBackend` registers itself here, so the
    policy can check an action without importing the backends above it.
    """


#: A custom strategy: ``async (key, rate, backend, cost) -> wait_ms``.
CustomStrategy = typing.Callable[..., "Awaitable[float]"]

if typing.TYPE_CHECKING:
    #: Finds the backend a fallback action decides on (given by traffik.failures).
    FallbackOf = Callable[[typing.Any], Awaitable[Backend]]
