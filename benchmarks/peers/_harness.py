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
import socket
import statistics
import sys
import time
import typing

Hit = typing.Callable[[str], typing.Awaitable[bool]]
Close = typing.Callable[[], typing.Awaitable[None]]
Make = typing.Callable[..., typing.Awaitable[tuple[Hit, Close]]]

#: The strategy names used across the suite (traffik's short names).
ALL_STRATEGIES = ("fw", "swl", "swc", "tb", "tbd", "lb", "lbq", "gcra")
KEYSPACES = {"hot": 1, "10k": 10_000}
CONCURRENCY = 64


# --- tiny stats clients (no client library needed) -----------------------------------


def _redis_info(host: str, port: int) -> dict[str, int]:
    """Sum of ``cmdstat_*`` calls (INFO itself excluded) and ``total_reads_processed``."""
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(b"*2\r\n$4\r\nINFO\r\n$3\r\nall\r\n")
        stream = sock.makefile("rb")
        header = stream.readline()
        size = int(header[1:-2])
        body = stream.read(size + 2).decode()
    calls = 0
    reads = 0
    for line in body.splitlines():
        if line.startswith("cmdstat_"):
            name, _, rest = line.partition(":")
            if name in ("cmdstat_info", "cmdstat_config"):
                continue
            for part in rest.split(","):
                if part.startswith("calls="):
                    calls += int(part[6:])
        elif line.startswith("total_reads_processed:"):
            reads = int(line.split(":", 1)[1])
    return {"commands": calls, "reads": reads}


def _memcached_stats(host: str, port: int) -> dict[str, int]:
    """Storage operations counted by ``stats`` (gets count once per key)."""
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(b"stats\r\n")
        stream = sock.makefile("rb")
        stats: dict[str, str] = {}
        while True:
            line = stream.readline().decode().strip()
            if not line or line == "END":
                break
            parts = line.split(" ")
            if len(parts) >= 3:
                stats[parts[1]] = parts[2]
    names = (
        "cmd_get", "cmd_set", "cmd_touch", "incr_hits", "incr_misses",
        "decr_hits", "decr_misses", "delete_hits", "delete_misses",
    )  # fmt: skip
    return {"ops": sum(int(stats.get(n, 0)) for n in names)}


def server_counters(backend: str, servers: dict[str, typing.Any]) -> dict[str, int]:
    """Counters of the server behind ``backend`` (empty for in-memory)."""
    if backend == "redis":
        return _redis_info(servers["redis_host"], servers["redis_port"])
    if backend == "memcached":
        return _memcached_stats(servers["memcached_host"], servers["memcached_port"])
    return {}


def flush(backend: str, servers: dict[str, typing.Any]) -> None:
    """Empty the server so that one case cannot slow down the next."""
    if backend == "redis":
        with socket.create_connection(
            (servers["redis_host"], servers["redis_port"]), timeout=5
        ) as s:
            s.sendall(b"*1\r\n$8\r\nFLUSHALL\r\n")
            s.recv(64)
    elif backend == "memcached":
        with socket.create_connection(
            (servers["memcached_host"], servers["memcached_port"]), timeout=5
        ) as s:
            s.sendall(b"flush_all\r\n")
            s.recv(64)


# --- bounds ---------------------------------------------------------------------------------

T = typing.TypeVar("T")


class CaseTimeout(Exception):
    """A case did not finish in its time bound (the implementation hung or crawled)."""


def case_timeout(cfg: dict[str, typing.Any]) -> float:
    """Seconds one case may take: its loops' budgets plus generous slack."""
    return 20.0 + 4 * (cfg["warm_s"] + cfg["seconds"])


async def bounded(coro: typing.Awaitable[T], seconds: float) -> T:
    """Await ``coro`` for at most ``seconds``; raise CaseTimeout after that."""
    try:
        return await asyncio.wait_for(coro, seconds)
    except asyncio.TimeoutError:
        raise CaseTimeout(f"no result after {seconds:.0f} s (hung)") from None


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


# --- end-to-end (ASGI, in-process) --------------------------------------------------------


async def lifespan_start(
    app: typing.Any,
) -> tuple[dict[str, typing.Any], typing.Callable[[], typing.Awaitable[None]]]:
    """Run the app's lifespan startup; return its state and a shutdown coroutine function."""
    state: dict[str, typing.Any] = {}
    inbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, typing.Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}

    async def receive() -> dict[str, str]:
        return await inbox.get()

    async def send(message: dict[str, typing.Any]) -> None:
        await outbox.put(message)

    task = asyncio.ensure_future(app(scope, receive, send))
    await inbox.put({"type": "lifespan.startup"})
    message = await asyncio.wait_for(outbox.get(), 10)
    if message["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"lifespan startup failed: {message}")

    async def shutdown() -> None:
        await inbox.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(outbox.get(), 10)
        await asyncio.wait_for(task, 10)

    return state, shutdown


def make_caller(
    app: typing.Any, state: dict[str, typing.Any], path: str = "/", client: str = "127.0.0.1"
) -> typing.Callable[[], typing.Awaitable[int]]:
    """A coroutine function that sends one GET ``path`` to ``app`` and returns the status."""
    base = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench.local"), (b"user-agent", b"bench")],
        "client": (client, 40000),
        "server": ("bench.local", 80),
    }
    request = {"type": "http.request", "body": b"", "more_body": False}

    async def receive() -> dict[str, typing.Any]:
        return request

    async def call() -> int:
        status = 0

        async def send(message: dict[str, typing.Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        scope = dict(base)
        scope["state"] = dict(state)
        await app(scope, receive, send)
        return status

    return call


async def time_requests(
    call: typing.Callable[[], typing.Awaitable[int]],
    cfg: dict[str, typing.Any],
    backend: str = "memory",
    servers: dict[str, typing.Any] | None = None,
) -> dict[str, typing.Any]:
    """Microseconds per request, sequentially, bounded by count and time (+ Redis RTT/request)."""
    for _ in range(50):
        await call()
    before = server_counters(backend, servers or {}) if backend == "redis" else {}
    ops, budget = cfg["ops"], cfg["seconds"]
    statuses: dict[int, int] = {}
    start = time.perf_counter()
    deadline = start + budget
    n = 0
    while n < ops:
        for _ in range(32):
            s = await call()
            statuses[s] = statuses.get(s, 0) + 1
            n += 1
        if time.perf_counter() > deadline:
            break
    elapsed = time.perf_counter() - start
    out: dict[str, typing.Any] = {
        "us": elapsed / n * 1e6,
        "n": n,
        "statuses": {str(k): v for k, v in statuses.items()},
    }
    if before:
        after = server_counters(backend, servers or {})
        out["rtt"] = (after["reads"] - before["reads"] - 1) / n
        out["commands"] = (after["commands"] - before["commands"]) / n
    return out


#: Rounds of section C: every app is timed once per round, apps interleaved, so that
#: a change of machine load hits the bare and the throttled app alike.
C_ROUNDS = 3


async def time_apps(
    built: dict[str, typing.Any],
    cfg: dict[str, typing.Any],
    backend: str,
    servers: dict[str, typing.Any],
    errors: list[str],
) -> dict[str, dict[str, typing.Any]]:
    """Section C for a set of apps: median µs/request over interleaved rounds."""
    started: dict[str, tuple[typing.Callable[[], typing.Awaitable[int]], typing.Any]] = {}
    for name, app in built.items():
        try:
            state, shutdown = await lifespan_start(app)
            started[name] = (make_caller(app, state), shutdown)
        except Exception as exc:
            errors.append(f"C {backend}/{name}: {type(exc).__name__}: {exc}")
    slices: dict[str, list[dict[str, typing.Any]]] = {name: [] for name in started}
    slice_cfg = {**cfg, "seconds": cfg["seconds"] / C_ROUNDS, "ops": max(1, cfg["ops"] // C_ROUNDS)}
    try:
        flush(backend, servers)
        gc.collect()
        for _ in range(C_ROUNDS):
            for name, (call, _) in started.items():
                if name not in slices:
                    continue
                try:
                    slices[name].append(
                        await bounded(
                            time_requests(call, slice_cfg, backend, servers), case_timeout(cfg)
                        )
                    )
                except Exception as exc:
                    errors.append(f"C {backend}/{name}: {type(exc).__name__}: {exc}")
                    del slices[name]
    finally:
        for _, shutdown in started.values():
            try:
                await shutdown()
            except Exception as exc:
                errors.append(f"C {backend} shutdown: {type(exc).__name__}: {exc}")
    out: dict[str, dict[str, typing.Any]] = {}
    for name, rows in slices.items():
        statuses: dict[str, int] = {}
        for r in rows:
            for k, v in r["statuses"].items():
                statuses[k] = statuses.get(k, 0) + v
        row: dict[str, typing.Any] = {
            "us": statistics.median(r["us"] for r in rows),
            "n": sum(r["n"] for r in rows),
            "statuses": statuses,
        }
        if rows and "rtt" in rows[0]:
            row["rtt"] = statistics.median(r["rtt"] for r in rows)
            row["commands"] = statistics.median(r["commands"] for r in rows)
        out[name] = row
    return out


async def race_requests(calls: list[typing.Callable[[], typing.Awaitable[int]]]) -> int:
    """Section D through an app: CONCURRENCY concurrent requests; how many got a 2xx."""
    results = await asyncio.gather(*(calls[i % len(calls)]() for i in range(CONCURRENCY)))
    return sum(1 for s in results if 200 <= s < 300)


async def _bounded_race(*args: typing.Any) -> dict[str, typing.Any]:
    return await bounded(_race_through_apps(*args), 60.0)


async def _race_through_apps(
    race_apps: typing.Callable[..., typing.Awaitable[list[typing.Any]]],
    backend: str,
    strategy: str,
    instances: int,
    servers: dict[str, typing.Any],
    trials: int,
) -> dict[str, typing.Any]:
    """Section D for HTTP-only peers: the race runs through ``instances`` apps (one storage)."""
    counts = []
    for trial in range(trials):
        flush(backend, servers)
        # Fresh apps and a fresh client per trial (some peers share one bucket per app).
        built = await race_apps(backend, strategy, servers, instances)
        started = [await lifespan_start(app) for app in built]
        try:
            client = f"127.0.0.{trial + 2}"
            calls = [
                make_caller(app, state, client=client)
                for app, (state, _) in zip(built, started, strict=True)
            ]
            counts.append(await race_requests(calls))
        finally:
            for _, shutdown in started:
                await shutdown()
    return {"allowed": counts, "errors": [0] * len(counts)}


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
    if make is not None and "A" in sections:
        for backend in backends:
            for strategy in supported(backend):
                for keyspace in KEYSPACES:
                    try:
                        r = await bounded(
                            case_a(make, backend, strategy, keyspace, servers, cfg),
                            case_timeout(cfg),
                        )
                        out["A"].append(
                            {"backend": backend, "strategy": strategy, "keyspace": keyspace, **r}
                        )
                    except Exception as exc:
                        out["errors"].append(
                            f"A {backend}/{strategy}/{keyspace}: {type(exc).__name__}: {exc}"
                        )
    if make is not None and "D" in sections:
        for backend in backends:
            for strategy in supported(backend):
                for instances in (1, 2):
                    if backend == "memory" and instances == 2:
                        continue
                    try:
                        r = await bounded(
                            case_d(make, backend, strategy, instances, servers, cfg["trials"]),
                            case_timeout(cfg),
                        )
                        out["D"].append(
                            {"backend": backend, "strategy": strategy, "instances": instances, **r}
                        )
                    except Exception as exc:
                        out["errors"].append(
                            f"D {backend}/{strategy}/{instances}: {type(exc).__name__}: {exc}"
                        )
    if race_apps is not None and "D" in sections:
        for backend in backends:
            for strategy in supported(backend):
                for instances in (1, 2):
                    if backend == "memory" and instances == 2:
                        continue
                    try:
                        r = await _bounded_race(
                            race_apps, backend, strategy, instances, servers, cfg["trials"]
                        )
                        out["D"].append(
                            {"backend": backend, "strategy": strategy, "instances": instances, **r}
                        )
                    except Exception as exc:
                        out["errors"].append(
                            f"D {backend}/{strategy}/{instances}: {type(exc).__name__}: {exc}"
                        )
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
