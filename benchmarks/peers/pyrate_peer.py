"""Peer: pyrate-limiter 4.5, run inside its own virtual environment.

pyrate keeps one bucket per Limiter; per-client limits need a bucket factory that
routes each name to its own bucket, as its documentation describes. The factory
below does only that (no background leaker, so nothing runs outside the loop).
"""

from __future__ import annotations

import time
import typing

import _harness as h
import pyrate_limiter as P
from pyrate_limiter import BucketFactory, Duration, Limiter, Rate, RateItem

_LOG = {"swl": P.SlidingWindowLog, "fw": P.FixedWindow}
_STATE = {"tb": P.TokenBucket, "gcra": P.GCRA}


class PerKeyFactory(BucketFactory):
    """One bucket per item name, built on first use."""

    def __init__(
        self, build: typing.Callable[[str], typing.Any], clock: typing.Callable[[], int]
    ) -> None:
        self.build = build
        self.clock = clock
        self.by_name: dict[str, typing.Any] = {}

    def wrap_item(self, name: str, weight: int = 1) -> RateItem:
        return RateItem(name, self.clock(), weight=weight)

    def get(self, item: RateItem) -> typing.Any:
        bucket = self.by_name.get(item.name)
        if bucket is None:
            bucket = self.by_name[item.name] = self.build(item.name)
        return bucket


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


async def make(
    kind: str, strategy: str, servers: dict[str, typing.Any], instance: int, race: bool = False
) -> tuple[h.Hit, h.Close]:
    rates = [Rate(32, Duration.HOUR)] if race else [Rate(100, Duration.SECOND)]
    client = None
    if kind == "memory":
        clock = _monotonic_ms
        if strategy in _LOG:

            def build(name: str) -> typing.Any:
                return P.InMemoryBucket(rates, algorithm=_LOG[strategy]())
        else:

            def build(name: str) -> typing.Any:
                return P.StateBucket(rates, algorithm=_STATE[strategy]())
    else:
        from redis.asyncio import Redis

        clock = _wall_ms
        client = Redis(host=servers["redis_host"], port=servers["redis_port"])
        if strategy in _LOG:
            probe = await P.RedisBucket.init(rates, client, "bench:probe", _LOG[strategy]())
            sha = probe.script_hash

            def build(name: str) -> typing.Any:
                return P.RedisBucket(rates, client, f"bench:{name}", sha, _LOG[strategy]())
        else:

            def build(name: str) -> typing.Any:
                store = P.RedisStateStore(client, f"bench:{name}")
                return P.StateBucket(rates, algorithm=_STATE[strategy](), store=store)

    limiter = Limiter(PerKeyFactory(build, clock))

    async def hit(key: str) -> bool:
        return bool(await limiter.try_acquire_async(key, blocking=False))

    async def close() -> None:
        if client is not None:
            await client.aclose()

    return hit, close


def supported(kind: str) -> list[str]:
    if kind == "memcached":
        return []
    return ["fw", "swl", "tb", "gcra"]


async def main(args: dict[str, typing.Any]) -> dict[str, typing.Any]:
    out = await h.run_sections(args, make, supported)
    out["version"] = P.__version__
    return out


if __name__ == "__main__":
    h.run_script(main)
