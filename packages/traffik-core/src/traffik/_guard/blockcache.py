"""A bounded local cache of refusals: keys known to be over their limit until some time.

Quotas in every built-in strategy only come back with time, so once a backend
refused cost ``c`` for a key until ``T``, any request of cost ``>= c`` for that
key, under the same rate and strategy configuration (callers key entries by both),
is refused until ``T`` too; answering it locally saves a network round trip
during floods. Only a reset by another process (of the backend, or of one
client with ``reset_client``) can make the local answer stale, so an entry is
trusted for at most :data:`MAX_TRUST_MS` (one second): then the backend is asked
again, and a client another process unblocked is admitted within a second.
"""

from __future__ import annotations

import time as _time
import typing
from collections import OrderedDict

from traffik.decisions import Decision

if typing.TYPE_CHECKING:
    from traffik.rates import Rate
    from traffik.strategies._base import Strategy

__all__ = ["MAX_TRUST_MS", "BlockCache", "entry_key"]

#: How long a cached refusal is answered locally before the backend is asked again:
#: the longest a reset made by another process goes unseen by this one.
MAX_TRUST_MS = 1000


def _monotonic_ms() -> int:
    return _time.monotonic_ns() // 1_000_000


class BlockCache:
    """At most ``max_entries`` blocked keys (least recently blocked evicted first)."""

    __slots__ = ("_clock", "_entries", "max_entries")

    def __init__(
        self, max_entries: int = 10_000, *, clock: typing.Callable[[], int] = _monotonic_ms
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}.")
        self.max_entries = max_entries
        self._clock = clock
        #: key -> (trusted until, blocked until, cost, cached at, decision)
        self._entries: OrderedDict[str, tuple[int, int, int, int, Decision]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, cost: int) -> Decision | None:
        """The refusal to answer locally for ``key`` and ``cost``, or None to ask the backend."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        trusted, until, blocked_cost, at, decision = entry
        now = self._clock()
        if now >= trusted:
            del self._entries[key]
            return None
        if cost < blocked_cost:
            return None
        return Decision(
            False,
            decision.limit,
            decision.remaining,
            max(0, decision.reset_ms - (now - at)),
            until - now,
            decision.window_ms,
            decision.policy,
        )

    def put(self, key: str, cost: int, decision: Decision) -> None:
        """Remember a refusal (ignored unless it has a finite, positive retry-after)."""
        if decision.allowed or decision.retry_after_ms <= 0:
            return
        now = self._clock()
        entries = self._entries
        until = now + decision.retry_after_ms
        entries[key] = (min(until, now + MAX_TRUST_MS), until, cost, now, decision)
        entries.move_to_end(key)
        if len(entries) > self.max_entries:
            entries.popitem(last=False)

    def discard(self, key: str) -> None:
        """Forget the refusal cached for ``key`` (its client was reset), if any."""
        self._entries.pop(key, None)

    def clear(self) -> None:
        """Forget every refusal (called when the backend is reset)."""
        self._entries.clear()


#: Tags of the strategies seen, by id (the strategy is kept, so its id is not reused):
#: an int lookup instead of hashing a dataclass per request.
_tags: dict[int, tuple[Strategy, str]] = {}
_MAX_TAGS = 256


def _strategy_tag(strategy: Strategy) -> str:
    """The strategy with its whole configuration (a refusal under a stricter one of the
    same kind, say a smaller debt, says nothing about a more lenient one)."""
    known = _tags.get(id(strategy))
    if known is not None and known[0] is strategy:
        return known[1]
    tag = repr(strategy)
    if len(_tags) >= _MAX_TAGS:
        _tags.clear()
    _tags[id(strategy)] = (strategy, tag)
    return tag


def entry_key(key: str, strategy: Strategy, rate: Rate) -> str:
    """The cache entry of ``key`` under ``strategy`` (its whole configuration) and ``rate``."""
    return f"{key}:{_strategy_tag(strategy)}:{rate.limit}/{rate._expire}"
