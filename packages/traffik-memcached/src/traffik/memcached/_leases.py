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

import typing

from traffik.leases import decode_leases, encode_leases
from traffik.memcached._decisions import Entry, cas_loop
from traffik.memcached._keys import decode_value, encode_text, exptime

if typing.TYPE_CHECKING:
    from collections.abc import Callable

    from traffik.memcached.backend import MemcachedBackend

__all__ = ["on_leases"]

R = typing.TypeVar("R")


async def on_leases(
    backend: MemcachedBackend[typing.Any],
    key: str,
    step: Callable[[dict[str, int], int], R],
    now_ms: int | None,
) -> R:
    """Run ``step(leases, now)`` (it changes ``leases`` in place) atomically on ``key``'s item.

    The read, the retries and the turns per key are the decisions' CAS loop
    (:func:`traffik.memcached._decisions.cas_loop`); only the write differs.
    """
    lkey = backend.lease_key(key)

    def attempt(mk: bytes, entry: Entry | None) -> tuple[bytes | None, R]:
        leases = decode_leases(None if entry is None else decode_value(entry[0]))
        before = dict(leases)
        now = backend.clock() if now_ms is None else now_ms
        result = step(leases, now)
        if leases == before:
            return None, result
        if not leases:
            if entry is None:
                return None, result
            return b"cas %s 0 -1 0 %d\r\n\r\n" % (mk, entry[1]), result
        data = encode_text(encode_leases(leases))
        ttl = exptime(max(1, -(-(max(leases.values()) - now) // 1000)))
        if entry is None:
            return b"add %s 0 %d %d\r\n%s\r\n" % (mk, ttl, len(data), data), result
        return b"cas %s 0 %d %d %d\r\n%s\r\n" % (mk, ttl, len(data), entry[1], data), result

    return await cas_loop(backend, backend._server(lkey), lkey, attempt, "updating the leases of")
