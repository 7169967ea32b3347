"""Counters and TTL changes of the primitives, with deadlines to the millisecond.

An item written with a TTL by ``set``, ``increment_with_ttl`` or ``expire`` keeps
its deadline in its client flags (see :mod:`traffik.memcached._keys`), and every
read treats it as missing from that millisecond on. memcached's ``incr`` cannot
look at the flags, so a counter is read first (``gets``) and then, in a second
command, counted on (``incr``/``decr``), created (``add``) or, past its deadline,
replaced (``cas`` over the item read); a lost race reads again.
"""

from __future__ import annotations

import math
import typing

from traffik.exceptions import BackendError
from traffik.memcached._keys import (
    deadline_flags,
    decode_counter,
    encode_counter,
    expired,
    exptime,
)
from traffik.memcached._protocol import LINE, NON_NUMERIC, VALUES

if typing.TYPE_CHECKING:
    from traffik.memcached._protocol import Values
    from traffik.memcached._servers import Server
    from traffik.memcached.backend import MemcachedBackend

__all__ = ["count", "not_a_counter", "retime", "ttl_fields"]

#: Reads and writes of one call before it gives up on a key other callers keep changing.
_ATTEMPTS = 16
_LOST_RACE = (b"NOT_STORED", b"EXISTS", b"NOT_FOUND")


def ttl_fields(now_ms: int, seconds: float | None) -> tuple[int, int]:
    """``(client flags, exptime)`` of an item written at ``now_ms`` to live ``seconds`` (None: forever)."""
    if seconds is None:
        return 0, 0
    return deadline_flags(now_ms, math.ceil(seconds * 1000)), exptime(seconds)


async def count(
    backend: MemcachedBackend[typing.Any],
    server: Server,
    key: str,
    amount: int,
    ttl: float | None,
) -> int:
    """Add ``amount`` to the counter at ``key``; a missing or expired one starts at ``amount``.

    A new counter lives ``ttl`` seconds (None: no TTL); counting on an existing one
    keeps its TTL and deadline.
    """
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise ValueError(f"amount must be an int, got {amount!r}.")
    verb = b"incr" if amount >= 0 else b"decr"
    initial = encode_counter(amount)
    for _ in range(_ATTEMPTS):
        (item,), (values,) = await backend._run(
            server, [key], lambda ks: (b"gets %s\r\n" % ks[0], (VALUES,))
        )
        entry = typing.cast("Values", values).get(item)
        now = backend.clock()
        if entry is not None and not expired(entry[2], now):
            command = b"%s %s %d\r\n" % (verb, item, abs(amount))
            (line,) = await server.client.execute(command, (LINE,))
            line = typing.cast("bytes", line)
            if line[:1].isdigit():
                return decode_counter(line)
            if line == NON_NUMERIC:
                raise ValueError(await not_a_counter(server, key, item, line))
            if line != b"NOT_FOUND":
                raise BackendError(f"memcached answered {verb.decode()} of {key!r} with {line!r}.")
            continue  # reclaimed meanwhile: read again
        flags, expiry = ttl_fields(now, ttl)
        # Same generation as the read: a reset in between makes this count go to the
        # dead generation, as if it had been made just before the reset.
        if entry is None:
            command = b"add %s %d %d %d\r\n%s\r\n" % (item, flags, expiry, len(initial), initial)
        else:  # past its deadline: replace it, unless someone else changed it first
            command = b"cas %s %d %d %d %d\r\n%s\r\n" % (
                item, flags, expiry, len(initial), entry[1], initial
            )  # fmt: skip
        (line,) = await server.client.execute(command, (LINE,))
        if line == b"STORED":
            return amount
        if line not in _LOST_RACE:  # SERVER_ERROR out of memory storing object, ...
            raise BackendError(f"memcached answered the write of counter {key!r} with {line!r}.")
    raise BackendError(
        f"Counter {key!r} kept changing or vanishing under {_ATTEMPTS} attempts to count on "
        f"it; is memcached evicting it, or is something rewriting it in a loop?"
    )


async def retime(
    backend: MemcachedBackend[typing.Any], server: Server, key: str, seconds: float
) -> bool:
    """Give the item at ``key`` a new TTL of ``seconds``; False if it is missing or expired."""
    for _ in range(_ATTEMPTS):
        (item,), (values,) = await backend._run(
            server, [key], lambda ks: (b"gets %s\r\n" % ks[0], (VALUES,))
        )
        entry = typing.cast("Values", values).get(item)
        now = backend.clock()
        if entry is None or expired(entry[2], now):
            return False
        data = entry[0]
        if data.strip().isdigit():
            data = data.strip()  # a counter memcached padded after a decr
        flags, expiry = ttl_fields(now, seconds)
        command = b"cas %s %d %d %d %d\r\n%s\r\n" % (item, flags, expiry, len(data), entry[1], data)
        (line,) = await server.client.execute(command, (LINE,))
        if line == b"STORED":
            return True
        if line == b"NOT_FOUND":
            return False
        if line != b"EXISTS":
            raise BackendError(f"memcached answered the new TTL of {key!r} with {line!r}.")
    raise BackendError(
        f"The item at {key!r} kept changing under {_ATTEMPTS} attempts to expire it."
    )


async def not_a_counter(server: Server, key: str, item: bytes, reply: bytes) -> str:
    """The message for a counter command on a value that is not a counter (read once more)."""
    try:
        (values,) = await server.client.execute(b"get %s\r\n" % item, (VALUES,))
        entry = typing.cast("Values", values).get(item)
        stored = "nothing (it is gone)" if entry is None else repr(entry[0][:80])
    except BackendError as exc:
        stored = f"unknown ({exc})"
    return (
        f"The value at {key!r} is not an integer counter; set it to an int first "
        f"(memcached answered {reply.decode('ascii', 'replace')!r}; item {item.decode()!r} "
        f"holds {stored})."
    )
