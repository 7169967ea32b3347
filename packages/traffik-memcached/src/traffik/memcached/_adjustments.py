"""How MemcachedBackend adjusts: a CAS on the window counter, or the strategy's own CAS loop.

The fixed window keeps one counter per window (see ``_decisions.decide_window``).
A counter may stand above the limit: rejections of a window that was already full
keep their charge (``decide_window`` skips their give-back), so any count at or
above the limit means "full". An adjustment therefore reads the counter as
``min(count, limit)`` and writes the result with ``cas``: a refund lowers it
(never below zero) if the refunded charge was made in the current window, a
charge raises it up to the limit (the fixed window's debt is a full window). One
race stays: a multi-unit request whose ``incr`` overshot a nearly full window and
whose give-back ``decr`` has not landed yet is read as "full" by a refund, which
then gives back up to that request's cost minus one unit too much, once. Every
other strategy runs its reference adjustment between ``gets`` and ``cas``.
"""

from __future__ import annotations

import typing

from traffik.memcached._decisions import Entry, cas_loop, write_command
from traffik.memcached._keys import decode_counter, decode_value, encode_counter, exptime
from traffik.strategies import ceil_div, check_adjustment, decode_state

if typing.TYPE_CHECKING:
    from traffik.decisions import Decision
    from traffik.memcached._servers import Server
    from traffik.memcached.backend import MemcachedBackend
    from traffik.rates import Rate
    from traffik.strategies import Strategy

__all__ = ["adjust_cas", "adjust_window"]


async def adjust_window(
    backend: MemcachedBackend[typing.Any],
    server: Server,
    skey: str,
    strategy: Strategy,
    rate: Rate,
    delta: int,
    age_ms: int,
    now_ms: int | None,
) -> Decision:
    """Adjust the counter of the current window (a fixed window), by ``cas``."""
    bounded = check_adjustment(strategy, rate, delta, age_ms)
    limit, window = rate.limit, rate.expire
    now = backend.clock() if now_ms is None else now_ms
    start = now - now % window
    if bounded == 0 or (bounded < 0 and now - age_ms < start):
        used = min(await backend._read_counter(server, f"{skey}@{start}"), limit)
        return strategy.snapshot((start, used) if used else None, now, rate)
    ttl = exptime(ceil_div(start + window - now, 1000))

    def attempt(mk: bytes, entry: Entry | None) -> tuple[bytes | None, int]:
        count = 0 if entry is None else max(0, decode_counter(entry[0]))
        used = min(count, limit)
        if bounded < 0:
            new = max(0, used + bounded)
        else:
            new = min(limit, used + bounded) if used < limit else count
        if new == count or (entry is None and new == 0):
            return None, min(new, limit)
        data = encode_counter(new)
        if entry is None:
            return b"add %s 0 %d %d\r\n%s\r\n" % (mk, ttl, len(data), data), new
        return b"cas %s 0 %d %d %d\r\n%s\r\n" % (mk, ttl, len(data), entry[1], data), new

    used = await cas_loop(backend, server, f"{skey}@{start}", attempt, "adjusting")
    return strategy.snapshot((start, used) if used else None, now, rate)


async def adjust_cas(
    backend: MemcachedBackend[typing.Any],
    server: Server,
    skey: str,
    strategy: Strategy,
    rate: Rate,
    delta: int,
    age_ms: int,
    now_ms: int | None,
) -> Decision:
    """The strategy's reference adjustment between ``gets`` and ``cas`` (``add`` for a new key)."""
    check_adjustment(strategy, rate, delta, age_ms)  # bad input fails before any I/O

    def attempt(mk: bytes, entry: Entry | None) -> tuple[bytes | None, Decision]:
        state = None if entry is None else decode_state(decode_value(entry[0]))
        now = backend.clock() if now_ms is None else now_ms
        step = strategy.adjust(state, now, rate, delta, age_ms)
        if not step.write:
            return None, step.decision
        return write_command(mk, entry, step.state, step.ttl_ms), step.decision

    return await cas_loop(backend, server, skey, attempt, "adjusting")
