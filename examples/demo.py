"""``hatch run demo``: drive scripted bursts at the example app and show what each strategy did.

By default everything runs in-process on an in-memory backend whose clock is
virtual, so the demo is instant and prints the same thing every time. Options:

- ``--serve``: serve the example app on http://127.0.0.1:8000 (real clock) for curl.
- ``--backend redis://HOST:PORT/DB`` (or ``memcached://HOST:PORT``): run the same
  bursts against that server, in real time (about half a minute).
"""

from __future__ import annotations

import argparse
import sys
import time
import typing
import urllib.parse
from dataclasses import dataclass, field

from starlette.testclient import TestClient

from examples.app import RATE, STRATEGIES, create_app
from traffik import InMemoryBackend, ThrottleBackend

#: Requests per burst and the gap between them: 30 requests at 10 per second,
#: twice the 5-per-second rate of the strategy routes.
BURST = 30
GAP_MS = 100
CLIENT = ("203.0.113.7", 50000)


class VirtualClock:
    """A millisecond clock that only moves when the demo says so."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self.now = start_ms

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


@dataclass
class Burst:
    """What one burst against one route gave."""

    route: str
    gap_ms: int = GAP_MS
    statuses: list[int] = field(default_factory=list)
    first_retry_after: str = "-"
    last_policy: str = ""
    last_fields: str = ""

    @property
    def allowed(self) -> int:
        return sum(1 for status in self.statuses if status < 400)

    @property
    def throttled(self) -> int:
        return sum(1 for status in self.statuses if status == 429)

    def timeline(self) -> str:
        """One character per request (█ admitted, · refused), a bar every second."""
        marks = []
        per_second = max(1, 1000 // self.gap_ms)
        for i, status in enumerate(self.statuses):
            if i and i % per_second == 0:
                marks.append("|")
            marks.append("█" if status < 400 else "·")
        return "".join(marks)


def _make_backend(
    url: str | None, clock: VirtualClock | None
) -> ThrottleBackend[typing.Any, typing.Any]:
    if url is None:
        return InMemoryBackend(namespace="demo", clock=clock)
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme in ("redis", "rediss", "unix"):
        from traffik.redis import RedisBackend

        return RedisBackend(url, namespace=f"traffik-demo-{int(time.time())}", persistent=False)
    if parsed.scheme == "memcached":
        from traffik.memcached import MemcachedBackend

        return MemcachedBackend(
            host=parsed.hostname or "localhost",
            port=parsed.port or 11211,
            namespace=f"traffik-demo-{int(time.time())}",
        )
    raise SystemExit(f"--backend must be a redis://, rediss:// or memcached:// URL, got {url!r}.")


def _progress(done: int, total: int, label: str) -> None:
    width = 24
    filled = width * done // total
    bar = "#" * filled + "-" * (width - filled)
    end = "\n" if done == total else ""
    stream = sys.stderr
    if stream.isatty():
        stream.write(f"\r[{bar}] {done}/{total} {label:<32}{end}")
    elif done == total:
        stream.write(f"[{bar}] {done}/{total} routes driven\n")
    stream.flush()


def _run_burst(
    client: TestClient, route: str, clock: VirtualClock | None, count: int, gap_ms: int
) -> Burst:
    burst = Burst(route, gap_ms=gap_ms)
    for _ in range(count):
        response = client.get(route)
        burst.statuses.append(response.status_code)
        if response.status_code == 429 and burst.first_retry_after == "-":
            burst.first_retry_after = response.headers.get("retry-after", "-") + " s"
        burst.last_policy = response.headers.get("ratelimit-policy", "")
        burst.last_fields = response.headers.get("ratelimit", "")
        if clock is not None:
            clock.advance(gap_ms)
        else:
            time.sleep(gap_ms / 1000)
    return burst


def _websocket_demo(client: TestClient) -> list[str]:
    replies = []
    with client.websocket_connect("/ws") as ws:
        for i in range(5):
            ws.send_json({"message": i})
            reply = ws.receive_json()
            replies.append(reply["status"])
        ws.send_json("bye")
        ws.receive_json()
    return replies


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def run(url: str | None, count: int = BURST, gap_ms: int = GAP_MS) -> int:
    """Drive every burst (``count`` requests, ``gap_ms`` apart) and print the report."""
    clock = VirtualClock() if url is None else None
    backend = _make_backend(url, clock)
    app = create_app(backend)
    routes = [f"/strategies/{name}" for name in STRATEGIES] + [
        "/reports",
        "/starlette/items/1",
        "/area/home",
    ]
    bursts: list[Burst] = []
    where = "in memory, virtual clock" if url is None else f"{url}, real time"
    print(f"traffik demo: {count} requests per route, one every {gap_ms} ms ({where})\n")
    with TestClient(app, client=CLIENT) as client:
        for i, route in enumerate(routes, 1):
            _progress(i - 1, len(routes), route)
            bursts.append(_run_burst(client, route, clock, count, gap_ms))
            _progress(i, len(routes), route)
        ws_replies = _websocket_demo(client)

    print(
        f"\nStrategy routes apply {RATE}; /reports costs 2 of 10/s;"
        "\nand /starlette/items/* 3/s; /area/* 4/s.\n"
    )
    rows = [
        [
            b.route,
            str(b.allowed),
            str(b.throttled),
            b.first_retry_after,
            b.last_fields,
        ]
        for b in bursts
    ]
    print(
        _table(
            rows,
            [
                "route",
                "200",
                "429",
                "first Retry-After",
                "RateLimit (last)",
            ],
        )
    )
    print("\nTimeline (█ admitted, · refused, | = one second):\n")
    width = max(len(b.route) for b in bursts)
    for b in bursts:
        print(f"  {b.route.ljust(width)}  {b.timeline()}")
    print(f"\nWebSocket /ws, 5 messages against 3/s: {', '.join(ws_replies)}")
    print(
        "\nServe the same app with: hatch run demo --serve"
        "\n(then curl -i http://127.0.0.1:8000/strategies/gcra)"
    )
    bad = [b.route for b in bursts if b.allowed == 0 or b.throttled == 0]
    if bad and count * gap_ms >= BURST * GAP_MS:
        # The default script is built so that every route both admits and refuses.
        print(
            f"\nUnexpected: every route should admit some and refuse some requests: {bad}",
            file=sys.stderr,
        )
        return 1
    return 0


def serve(url: str | None, host: str, port: int) -> int:
    """Serve the example app until interrupted."""
    import uvicorn

    backend = _make_backend(url, None)
    uvicorn.run(create_app(backend), host=host, port=port)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hatch run demo", description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help="serve the example app for curl")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--backend", default=None, help="redis://... or memcached://... (default: in memory)"
    )
    parser.add_argument(
        "--requests", type=int, default=BURST, help="requests per route (default %(default)s)"
    )
    parser.add_argument(
        "--gap-ms", type=int, default=GAP_MS, help="ms between requests (default %(default)s)"
    )
    args = parser.parse_args(argv)
    if args.requests < 1 or args.gap_ms < 1:
        parser.error("--requests and --gap-ms must be at least 1")
    if args.serve:
        return serve(args.backend, args.host, args.port)
    return run(args.backend, args.requests, args.gap_ms)


if __name__ == "__main__":
    raise SystemExit(main())
