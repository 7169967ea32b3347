"""Leases: the state of concurrency limits, a second kind of state beside rate decisions.

A throttle key holds a set of **leases**, one per request (or WebSocket) in flight,
each ``holder -> expiry`` (milliseconds). Three operations, each atomic on every
backend:

- **take** ``(key, holder, limit, lease_ms)``: drop the expired leases, count the
  others, and add ``holder`` (expiring ``lease_ms`` from now) if fewer than
  ``limit`` are held. A holder already holding a live lease renews it. The answer
  is a :class:`LeaseGrant`; when refused, ``retry_after_ms`` is the time until the
  earliest lease expires (an upper bound on the wait: most slots are released
  long before that).
- **renew** ``(key, holder, lease_ms)``: push a live lease's expiry to
  ``lease_ms`` from now; False when the lease is gone (expired or released).
- **release** ``(key, holder)``: remove the lease; False when it was not held
  (already expired or released).

A lease nobody renews or releases expires: a crashed process's slots come back
after one ``lease``. The functions here are the Python reference, run on a dict:
the in-memory backend runs them as is, in one synchronous step; the Redis Lua
script and the Memcached CAS loop port them (and the conformance kit checks that
every backend behaves like them). :func:`encode_leases`/:func:`decode_leases` are
the text form backends that store strings (Memcached) use.
"""

from __future__ import annotations

import typing

__all__ = [
    "LeaseGrant",
    "decode_leases",
    "encode_leases",
    "release_lease",
    "renew_lease",
    "take_lease",
]

#: ``holder -> expiry`` (milliseconds, on the backend's clock).
Leases = dict[str, int]


class LeaseGrant(typing.NamedTuple):
    """The answer of a take: ``taken``; ``held``, the live leases after it (this one
    included when taken); ``retry_after_ms``, when refused, the time until the earliest
    lease expires (0 when taken)."""

    taken: bool
    held: int
    retry_after_ms: int = 0


def _prune(leases: Leases, now: int) -> None:
    expired = [holder for holder, expiry in leases.items() if expiry <= now]
    for holder in expired:
        del leases[holder]


def take_lease(leases: Leases, now: int, holder: str, limit: int, lease_ms: int) -> LeaseGrant:
    """Take (or renew) ``holder``'s lease in ``leases`` (changed in place) if under ``limit``."""
    _prune(leases, now)
    if holder in leases or len(leases) < limit:
        leases[holder] = now + lease_ms
        return LeaseGrant(True, len(leases), 0)
    earliest = min(leases.values())
    return LeaseGrant(False, len(leases), earliest - now)


def renew_lease(leases: Leases, now: int, holder: str, lease_ms: int) -> bool:
    """Push ``holder``'s live lease to ``now + lease_ms``; False if it is gone."""
    _prune(leases, now)
    if holder not in leases:
        return False
    leases[holder] = now + lease_ms
    return True


def release_lease(leases: Leases, now: int, holder: str) -> bool:
    """Remove ``holder``'s lease; False if it was not live."""
    _prune(leases, now)
    return leases.pop(holder, None) is not None


def encode_leases(leases: Leases) -> str:
    """``"holder expiry holder expiry ..."`` (holders hold no whitespace)."""
    return " ".join(f"{holder} {expiry}" for holder, expiry in leases.items())


def decode_leases(text: str | None) -> Leases:
    """The leases encoded by :func:`encode_leases` (None or "" is no lease)."""
    if not text:
        return {}
    parts = text.split()
    return {parts[i]: int(parts[i + 1]) for i in range(0, len(parts) - 1, 2)}
