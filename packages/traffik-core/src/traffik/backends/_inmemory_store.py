"""The in-memory backend's storage: entries in LRU order, and a coarse expiry wheel.

Layout: an ``OrderedDict`` in least-recently-used order maps each key to a
``[value, expires_at_ms, bucket]`` list. Keys with a TTL also sit in a coarse
expiry wheel (one set of keys per ~1 s bucket, bucket ids in a heap), so expired
entries are found without scanning: every write deletes a few keys from buckets
that have wholly expired. A read of an expired key drops it on the spot, and past
``max_keys`` the least recently used key is evicted.
"""

from __future__ import annotations

import heapq
import typing
from collections import OrderedDict

__all__ = ["BUCKET_SHIFT", "RECLAIM_PER_WRITE", "ExpiryWheelStore", "Store"]

#: Expired keys deleted per write, at most (amortised reclamation).
RECLAIM_PER_WRITE = 4

#: Expiry buckets are ``2**BUCKET_SHIFT`` ms wide (about one second).
BUCKET_SHIFT = 10

# key -> [value (str, or a strategy State tuple), expires_at_ms or None, bucket or None]
Store = OrderedDict[str, list[typing.Any]]


class ExpiryWheelStore:
    """The synchronous storage core of ``InMemoryBackend`` (a mixin over its attributes).

    Every method runs without ``await``, so a caller composing them is atomic.
    """

    max_keys: int
    _buckets: dict[int, set[str]]
    _bucket_heap: list[int]

    def _live(self, store: Store, key: str, now: int) -> list[typing.Any] | None:
        """The entry at ``key`` if it has not expired (marked recently used), else None."""
        entry = store.get(key)
        if entry is None:
            return None
        expires = entry[1]
        if expires is not None and expires <= now:
            self._drop(store, key, entry)
            return None
        store.move_to_end(key)
        return entry

    def _drop(self, store: Store, key: str, entry: list[typing.Any]) -> None:
        del store[key]
        self._unbucket(key, entry)

    def _unbucket(self, key: str, entry: list[typing.Any]) -> None:
        bucket = entry[2]
        if bucket is not None:
            entry[2] = None
            keys = self._buckets.get(bucket)
            if keys is not None:
                keys.discard(key)

    def _expire_at(self, key: str, entry: list[typing.Any], expires: int | None) -> None:
        """Set the expiry of a stored entry, moving it to the matching wheel bucket."""
        entry[1] = expires
        bucket = None if expires is None else expires >> BUCKET_SHIFT
        old = entry[2]
        if bucket == old:
            return
        buckets = self._buckets
        if old is not None:
            keys = buckets.get(old)
            if keys is not None:
                keys.discard(key)
        entry[2] = bucket
        if bucket is not None:
            keys = buckets.get(bucket)
            if keys is None:
                buckets[bucket] = {key}
                heapq.heappush(self._bucket_heap, bucket)
            else:
                keys.add(key)

    def _put(
        self, store: Store, key: str, value: typing.Any, expires: int | None, now: int
    ) -> None:
        """Store ``value`` at ``key`` (most recently used), then reclaim a little."""
        entry = store.get(key)
        if entry is None:
            entry = [value, None, None]
            store[key] = entry
            if len(store) > self.max_keys:
                old_key, old_entry = store.popitem(last=False)
                self._unbucket(old_key, old_entry)
        else:
            entry[0] = value
            store.move_to_end(key)
        if entry[1] != expires:
            self._expire_at(key, entry, expires)
        heap = self._bucket_heap
        if heap and heap[0] < now >> BUCKET_SHIFT:
            self._reclaim(store, now)

    def _reclaim(self, store: Store, now: int) -> None:
        """Delete up to a few keys from buckets that have wholly expired by ``now``."""
        heap = self._bucket_heap
        buckets = self._buckets
        horizon = now >> BUCKET_SHIFT
        budget = RECLAIM_PER_WRITE
        while heap and heap[0] < horizon:
            bucket = heap[0]
            keys = buckets.get(bucket)
            while keys and budget:
                key = keys.pop()
                entry = store.pop(key, None)
                if entry is not None:
                    entry[2] = None
                budget -= 1
            if keys:
                return
            buckets.pop(bucket, None)
            heapq.heappop(heap)
            if not budget:
                return
