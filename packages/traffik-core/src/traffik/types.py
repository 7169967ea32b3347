"""Public type aliases and protocols (the names of traffik 1.0.0b2's ``traffik.types``)."""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass

from starlette.requests import HTTPConnection

if typing.TYPE_CHECKING:
    from traffik.rates import Rate

__all__ = [
    "UNLIMITED",
    "AsyncLock",
    "ConnectionIdentifier",
    "ConnectionThrottledHandler",
    "Dependency",
    "ExceptionHandler",
    "HTTPConnectionT",
    "HTTPConnectionTcon",
    "Identifier",
    "LockConfig",
    "Matchable",
    "StrategyStat",
    "Stringable",
    "ThrottledHandler",
    "WaitPeriod",
]


class _Unlimited:
    """The type of :data:`UNLIMITED`."""

    _instance: typing.ClassVar[_Unlimited | None] = None

    def __new__(cls) -> _Unlimited:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNLIMITED"

    def __reduce__(self) -> str:
        return "UNLIMITED"


#: Returned by an identifier to exempt a connection from throttling.
UNLIMITED: typing.Final = _Unlimited()

#: A wait in milliseconds; ``0.0`` means admitted, ``inf`` means never admitted.
WaitPeriod = float

# Generic helpers of traffik 1.0.0b2's ``traffik.types`` (importable, not in ``__all__``).
P = typing.ParamSpec("P")
Q = typing.ParamSpec("Q")
R = typing.TypeVar("R")
S = typing.TypeVar("S")
T = typing.TypeVar("T")
Rco = typing.TypeVar("Rco", covariant=True)
#: Any callable taking ``P`` and returning ``R``.
Function = typing.Callable[P, R]
#: An ``async def`` taking ``P`` and returning ``R``.
CoroutineFunction = typing.Callable[P, typing.Coroutine[typing.Any, typing.Any, R]]
#: Any callable returning an awaitable of ``R``.
AwaitableCallable = typing.Callable[..., typing.Awaitable[R]]

HTTPConnectionT = typing.TypeVar("HTTPConnectionT", bound=HTTPConnection)
HTTPConnectionTcon = typing.TypeVar("HTTPConnectionTcon", bound=HTTPConnection, contravariant=True)

#: A path pattern: a regular-expression string or a compiled pattern.
Matchable = typing.Union[str, "re.Pattern[str]"]


@typing.runtime_checkable
class Stringable(typing.Protocol):
    """Anything with a ``__str__``: keys and client identifiers."""

    def __str__(self) -> str: ...


class ConnectionIdentifier(typing.Protocol[HTTPConnectionTcon]):
    """``async (connection) -> key``: who is this client? May return :data:`UNLIMITED`."""

    async def __call__(
        self, connection: HTTPConnectionTcon, /, *args: typing.Any, **kwargs: typing.Any
    ) -> typing.Any: ...


class ConnectionThrottledHandler(typing.Protocol[HTTPConnectionTcon]):
    """``async (connection, wait_ms, ...)``: answer a throttled connection (usually by raising)."""

    async def __call__(
        self,
        connection: HTTPConnectionTcon,
        wait_ms: WaitPeriod,
        /,
        *args: typing.Any,
        **kwargs: typing.Any,
    ) -> typing.Any: ...


#: What a throttle's ``identifier=`` takes: ``async (connection) -> identity``. The
#: identity is any value whose ``str()`` keys the client (returning
#: :data:`UNLIMITED` exempts the connection). A :class:`ConnectionIdentifier` is one.
Identifier = typing.Callable[..., typing.Awaitable[typing.Any]]

#: What a throttle's ``handle_throttled=`` takes: ``async (connection, wait_ms,
#: *args, **kwargs)``, called on a refusal (usually it raises). A
#: :class:`ConnectionThrottledHandler` is one.
ThrottledHandler = typing.Callable[..., typing.Awaitable[typing.Any]]


class ExceptionHandler(typing.Protocol):
    """A Starlette exception handler: ``(connection, exc) -> response``."""

    def __call__(self, connection: HTTPConnection, exc: Exception, /) -> typing.Any: ...


class Dependency(typing.Protocol):
    """Anything FastAPI can call as a dependency."""

    def __call__(self, *args: typing.Any, **kwargs: typing.Any) -> typing.Any: ...


class LockConfig(typing.TypedDict, total=False):
    """Keyword arguments for :meth:`ThrottleBackend.lock` (times in seconds)."""

    blocking: bool
    blocking_timeout: float | None
    release_timeout: float | None


@typing.runtime_checkable
class AsyncLock(typing.Protocol):
    """A lock owned by the task that acquired it."""

    def locked(self) -> bool:
        """True while some owner holds the lock."""
        ...

    async def acquire(self, blocking: bool = True, blocking_timeout: float | None = None) -> bool:
        """Take the lock; False if not acquired (non-blocking, or timed out)."""
        ...

    async def release(self) -> None:
        """Release the lock this owner holds."""
        ...


@dataclass(frozen=True)
class StrategyStat:
    """A read-only snapshot of one key under one strategy (no hit is recorded)."""

    key: Stringable
    rate: Rate
    hits_remaining: float
    wait_time: float
