"""Leases on Memcached: the reference transitions of :mod:`traffik.leases` in a CAS loop.

The leases of one throttle key are one item (``holder expiry ...``, see
:func:`traffik.leases.encode_leases`), read with ``gets`` and written back with
``cas`` (``add`` when new; ``cas`` with exptime -1 when the last lease goes). A lost
race reads again, after a short random pause that doubles per retry, up to the
backend's ``max_retries``. Requests of this instance take turns per key (a local
lock, no I/O), so only other instances make races. Times come from the backend's
clock (the app host's wall clock): memcached has no clock to share.
"""

from __future__ import annotations

import asyncio
import random
import typing

from traffik.exceptions import BackendError
from traffik.failures import heard_from
from traffik.leases import decode_leases, encode_leases
from traffik.memcached._keys import decode_value, encode_text, exptime
from traffik.memcached._protocol import LINE, VALUES

if typing.TYPE_CHECKING:
    from collections.abc import Callable

    from traffik.memcached._protocol import Values
    from traffik.memcached.backend import MemcachedBackend

__all__ = ["on_leases"]

R = typing.TypeVar("R")


async def on_leases(
    backend: MemcachedBackend[typing.Any],
    key: str,
    step: Callable[[dict[str, int], int], R],
    now_ms: int | None,
) -> R:
    """Run ``step(leases, now)`` (it changes ``leases`` in place) atomically on ``key``'s item."""
    lkey = backend.lease_key(key)
    server = backend._server(lkey)
    lock = backend._turns.get(lkey)
    if lock is None:
        lock = backend._turns[lkey] = asyncio.Lock()
    async with lock:
        for attempt in range(backend.max_retries + 1):
            if attempt:
                pause = backend.retry_backoff * (1 << min(attempt, 10))
                await asyncio.sleep(random.uniform(0, min(pause, 0.05)))
            (mk,), (values,) = await backend._run(
                server, [lkey], lambda ks: (b"gets %s\r\n" % ks[0], (VALUES,))
            )
            entry = typing.cast("Values", values).get(mk)
            leases = decode_leases(None if entry is None else decode_value(entry[0]))
            before = dict(leases)
            now = backend.clock() if now_ms is None else now_ms
            result = step(leases, now)
            if leases == before:
                return result
            if not leases:
                if entry is None:
                    return result
                command = b"cas %s 0 -1 0 %d\r\n\r\n" % (mk, entry[1])
            else:
                data = encode_text(encode_leases(leases))
                seconds = -(-(max(leases.values()) - now) // 1000)
                ttl = exptime(max(1, seconds))
                if entry is None:
                    command = b"add %s 0 %d %d\r\n%s\r\n" % (mk, ttl, len(data), data)
                else:
                    command = b"cas %s 0 %d %d %d\r\n%s\r\n" % (mk, ttl, len(data), entry[1], data)
            (line,) = await server.client.execute(command, (LINE,))
            if line == b"STORED":
                return result
            if line not in (b"EXISTS", b"NOT_FOUND", b"NOT_STORED"):
                raise BackendError(f"memcached answered the write of {lkey!r} with {line!r}.")
            # A lost race is an answer: the server is alive, however long this takes.
            heard_from(backend, server.address)
        raise BackendError(
            f"Gave up on the leases of {lkey!r} after {backend.max_retries + 1} attempts: "
            f"other requests kept changing them (CAS contention). Raise max_retries."
        )
