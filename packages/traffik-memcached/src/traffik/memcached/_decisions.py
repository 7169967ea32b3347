"""How MemcachedBackend decides: one counter per fixed window, or a gets/cas loop."""

from __future__ import annotations

import asyncio
import random
import typing

from traffik.exceptions import BackendError
from traffik.failures import heard_from
from traffik.memcached._keys import (
    decode_counter,
    decode_value,
    encode_counter,
    encode_text,
    exptime,
)
from traffik.memcached._primitives import not_a_counter
from traffik.memcached._protocol import LINE, NON_NUMERIC, VALUES
from traffik.strategies import ceil_div, decode_state, encode_state

if typing.TYPE_CHECKING:
    from collections.abc import Sequence

    from traffik.decisions import Decision
    from traffik.memcached._protocol import Values
    from traffik.memcached._servers import Server
    from traffik.memcached.backend import MemcachedBackend
    from traffik.rates import Rate
    from traffik.strategies import Strategy

__all__ = ["Entry", "cas_loop", "charge", "decide_cas", "decide_window", "write_command"]

T = typing.TypeVar("T")
#: A retrieved item: (data, cas unique, flags).
Entry = tuple[bytes, int, int]


async def decide_window(
    backend: MemcachedBackend[typing.Any],
    server: Server,
    skey: str,
    strategy: Strategy,
    rate: Rate,
    cost: int,
    now_ms: int | None,
) -> Decision:
    """Fixed window as one counter per window: ``incr``, and ``decr`` back on overshoot.

    Rejected requests are not charged: the compensating ``decr`` takes their cost
    back. It is skipped when the window was already full before this request
    (``before >= limit``): nothing could fit any more, so giving back changes no
    later decision (counters only fall through other requests' give-backs). A hot
    key's rejection is then one ``incr`` like an admission. The ``decr`` goes to the
    very item the ``incr`` counted on (a ``reset()`` in between cannot make it take
    units from the next generation).

    Until a give-back lands (one round trip later) the overshoot is visible to
    concurrent requests, which may then be rejected although they would have
    fitted (only with mixed costs near the limit); such a concurrent rejection that
    found the window full because of that overshoot keeps its charge until the
    window ends. Both err on the side of rejecting: the admitted total never
    exceeds the limit. The ``decr`` is shielded from the caller's cancellation; if
    it is lost anyway (a crash, or a cancellation while the ``incr`` was in
    flight), the window stays over-charged until it ends.
    """
    limit, window = rate.limit, rate.expire
    now = backend.clock() if now_ms is None else now_ms
    start = now - now % window
    ckey = f"{skey}@{start}"
    if cost > limit:  # never admissible: charge nothing, report the window
        used = min(await backend._read_counter(server, ckey), limit)
        return strategy.decide((start, used) if used else None, now, rate, cost).decision
    ttl = exptime(ceil_div(start + window - now, 1000))
    item, total = await charge(backend, server, ckey, cost, ttl)
    before = total - cost
    if total > limit:
        if before < limit:
            # decr only (a vanished counter has nothing to give back), shielded so that
            # a caller's timeout does not leave the window over-charged.
            client = server.client
            await asyncio.shield(client.execute(b"decr %s %d\r\n" % (item, cost), (LINE,)))
        before = min(before, limit)
    return strategy.decide((start, before) if before > 0 else None, now, rate, cost).decision


async def charge(
    backend: MemcachedBackend[typing.Any], server: Server, key: str, amount: int, ttl: int
) -> tuple[bytes, int]:
    """Add ``amount`` to a window counter: ``incr`` in place, or ``add`` with exptime ``ttl``.

    No deadline in the flags: a window counter's key names its window, so one
    read after its window is never consulted. Returns the item key counted on
    (in the generation read) and the new count.
    """
    verb = b"incr" if amount >= 0 else b"decr"
    delta = abs(amount)
    initial = encode_counter(amount)
    for _ in range(8):
        (item,), (line,) = await backend._run(
            server, [key], lambda ks: (b"%s %s %d\r\n" % (verb, ks[0], delta), (LINE,))
        )
        line = typing.cast("bytes", line)
        if line[:1].isdigit():
            return item, decode_counter(line)
        if line == NON_NUMERIC:
            raise ValueError(await not_a_counter(server, key, item, line))
        if line != b"NOT_FOUND":
            raise BackendError(f"memcached answered {verb.decode()} of {key!r} with {line!r}.")
        # Same generation as the incr: a reset in between makes this count go to
        # the dead generation, as if it had been made just before the reset.
        command = b"add %s 0 %d %d\r\n%s\r\n" % (item, ttl, len(initial), initial)
        (line,) = await server.client.execute(command, (LINE,))
        if line == b"STORED":
            return item, amount
        if line != b"NOT_STORED":  # SERVER_ERROR out of memory storing object, ...
            raise BackendError(f"memcached answered add of {key!r} with {line!r}.")
        # NOT_STORED: another caller created it meanwhile; count on top of theirs.
    raise BackendError(
        f"Counter {key!r} kept vanishing between incr and add; is memcached evicting it?"
    )


async def decide_cas(
    backend: MemcachedBackend[typing.Any],
    server: Server,
    skey: str,
    strategy: Strategy,
    rate: Rate,
    cost: int,
    now_ms: int | None,
) -> Decision:
    """The strategy's own transition between ``gets`` and ``cas`` (``add`` for a new key).

    A lost race re-reads and re-decides (see :func:`cas_loop`).
    """

    def attempt(mk: bytes, entry: Entry | None) -> tuple[bytes | None, Decision]:
        state = None if entry is None else decode_state(decode_value(entry[0]))
        now = backend.clock() if now_ms is None else now_ms
        step = strategy.decide(state, now, rate, cost)
        if not step.write:
            return None, step.decision
        return write_command(mk, entry, step.state, step.ttl_ms), step.decision

    return await cas_loop(backend, server, skey, attempt, "deciding")


async def cas_loop(
    backend: MemcachedBackend[typing.Any],
    server: Server,
    skey: str,
    attempt: typing.Callable[[bytes, Entry | None], tuple[bytes | None, T]],
    doing: str,
) -> T:
    """``gets`` the item of ``skey``, let ``attempt`` say what to write, ``cas`` or ``add`` it.

    ``attempt(item_key, entry)`` returns the write command (None: nothing to write)
    and the result. A lost race re-reads and calls ``attempt`` again, after a random
    pause that doubles on every retry; after ``max_retries`` retries it raises
    BackendError. Requests of this instance for the same key take turns (a local
    asyncio lock, no I/O), so they never fight each other over CAS: only other
    instances can make a race.
    """
    lock = backend._turns.get(skey)
    if lock is None:
        lock = backend._turns[skey] = asyncio.Lock()
    async with lock:
        client = server.client
        for retry in range(backend.max_retries + 1):
            if retry:
                pause = backend.retry_backoff * (1 << min(retry, 10))
                await asyncio.sleep(random.uniform(0, min(pause, 0.05)))
            (mk,), (values,) = await backend._run(
                server, [skey], lambda ks: (b"gets %s\r\n" % ks[0], (VALUES,))
            )
            entry = typing.cast("Values", values).get(mk)
            command, result = attempt(mk, entry)
            if command is None:
                return result
            (line,) = await client.execute(command, (LINE,))
            if line == b"STORED":
                return result
            if line not in (b"EXISTS", b"NOT_FOUND", b"NOT_STORED"):
                raise BackendError(f"memcached answered the write of {skey!r} with {line!r}.")
            # A lost race is an answer: the server is alive, however long this takes.
            heard_from(backend, server.address)
        raise BackendError(
            f"Gave up {doing} {skey!r} after {backend.max_retries + 1} attempts: other requests "
            f"kept changing it (CAS contention). Raise max_retries, or spread the load over more keys."
        )


def write_command(
    mk: bytes, entry: Entry | None, state: Sequence[int] | None, ttl_ms: int
) -> bytes | None:
    """``add`` a new state, ``cas`` over the one read, or expire it (``cas`` with exptime -1)."""
    if state is None:
        if entry is None:
            return None
        return b"cas %s 0 -1 0 %d\r\n\r\n" % (mk, entry[1])
    data = encode_text(encode_state(tuple(state)))
    ttl = exptime(ceil_div(ttl_ms, 1000))
    if entry is None:
        return b"add %s 0 %d %d\r\n%s\r\n" % (mk, ttl, len(data), data)
    return b"cas %s 0 %d %d %d\r\n%s\r\n" % (mk, ttl, len(data), entry[1], data)
