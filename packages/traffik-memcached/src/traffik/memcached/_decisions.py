"""How MemcachedBackend decides: one counter per fixed window, or a gets/cas loop."""

from __future__ import annotations

import asyncio
import random
import typing

from traffik.exceptions import BackendError
from traffik.failures import heard_from
from traffik.memcached._keys import decode_value, encode_text, exptime
from traffik.memcached._protocol import LINE, VALUES
from traffik.strategies._arith import ceil_div
from traffik.strategies._base import decode_state, encode_state

if typing.TYPE_CHECKING:
    from collections.abc import Sequence

    from traffik.decisions import Decision
    from traffik.memcached._protocol import Values
    from traffik.memcached.backend import MemcachedBackend
    from traffik.rates import Rate
    from traffik.strategies._base import Strategy

__all__ = ["decide_cas", "decide_window"]


async def decide_window(
    backend: MemcachedBackend[typing.Any],
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
        used = min(await backend._read_counter(ckey), limit)
        return strategy.decide((start, used) if used else None, now, rate, cost).decision
    ttl = exptime(ceil_div(start + window - now, 1000))
    item, total = await backend._charge(ckey, cost, ttl)
    before = total - cost
    if total > limit:
        if before < limit:
            # decr only (a vanished counter has nothing to give back), shielded so that
            # a caller's timeout does not leave the window over-charged.
            client = backend._client()
            await asyncio.shield(client.execute(b"decr %s %d\r\n" % (item, cost), (LINE,)))
        before = min(before, limit)
    return strategy.decide((start, before) if before > 0 else None, now, rate, cost).decision


async def decide_cas(
    backend: MemcachedBackend[typing.Any],
    skey: str,
    strategy: Strategy,
    rate: Rate,
    cost: int,
    now_ms: int | None,
) -> Decision:
    """The strategy's own transition between ``gets`` and ``cas`` (``add`` for a new key).

    A lost race re-reads and re-decides, after a random pause that doubles on
    every retry; after ``max_retries`` retries it raises BackendError. Requests of
    this instance for the same key take turns (a local asyncio lock, no I/O), so
    they never fight each other over CAS: only other instances can make a race.
    """
    lock = backend._turns.get(skey)
    if lock is None:
        lock = backend._turns[skey] = asyncio.Lock()
    async with lock:
        client = backend._client()
        for attempt in range(backend.max_retries + 1):
            if attempt:
                pause = backend.retry_backoff * (1 << min(attempt, 10))
                await asyncio.sleep(random.uniform(0, min(pause, 0.05)))
            (mk,), (values,) = await backend._run(
                [skey], lambda ks: (b"gets %s\r\n" % ks[0], (VALUES,))
            )
            entry = typing.cast("Values", values).get(mk)
            state = None if entry is None else decode_state(decode_value(entry[0]))
            now = backend.clock() if now_ms is None else now_ms
            step = strategy.decide(state, now, rate, cost)
            if not step.write:
                return step.decision
            command = _write_command(mk, entry, step.state, step.ttl_ms)
            if command is None:
                return step.decision
            (line,) = await client.execute(command, (LINE,))
            if line == b"STORED":
                return step.decision
            if line not in (b"EXISTS", b"NOT_FOUND", b"NOT_STORED"):
                raise BackendError(f"memcached answered the write of {skey!r} with {line!r}.")
            # A lost race is an answer: the server is alive, however long this takes.
            heard_from(backend)
        raise BackendError(
            f"Gave up deciding {skey!r} after {backend.max_retries + 1} attempts: other requests "
            f"kept changing it (CAS contention). Raise max_retries, or spread the load over more keys."
        )


def _write_command(
    mk: bytes, entry: tuple[bytes, int] | None, state: Sequence[int] | None, ttl_ms: int
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
