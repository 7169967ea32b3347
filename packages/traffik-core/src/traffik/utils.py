"""Small helpers of the traffik 1.0.0b2 API: clock, JSON, async checks, signatures, locks."""

from __future__ import annotations

import asyncio
import collections
import functools
import inspect
import json
import time as _time
import typing

from traffik.backends._locking import AsyncLockContext
from traffik.identifiers import get_ip_address

if typing.TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "AsyncLockContext",
    "AsyncLockGroup",
    "AsyncRLock",
    "JSONDecodeError",
    "add_parameter_to_signature",
    "dump_json",
    "get_ip_address",
    "is_async_callable",
    "load_json",
    "time",
]

JSONDecodeError = json.JSONDecodeError

_F = typing.TypeVar("_F", bound=typing.Callable[..., typing.Any])


def time() -> float:
    """Seconds since the Unix epoch (wall clock), comparable across hosts and restarts.

    traffik 1.0.0b2 used the event loop's monotonic clock here, whose values mean
    nothing on another host; custom strategies that store timestamps in a shared
    backend need the wall clock.
    """
    return _time.time()


def dump_json(value: typing.Any) -> str:
    """Compact JSON text."""
    return json.dumps(value, separators=(",", ":"))


def load_json(text: str | bytes) -> typing.Any:
    """Parse JSON text; raises :data:`JSONDecodeError` on bad input."""
    return json.loads(text)


def is_async_callable(obj: typing.Any) -> bool:
    """True for coroutine functions, partials of them and objects with an async ``__call__``."""
    while isinstance(obj, functools.partial):
        obj = obj.func
    if inspect.iscoroutinefunction(obj):
        return True
    # The class's __call__, not the instance's: a class is callable but not async.
    call = inspect.getattr_static(type(obj), "__call__", None)
    return callable(obj) and inspect.iscoroutinefunction(call)


def add_parameter_to_signature(func: _F, parameter: inspect.Parameter, index: int = -1) -> _F:
    """Insert ``parameter`` into ``func``'s visible signature (``__signature__``) and return it.

    ``index`` is the position of the new parameter; negative values count from the
    end, ``-1`` (the default) appending it. Raises ``ValueError`` for a position
    outside the signature or a name the signature already has.
    """
    signature = inspect.signature(func)
    params = list(signature.parameters.values())
    if parameter.name in signature.parameters:
        raise ValueError(
            f"{getattr(func, '__name__', func)!r} already has a parameter named "
            f"{parameter.name!r}; choose another name."
        )
    position = index if index >= 0 else len(params) + index + 1
    if not 0 <= position <= len(params):
        raise ValueError(
            f"index {index} is outside the {len(params)} parameter(s) of "
            f"{getattr(func, '__name__', func)!r}; use -1 to append."
        )
    params.insert(position, parameter)
    func.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    return func


class AsyncRLock:
    """A fair, re-entrant asyncio lock owned by the task that acquired it.

    The owning task may acquire it again; it is free once released as many times.
    Waiters are served first come, first served.
    """

    __slots__ = ("_count", "_owner", "_waiters")

    def __init__(self) -> None:
        self._owner: asyncio.Task[typing.Any] | None = None
        self._count = 0
        self._waiters: collections.deque[tuple[asyncio.Future[bool], asyncio.Task[typing.Any]]]
        self._waiters = collections.deque()

    def locked(self) -> bool:
        """True while some task holds the lock."""
        return self._owner is not None

    def is_owner(self, task: asyncio.Task[typing.Any] | None = None) -> bool:
        """True if ``task`` (default: the current task) holds the lock."""
        return self._owner is not None and self._owner is (task or asyncio.current_task())

    async def acquire(self, blocking: bool = True, blocking_timeout: float | None = None) -> bool:
        """Take the lock (again, if this task holds it); False if not acquired in time."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("AsyncRLock.acquire() must be called from a task.")
        if self._owner is task:
            self._count += 1
            return True
        if self._owner is None and not self._waiters:
            self._owner, self._count = task, 1
            return True
        if not blocking:
            return False
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._waiters.append((future, task))
        timer = None
        if blocking_timeout is not None:
            timer = loop.call_later(max(0.0, blocking_timeout), _resolve_false, future)
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.result():
                self._count = 0
                self._hand_over()
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def release(self) -> None:
        """Release one level of the lock; raises ``RuntimeError`` if this task does not hold it."""
        if not self.is_owner():
            raise RuntimeError(
                "AsyncRLock.release() called by a task that does not hold the lock; "
                "release it from the task that acquired it."
            )
        self._count -= 1
        if self._count == 0:
            self._hand_over()

    def _hand_over(self) -> None:
        self._owner = None
        while self._waiters:
            future, task = self._waiters.popleft()
            if not future.done():
                self._owner, self._count = task, 1
                future.set_result(True)
                return

    async def __aenter__(self) -> AsyncRLock:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _resolve_false(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_result(False)


class AsyncLockGroup:
    """Several locks taken together: all of them, or none.

    Locks are acquired in a fixed order (by ``id``) so two groups sharing locks
    cannot deadlock, and released in reverse. Re-entrant for the owning task.
    Each lock needs ``acquire(blocking, blocking_timeout) -> bool`` and a
    ``release()`` that may be sync or async.
    """

    __slots__ = ("_count", "_locks", "_owner")

    def __init__(self, locks: typing.Iterable[typing.Any]) -> None:
        self._locks = sorted(locks, key=id)
        self._owner: asyncio.Task[typing.Any] | None = None
        self._count = 0

    def locked(self) -> bool:
        """True while some task holds the group."""
        return self._owner is not None

    async def acquire(self, blocking: bool = True, blocking_timeout: float | None = None) -> bool:
        """Take every lock; on failure release the ones taken and return False.

        ``blocking_timeout`` (seconds) bounds the whole acquisition.
        """
        task = asyncio.current_task()
        if self._owner is not None and self._owner is task:
            self._count += 1
            return True
        loop = asyncio.get_running_loop()
        deadline = None if blocking_timeout is None else loop.time() + blocking_timeout
        taken: list[typing.Any] = []
        try:
            for lock in self._locks:
                left = None if deadline is None else max(0.0, deadline - loop.time())
                if not await lock.acquire(blocking=blocking, blocking_timeout=left):
                    await _release_all(taken)
                    return False
                taken.append(lock)
        except BaseException:
            await _release_all(taken)
            raise
        self._owner, self._count = task, 1
        return True

    async def release(self) -> None:
        """Release one level; the locks are freed when the outermost level is released."""
        if self._owner is None or self._owner is not asyncio.current_task():
            raise RuntimeError(
                "AsyncLockGroup.release() called by a task that does not hold the group; "
                "release it from the task that acquired it."
            )
        self._count -= 1
        if self._count == 0:
            self._owner = None
            await _release_all(self._locks)

    async def __aenter__(self) -> AsyncLockGroup:
        if not await self.acquire():
            raise RuntimeError("AsyncLockGroup could not acquire its locks.")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()


async def _release_all(locks: list[typing.Any]) -> None:
    for lock in reversed(locks):
        result = lock.release()
        if inspect.isawaitable(result):
            await result
