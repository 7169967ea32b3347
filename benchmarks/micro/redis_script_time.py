"""Server time per call of one Redis strategy script, at a git revision and as checked out.

    hatch run python benchmarks/micro/redis_script_time.py [--before REV] [--script swl] [-n 2000]

Not a test: a script. Starts a private redis-server, loads the script (prelude included)
as it was at ``--before`` and as it is in the working tree, fills one hot key per
version (limit 100 per second, so a sliding log holds up to 100 entries), then runs
5 blocks of ``n`` sequential EVALSHA per version, alternating versions, and prints the
median of INFO commandstats ``usec_per_call`` over the blocks (CONFIG RESETSTAT before
each): the server's own time, which round trips and client load do not blur.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
from pathlib import Path

import redis.asyncio as aioredis

from traffik.testing.servers import RedisServer, redis_command

SCRIPTS = "packages/traffik-redis/src/traffik/redis/scripts"
ROOT = Path(__file__).resolve().parents[2]
BLOCKS = 5


def _text(rev: str | None, name: str) -> str:
    if rev is None:
        return (ROOT / SCRIPTS / f"{name}.lua").read_text()
    return subprocess.run(
        ["git", "show", f"{rev}:{SCRIPTS}/{name}.lua"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip


def _usec_per_call(host: str, port: int) -> float:
    info = redis_command(host, port, "INFO", "commandstats")
    text = info.decode() if isinstance(info, bytes) else str(info)
    for line in text.splitlines():
        if line.startswith("cmdstat_evalsha:"):
            fields = dict(p.split("=") for p in line.split(":", 1)[1].split(","))
            return float(fields["usec_per_call"])
    raise RuntimeError("no EVALSHA in INFO commandstats")


async def main(before: str, script: str, n: int) -> None:
    with RedisServer() as server:
        client = aioredis.Redis.from_url(server.url)
        try:
            shas = {}
            for label, rev in ((f"at {before}", before), ("working tree", None)):
                body = _text(rev, "_prelude") + "\n" + _text(rev, script)
                shas[label] = await client.script_load(body)
            args = ("", 100, 1000, 1, 100)  # server clock, limit, window ms, cost, capacity
            for label, sha in shas.items():
                for _ in range(2 * n):
                    await client.evalsha(sha, 1, f"k:{label}", *args)  # type: ignore[misc]
            times: dict[str, list[float]] = {label: [] for label in shas}
            for _ in range(BLOCKS):
                for label, sha in shas.items():
                    redis_command(server.host, server.port, "CONFIG", "RESETSTAT")
                    for _ in range(n):
                        await client.evalsha(sha, 1, f"k:{label}", *args)  # type: ignore[misc]
                    times[label].append(_usec_per_call(server.host, server.port))
            for label, values in times.items():
                print(f"{script} {label:>22}: {statistics.median(values):6.2f} usec/call "
                      f"(blocks: {', '.join(f'{v:.1f}' for v in values)})")  # fmt: skip
        finally:
            await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="161885b", help="git revision to compare with")
    parser.add_argument("--script", default="swl", help="strategy script name (fw, swl, ...)")
    parser.add_argument("-n", type=int, default=2000, help="calls per block")
    ns = parser.parse_args()
    asyncio.run(main(ns.before, ns.script, ns.n))
