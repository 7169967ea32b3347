"""Tail latency through a real server: uvicorn + wrk, one throttled route, Redis.

    hatch run python -m benchmarks.http_p99 [--url redis://...] [--duration 10] [--runs 3]

Starts (without ``--url``) a private redis-server, then for each app, a uvicorn
worker on a free port and ``wrk -t2 -c32 --latency`` against ``/``:

- ``plain``: the same FastAPI route without a limiter;
- ``limited``: ``Depends(HTTPThrottle(rate="1000000/m"))`` on a default
  ``RedisBackend`` (every request decided by Redis, none refused);
- ``bare`` (with ``--apps``): the same without the failure guard (``failure_policy=None``).

Prints p50/p99 and requests/s of each run and the ratio of the medians of p99
(issue 14 asks for limited p99 at most 2x plain). Not a test: a timed run.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
import typing

#: The app under test, for uvicorn's import string (selected by TRAFFIK_P99_APP).
APP_ENV = "TRAFFIK_P99_APP"
URL_ENV = "TRAFFIK_P99_REDIS"


def _build_app() -> typing.Any:
    from fastapi import Depends, FastAPI

    kind = os.environ.get(APP_ENV, "plain")
    if kind == "plain":
        app = FastAPI()

        @app.get("/")
        async def plain() -> dict[str, str]:
            return {"ok": "yes"}

        return app

    from traffik.redis import RedisBackend
    from traffik.throttles import HTTPThrottle

    policy = "default" if kind == "limited" else None  # "bare": no failure guard
    backend = RedisBackend(os.environ[URL_ENV], namespace="p99", failure_policy=policy)
    throttle = HTTPThrottle(uid="p99", rate="1000000/m", backend=backend)
    app = FastAPI(lifespan=backend.lifespan)

    @app.get("/", dependencies=[Depends(throttle)])
    async def limited() -> dict[str, str]:
        return {"ok": "yes"}

    return app


def app() -> typing.Any:
    """The uvicorn factory (``--factory benchmarks.http_p99:app``)."""
    return _build_app()


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(f"cannot read a latency from {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _wrk(port: int, duration: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{duration}s", "--latency", f"http://127.0.0.1:{port}/"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.MULTILINE))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if rps is None or "99" not in lat:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    return {
        "p50": _ms(lat["50"]),
        "p99": _ms(lat["99"]),
        "rps": float(rps.group(1)),
        "non2xx": float(errors.group(1)) if errors else 0.0,
    }


def _serve(kind: str, url: str, port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, **{APP_ENV: kind, URL_ENV: url})
    command = [sys.executable, "-m", "uvicorn", "--factory", "benchmarks.http_p99:app"]
    command += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
    server = subprocess.Popen(command, env=env)
    import socket

    for _ in range(200):  # bounded: 20 s
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return server
        time.sleep(0.1)
    server.terminate()
    raise RuntimeError(f"uvicorn ({kind}) did not listen on port {port}")


def main() -> None:
    from traffik.testing.servers import RedisServer, find_free_port

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a Redis URL (default: start a private redis-server)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=3, help="wrk runs per app")
    parser.add_argument(
        "--apps",
        default="plain,limited",
        help="comma-separated: plain, limited, bare (limited without the failure guard)",
    )
    args = parser.parse_args()
    redis = None if args.url else RedisServer().start()
    url = args.url or typing.cast(RedisServer, redis).url
    results: dict[str, list[dict[str, float]]] = {}
    try:
        for kind in args.apps.split(","):
            port = find_free_port()
            server = _serve(kind, url, port)
            try:
                _wrk(port, 2)  # warm up
                results[kind] = [_wrk(port, args.duration) for _ in range(args.runs)]
            finally:
                server.terminate()
                server.wait(timeout=10)
    finally:
        if redis is not None:
            redis.close()
    for kind, runs in results.items():
        for run in runs:
            print(
                f"{kind:8} p50 {run['p50']:7.2f} ms  p99 {run['p99']:7.2f} ms  "
                f"{run['rps']:8.0f} req/s  non-2xx {run['non2xx']:.0f}"
            )
    p99 = {kind: statistics.median(run["p99"] for run in runs) for kind, runs in results.items()}
    print("median p99: " + ", ".join(f"{kind} {value:.2f} ms" for kind, value in p99.items()))
    if "plain" in p99 and "limited" in p99:
        print(f"ratio limited/plain: {p99['limited'] / p99['plain']:.2f}")


if __name__ == "__main__":
    main()
