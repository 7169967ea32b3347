"""Client errors as traffik's: BackendConnectionError (unreachable) or BackendError."""

from __future__ import annotations

import asyncio
import functools
import typing

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException
from redis.exceptions import TimeoutError as RedisTimeoutError
from traffik.exceptions import BackendConnectionError, BackendError

if typing.TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

__all__ = ["backend_error", "gated"]

P = typing.ParamSpec("P")
R = typing.TypeVar("R")

_CONNECTION_ERRORS = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    asyncio.TimeoutError,
    RedisClusterException,
)


class _Gated(typing.Protocol):
    @property
    def _gate(self) -> asyncio.Semaphore | None: ...


S = typing.TypeVar("S", bound=_Gated)


def backend_error(where: str, op: str, exc: BaseException) -> BackendError:
    """The traffik exception for client error ``exc`` raised by ``op`` on the server ``where``."""
    if isinstance(exc, _CONNECTION_ERRORS):
        return BackendConnectionError(
            f"Redis at {where} failed during {op}(): {type(exc).__name__}: "
            f"{str(exc).rstrip('.')}. "
            f"Check that the server is running and reachable at that address."
        )
    return BackendError(f"RedisBackend.{op}() failed: {type(exc).__name__}: {exc}")


def gated(
    func: Callable[typing.Concatenate[S, P], Coroutine[typing.Any, typing.Any, R]],
) -> Callable[typing.Concatenate[S, P], Coroutine[typing.Any, typing.Any, R]]:
    """With a gate (a client whose pool raises when exhausted), the call waits for a slot.

    Errors are not translated here: ThrottleBackend wraps every backend method
    once, through :meth:`RedisBackend.wrap_error`.
    """

    @functools.wraps(func)
    async def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        gate = self._gate
        if gate is None:
            return await func(self, *args, **kwargs)
        async with gate:
            return await func(self, *args, **kwargs)

    return wrapper
