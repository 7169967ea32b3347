"""Which guard belongs to which backend, and what the layers above ask of it.

Guards are kept by ``id(backend)``; an entry goes when its backend is collected
(:func:`weakref.finalize`), so a backend need not be hashable and a guard never
keeps its backend alive.
"""

from __future__ import annotations

import typing
import weakref

from traffik._guard.guard import Guard

if typing.TYPE_CHECKING:
    from collections.abc import Hashable

    from traffik._guard.types import Backend

__all__ = [
    "DomainStats",
    "backends",
    "drain_abandoned",
    "forget_local_blocks",
    "forget_refusal",
    "guards",
    "heard_from",
    "lookup",
    "set_guard",
    "stats",
]

#: The guard of each backend with a policy, by id(backend).
guards: dict[int, Guard] = {}
#: The same backends, weakly, for readers of every guard (traffik.metrics).
backends: weakref.WeakValueDictionary[int, Backend] = weakref.WeakValueDictionary()


def set_guard(backend: Backend, guard: Guard) -> Guard:
    """Compose ``guard`` around ``backend``."""
    key = id(backend)
    if key not in guards:
        weakref.finalize(backend, guards.pop, key, None)
        backends[key] = backend
    guards[key] = guard
    return guard


def lookup(backend: Backend) -> Guard | None:
    """The guard composed around ``backend`` so far, if any (never makes one)."""
    return guards.get(id(backend))


def heard_from(backend: Backend, domain: Hashable = None) -> None:
    """See :func:`traffik.failures.heard_from`."""
    guard = guards.get(id(backend))
    if guard is not None:
        guard.breaker(domain).heard()


async def drain_abandoned(backend: Backend) -> None:
    """Let calls abandoned at their deadline unwind (bounded) before ``backend`` closes."""
    guard = guards.get(id(backend))
    if guard is not None:
        await guard.drain()


def forget_refusal(backend: Backend, entry: str) -> None:
    """Drop the refusal cached for block-cache entry ``entry`` (its client was reset)."""
    guard = guards.get(id(backend))
    if guard is not None and guard.cache is not None:
        guard.cache.discard(entry)


def forget_local_blocks(backend: Backend) -> None:
    """Drop the refusals cached for ``backend`` (its data was reset)."""
    guard = guards.get(id(backend))
    if guard is not None and guard.cache is not None:
        guard.cache.clear()


class DomainStats(typing.NamedTuple):
    """A snapshot of one failure domain of a guarded backend."""

    #: The failure domain (``None``: the whole backend).
    domain: Hashable
    #: Calls out to the server now (abandoned ones still unwinding included).
    in_flight: int
    #: Requests waiting in line for an in-flight slot.
    waiting: int
    #: The circuit: ``"closed"``, ``"open"`` or ``"half_open"``.
    circuit: str
    #: Calls the server has answered since the domain was first used.
    answers: int


def stats(backend: Backend) -> list[DomainStats]:
    """A snapshot of every failure domain ``backend``'s guard has used (empty without one)."""
    guard = guards.get(id(backend))
    if guard is None:
        return []
    return [
        DomainStats(where, d.slots.busy, d.slots.waiting, d.breaker.state, d.breaker.answers)
        for where, d in guard.domains().items()
    ]
