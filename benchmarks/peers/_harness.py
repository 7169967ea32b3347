"""The measurement harness shared by every implementation (standard library only).

The driver imports it in-process for traffik and the floors; each peer script
imports it inside the peer's own virtual environment. An implementation is an
*adapter*: ``async make(backend, strategy, servers, instance) -> (hit, close)``
where ``await hit(key)`` makes one decision and returns True if it was admitted.
Every loop here is bounded by a count and by a time budget.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import sys
import time
import typing

from _asgi import (
    _bounded_race,
    time_apps,
)
from _stats import (
    CONCURRENCY,
    bounded,
    case_timeout,
    flush,
    server_counters,
)

Hit = typing.Callable[[str], typing.Awaitable[bool]]
Close = typing.Callable[[], typing.Awaitable[None]]
Make = typing.Callable[..., typing.Awaitable[tuple[Hit, Close]]]

#: The strategy names used across the suite (traffik's short names).
ALL_STRATEGIES = ("fw", "swl", "swc", "tb", "tbd", "lb", "lbq", "gcra")
KEYSPACES = {"hot": 1, "10k": 10_000}


# --- measurements -----------------------------------------------------------------------


def _keys(keyspace: str) -> list[str]:
    n = KEYSPACES[keyspace]
    return ["hot"] if n == 1 else [f"client-{i}" for i in range(n)]


async def _warm(hit: Hit, keys: list[str], seconds: float, workers: int = 1) -> int:
    """One decision per key (bounded by ``seconds``); returns how many keys exist."""
    deadline = time.perf_counter() + seconds
    nkeys = len(keys)
    done = [0] * workers

    async def worker(w: int) -> None:
        for i in range(w, nkeys, workers):
            try:
                await hit(keys[i])
            except Exception:
                pass  # a peer failing under load is measured elsewhere
            done[w] += 1
            if done[w] % 16 == 0 and time.perf_counter() > deadline:
                return

    await asyncio.gather(*(worker(w) for w in range(workers)))
    # Every key below min(done) * workers was touched (workers walk strided slices).
    return max(1, min(nkeys, min(done[: min(workers, nkeys)]) * workers))


async def case_a(
    make: Make,
    backend: str,
    strategy: str,
    keyspace: str,
    servers: dict[str, typing.Any],
    cfg: dict[str, typing.Any],
) -> dict[str, typing.Any]:
    """Section A for one (backend, strategy, keyspace): rates, latency, server ops."""
    flush(backend, servers)
    case_start = time.perf_counter()
    hit, close = await make(backend, strategy, servers, 0)
    try:
        keys = _keys(keyspace)
        remote = backend != "memory"
        live = await _warm(hit, keys, cfg["warm_s"], CONCURRENCY if remote else 1)
        keys = keys[:live]
        nkeys = len(keys)
        ops, budget = (cfg["ops"] if remote else cfg["ops_mem"]), cfg["seconds"]
        result: dict[str, typing.Any] = {"keys": nkeys}
        before = server_counters(backend, servers)
        lat: list[int] = []
        clock = time.perf_counter_ns
        start = clock()
        deadline = start + int(budget * 1e9)
        n = 0
        allowed = 0
        if remote:
            while n < ops:
                t0 = clock()
                allowed += await hit(keys[n % nkeys])
                t1 = clock()
                lat.append(t1 - t0)
                n += 1
                if t1 > deadline:
                    break
        else:
            while n < ops:
                for _ in range(64):
                    allowed += await hit(keys[n % nkeys])
                    n += 1
                if clock() > deadline:
                    break
        elapsed = (clock() - start) / 1e9
        after = server_counters(backend, servers)
        result.update(ops=n, rate=n / elapsed, allowed=allowed)
        if remote:
            lat.sort()
            result["p50_us"] = lat[len(lat) // 2] / 1000
            result["p99_us"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1000
            if backend == "redis":
                # The closing INFO's own read is in ``after``.
                result["rtt"] = (after["reads"] - before["reads"] - 1) / n
                result["commands"] = (after["commands"] - before["commands"]) / n
                # Time the server spent running scripts, per decision (None: no scripts).
                result["server_us"] = (after["usec"] - before["usec"]) / n or None
            else:
                result["commands"] = (after["ops"] - before["ops"]) / n
            try:
                result["rate64"] = await _concurrent(hit, keys, cfg)
            except Exception as exc:  # a peer failing under concurrency is a finding
                result["rate64_error"] = f"{type(exc).__name__}: {exc}"[:160]
        result["case_s"] = time.perf_counter() - case_start
        return result
    finally:
        await bounded(close(), 10.0)


async def _concurrent(hit: Hit, keys: list[str], cfg: dict[str, typing.Any]) -> float:
    """Decisions per second with CONCURRENCY coroutines sharing one client (time-bounded)."""
    per_worker = max(1, cfg["ops"] // CONCURRENCY)
    budget = cfg["seconds"]
    deadline = time.perf_counter() + budget
    nkeys = len(keys)
    counts = [0] * CONCURRENCY

    async def worker(w: int) -> None:
        i = w
        for _ in range(per_worker):
            await hit(keys[i % nkeys])
            i += CONCURRENCY
            counts[w] += 1
            if time.perf_counter() > deadline:
                return

    start = time.perf_counter()
    tasks = [asyncio.ensure_future(worker(w)) for w in range(CONCURRENCY)]
    # A peer whose decisions block (lock waits) is cut off shortly after the budget.
    done, pending = await asyncio.wait(tasks, timeout=budget + 1.0)
    elapsed = time.perf_counter() - start
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=5.0)
    for task in done:
        if task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    return sum(counts) / elapsed


async def case_d(
    make: Make,
    backend: str,
    strategy: str,
    instances: int,
    servers: dict[str, typing.Any],
    trials: int,
) -> dict[str, typing.Any]:
    """Section D: limit 32, 64 concurrent hits over ``instances`` clients; admitted counts."""
    flush(backend, servers)
    case_start = time.perf_counter()
    made = [await make(backend, strategy, servers, i, race=True) for i in range(instances)]
    counts: list[int] = []
    errors: list[int] = []
    try:
        for trial in range(trials):
            key = f"race-{trial}-{time.time_ns()}"
            results = await asyncio.gather(
                *(made[i % instances][0](key) for i in range(CONCURRENCY)), return_exceptions=True
            )
            counts.append(sum(1 for r in results if r is True))
            errors.append(sum(1 for r in results if isinstance(r, BaseException)))
    finally:
        for _, close in made:
            await bounded(close(), 10.0)
    return {"allowed": counts, "errors": errors, "case_s": time.perf_counter() - case_start}


# --- memory ---------------------------------------------------------------------------------


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; tracemalloc peak elsewhere is not used)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # pragma: no cover - not Linux
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def case_e(hit: Hit, n: int, seconds: float) -> dict[str, typing.Any]:
    """Section E: RSS growth after ``n`` distinct keys (bounded by time; extrapolated)."""
    for i in range(256):  # warm caches, interned strings, lazily built structures
        await hit(f"warm-{i}")
    gc.collect()
    before = rss_bytes()
    deadline = time.perf_counter() + seconds
    done = 0
    keys = [f"client-{i:07d}" for i in range(n)]
    base = rss_bytes()  # the key strings themselves are not charged to the limiter
    for key in keys:
        await hit(key)
        done += 1
        if done % 256 == 0 and time.perf_counter() > deadline:
            break
    gc.collect()
    after = rss_bytes()
    grown = after - base
    del before
    return {
        "keys": done,
        "bytes_per_key": grown / done,
        "mb_per_100k": grown / done * 100_000 / 2**20,
    }


# --- script entry ------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    """The median, for the driver's repetitions."""
    return statistics.median(values)


def run_script(
    main: typing.Callable[[dict[str, typing.Any]], typing.Awaitable[dict[str, typing.Any]]],
) -> None:
    """Peer script entry: JSON args in argv[1], one JSON object on the last stdout line."""
    args = json.loads(sys.argv[1])
    result = asyncio.run(main(args))
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()


async def run_sections(
    args: dict[str, typing.Any],
    make: Make | None,
    supported: typing.Callable[[str], typing.Sequence[str]],
    apps: typing.Callable[..., typing.Awaitable[dict[str, typing.Any]]] | None = None,
    race_apps: typing.Callable[..., typing.Awaitable[list[typing.Any]]] | None = None,
) -> dict[str, typing.Any]:
    """The common body of a peer script: run the requested sections, collect results."""
    out: dict[str, typing.Any] = {"A": [], "C": {}, "D": [], "E": {}, "errors": []}
    servers = args["servers"]
    cfg = args["cfg"]
    sections = args["sections"]
    backends = args["backends"]

    async def collect(section: str, cell: dict[str, typing.Any], case: typing.Any) -> None:
        """Run one case; its row goes to ``out[section]``, or its failure to the errors."""
        try:
            out[section].append({**cell, **await case})
        except Exception as exc:
            label = "/".join(str(value) for value in cell.values())
            out["errors"].append(f"{section} {label}: {type(exc).__name__}: {exc}")

    def race_cells() -> typing.Iterator[tuple[str, str, int]]:
        for backend in backends:
            for strategy in supported(backend):
                for instances in (1, 2) if backend != "memory" else (1,):
                    yield backend, strategy, instances

    if make is not None and "A" in sections:
        for backend in backends:
            for strategy in supported(backend):
                for keyspace in KEYSPACES:
                    case = case_a(make, backend, strategy, keyspace, servers, cfg)
                    cell = {"backend": backend, "strategy": strategy, "keyspace": keyspace}
                    await collect("A", cell, bounded(case, case_timeout(cfg)))
    if make is not None and "D" in sections:
        for backend, strategy, instances in race_cells():
            cell = {"backend": backend, "strategy": strategy, "instances": instances}
            case = case_d(make, backend, strategy, instances, servers, cfg["trials"])
            await collect("D", cell, bounded(case, case_timeout(cfg)))
    if race_apps is not None and "D" in sections:
        for backend, strategy, instances in race_cells():
            cell = {"backend": backend, "strategy": strategy, "instances": instances}
            race = _bounded_race(race_apps, backend, strategy, instances, servers, cfg["trials"])
            await collect("D", cell, race)
    if apps is not None and "C" in sections:
        for backend in backends:
            if backend == "memcached":
                continue
            try:
                built = await apps(backend, servers)
            except Exception as exc:
                out["errors"].append(f"C {backend}: {type(exc).__name__}: {exc}")
                continue
            for name, row in (await time_apps(built, cfg, backend, servers, out["errors"])).items():
                out["C"][f"{backend}/{name}"] = row
    if make is not None and "E" in sections and "memory" in backends:
        for strategy in args.get("e_strategies", ["fw"]):
            if strategy not in supported("memory"):
                continue
            hit, close = await make("memory", strategy, servers, 0)
            try:
                out["E"][strategy] = await case_e(hit, cfg["e_keys"], cfg["e_seconds"])
            except Exception as exc:
                out["errors"].append(f"E {strategy}: {type(exc).__name__}: {exc}")
            finally:
                await close()
    return out
