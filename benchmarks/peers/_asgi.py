"""Section C (and the race through apps of section D): ASGI apps called in-process.

The scope, receive and send are built here, so that no HTTP client or server adds
its own cost to the measurement. Standard library only.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
import typing

from _stats import CONCURRENCY, bounded, case_timeout, flush, server_counters


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
