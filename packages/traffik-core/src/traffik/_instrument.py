"""Hook points of the failure guard for :mod:`traffik.metrics` (private to traffik-core).

Events (:mod:`traffik.events`) say what was decided; two things they cannot carry
live here instead:

- how long each backend call took: the guard calls :data:`call_observer` around
  a call when one is set (one global read per call when none is: nothing else is
  paid uninstrumented);
- the guard's live state (in-flight and waiting calls, circuit state per failure
  domain), read on demand by :func:`guard_stats`, which walks the guards the
  failure module registered (:func:`track`).
"""

from __future__ import annotations

import time
import typing
import weakref

if typing.TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Hashable, Iterator

    from traffik.backends.base import ThrottleBackend
    from traffik.decisions import Decision

    Backend = ThrottleBackend[typing.Any, typing.Any]
    #: ``(backend, seconds, error)``: one backend call finished (``error`` None: it answered).
    CallObserver = Callable[[Backend, float, "BaseException | None"], None]

__all__ = ["GuardStat", "call_observer", "guard_stats", "observed", "track"]

#: Set by traffik.metrics.instrument(); None when nobody measures backend calls.
call_observer: CallObserver | None = None

#: id(backend) -> the backend, for every backend a guard was composed around.
_backends: weakref.WeakValueDictionary[int, typing.Any] = weakref.WeakValueDictionary()


def track(backend: Backend) -> None:
    """Remember ``backend`` (a guard was just composed around it), weakly."""
    _backends[id(backend)] = backend


async def observed(
    observer: CallObserver, backend: Backend, call: Callable[[Backend], Awaitable[Decision]]
) -> Decision:
    """Run ``call(backend)`` and tell ``observer`` how long it took and how it ended."""
    started = time.perf_counter()
    error: BaseException | None = None
    try:
        return await call(backend)
    except BaseException as exc:  # cancelled at the deadline counts too
        error = exc
        raise
    finally:
        observer(backend, time.perf_counter() - started, error)


class GuardStat(typing.NamedTuple):
    """The live state of one failure domain of one backend."""

    backend: typing.Any
    domain: Hashable
    in_flight: int
    waiting: int
    circuit: str


def guard_stats() -> Iterator[GuardStat]:
    """The state of every failure domain of every live backend with a guard (read-only)."""
    from traffik.failures import _guards

    for key, guard in list(_guards.items()):
        backend = _backends.get(key)
        if backend is None:
            continue
        for domain, state in list(guard._domains.items()):
            slots = state.slots
            yield GuardStat(backend, domain, slots.busy, slots.waiting, state.breaker.state)
