"""What traffik.metrics costs per throttled call, instrumented against not (a script).

    hatch run python benchmarks/micro/metrics_overhead.py [-n 20000] [--runs 7] [--no-redis]

For each backend (in-memory; Redis on a private redis-server, which goes through the
failure guard and so also records the call-duration histogram) it times ``n``
sequential ``await throttle(request)`` calls three ways, interleaved in every run:

- ``off``: never instrumented in this run's state (no event subscriber, no call
  observer): what every app pays that does not call ``instrument()``;
- ``on``: ``metrics.instrument()`` on an SDK ``MeterProvider`` with an in-memory reader
  (the SDK aggregates at record time, whichever exporter reads it later);
- ``off again``: after ``uninstrument()``, to show nothing stays hooked.

It prints the median microseconds per call of each, and ``on / off``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from starlette.requests import Request

from traffik import metrics
from traffik.backends.base import ThrottleBackend
from traffik.backends.inmemory import InMemoryBackend
from traffik.throttles import HTTPThrottle

RATE = "1000000000/h"  # every call admitted: the common path


async def _per_call_us(throttle: HTTPThrottle, n: int) -> float:
    request = Request(
        {"type": "http", "method": "GET", "path": "/", "headers": [], "client": ("10.1.1.1", 1)}
    )
    started = time.perf_counter()
    for _ in range(n):
        await throttle(request)
    return (time.perf_counter() - started) / n * 1e6


async def _measure(backend: ThrottleBackend, n: int, runs: int) -> dict[str, float]:  # type: ignore[type-arg]
    await backend.initialize()
    throttle = HTTPThrottle("bench", RATE, backend=backend)
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    await _per_call_us(throttle, n // 10)  # warm up
    times: dict[str, list[float]] = {"off": [], "on": [], "off again": []}
    for _ in range(runs):
        times["off"].append(await _per_call_us(throttle, n))
        metrics.instrument(meter_provider=provider)
        times["on"].append(await _per_call_us(throttle, n))
        metrics.uninstrument()
        times["off again"].append(await _per_call_us(throttle, n))
    await backend.close()
    provider.shutdown()
    return {mode: statistics.median(values) for mode, values in times.items()}


def _report(name: str, medians: dict[str, float]) -> None:
    cells = "  ".join(f"{mode} {us:7.2f} us" for mode, us in medians.items())
    print(f"{name:10} {cells}  on/off {medians['on'] / medians['off']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20_000, help="calls per timing")
    parser.add_argument("--runs", type=int, default=7, help="repetitions (medians)")
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis backend")
    options = parser.parse_args()
    print(f"median of {options.runs} runs of {options.n} sequential calls, per call")
    _report("in-memory", asyncio.run(_measure(InMemoryBackend(), options.n, options.runs)))
    if not options.no_redis:
        from traffik.redis import RedisBackend
        from traffik.testing.servers import RedisServer

        with RedisServer() as server:
            backend = RedisBackend(server.url, namespace="bench")
            n = max(1, options.n // 4)
            _report("redis", asyncio.run(_measure(backend, n, options.runs)))


if __name__ == "__main__":
    main()
