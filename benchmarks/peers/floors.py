"""Floors: the least work a fixed-window decision can cost on each backend.

- memory: a plain dict counter (window start, count), no expiry, no bound;
- redis: one EVALSHA of a 3-line INCRBY/PEXPIRE script through redis.asyncio;
- memcached: one aiomcache ``incr`` (``add`` when the key is new).

Run in-process for section A, and as a script for section E (hatch env).
"""

from __future__ import annotations

import time
import typing

import _harness as h

FW_LUA = """
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if n == tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return n
"""

LIMIT, WINDOW_MS = 100, 1000


async def make(
    kind: str, strategy: str, servers: dict[str, typing.Any], instance: int, race: bool = False
) -> tuple[h.Hit, h.Close]:
    limit = 32 if race else LIMIT
    if kind == "memory":
        store: dict[str, list[int]] = {}
        monotonic_ns = time.monotonic_ns

        async def hit(key: str) -> bool:
            now = monotonic_ns() // 1_000_000
            start = now - now % WINDOW_MS
            entry = store.get(key)
            if entry is None or entry[0] != start:
                store[key] = [start, 1]
                return True
            if entry[1] < limit:
                entry[1] += 1
                return True
            return False

        async def close() -> None:
            store.clear()

        return hit, close
    if kind == "redis":
        from redis.asyncio import Redis

        client = Redis(host=servers["redis_host"], port=servers["redis_port"])
        sha = await client.script_load(FW_LUA)
        evalsha = client.evalsha

        async def rhit(key: str) -> bool:
            return int(await evalsha(sha, 1, key, 1, WINDOW_MS)) <= limit  # type: ignore[misc]

        async def rclose() -> None:
            await client.aclose()

        return rhit, rclose
    import aiomcache

    mc = aiomcache.Client(servers["memcached_host"], servers["memcached_port"], pool_size=64)

    async def mhit(key: str) -> bool:
        raw = key.encode()
        try:
            n = await mc.incr(raw)
        except aiomcache.exceptions.ClientException:
            if await mc.add(raw, b"1", exptime=1):
                return True
            n = await mc.incr(raw)
        return (n or 0) <= limit

    async def mclose() -> None:
        await mc.close()

    return mhit, mclose


def supported(kind: str) -> list[str]:
    return ["fw"]


async def main(args: dict[str, typing.Any]) -> dict[str, typing.Any]:
    out = await h.run_sections(args, make, supported)
    out["version"] = "-"
    return out


if __name__ == "__main__":
    h.run_script(main)
