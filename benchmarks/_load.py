"""Load generators for ``--section http``: wrk (the measurement) and a count-bounded client.

``wrk`` runs for a fixed duration on its own core and reports requests/s, the latency
distribution (``--latency``), socket errors and non-2xx responses. The Python client
sends exactly ``requests`` requests over ``connections`` keep-alive connections; it
is slower than the servers it loads and exists for the smoke test, which must be
bounded by a count and must not need wrk.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
import typing

Result = dict[str, typing.Any]

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
_LAT = re.compile(r"^\s*(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.M)
_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.M)
_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)", re.M)


def parse_wrk(text: str) -> Result:
    """requests, seconds, rps, p50_ms, p99_ms, errors (socket) and non2xx from wrk's output."""
    total, rps = _TOTAL.search(text), _RPS.search(text)
    if total is None or rps is None:
        raise ValueError(f"wrk printed no result: {text.strip()[-300:]!r}")
    lat = {m[1]: float(m[2]) * _UNITS[m[3]] for m in _LAT.finditer(text)}
    socket = _SOCKET.search(text)
    non2xx = _NON2XX.search(text)
    return {
        "requests": int(total[1]),
        "seconds": float(total[2]) * _UNITS[total[3]] / 1e3,
        "rps": float(rps[1]),
        "p50_ms": lat.get("50"),
        "p99_ms": lat.get("99"),
        "errors": sum(int(g) for g in socket.groups()) if socket else 0,
        "non2xx": int(non2xx[1]) if non2xx else 0,
    }


def wrk(url: str, connections: int, seconds: float, pin: list[str], timeout: float) -> Result:
    """One wrk run (one thread, ``--latency``), pinned with ``pin`` (a taskset prefix)."""
    cmd = [*pin, "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
           "--timeout", "5s", url]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited with {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return parse_wrk(proc.stdout)


async def _client(
    host: str, port: int, path: str, left: list[int], lat: list[float], statuses: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    try:
        while left[0] > 0:
            left[0] -= 1
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            lat.append((time.perf_counter() - t0) * 1e3)
            statuses.append(int(lines[0].split(" ")[1]))
    finally:
        writer.close()


def count_bounded(host: str, port: int, connections: int, requests: int, timeout: float) -> Result:
    """Exactly ``requests`` GET / over ``connections`` keep-alive connections (smoke only)."""

    async def run() -> Result:
        left, lat, statuses = [requests], [], []  # type: ignore[var-annotated]
        start = time.perf_counter()
        await asyncio.wait_for(
            asyncio.gather(
                *(_client(host, port, "/", left, lat, statuses) for _ in range(connections))
            ),
            timeout,
        )
        seconds = time.perf_counter() - start
        lat.sort()
        return {
            "requests": len(statuses),
            "seconds": seconds,
            "rps": len(statuses) / seconds,
            "p50_ms": lat[len(lat) // 2],
            "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
            "errors": requests - len(statuses),
            "non2xx": sum(1 for s in statuses if not 200 <= s < 400),
        }

    return asyncio.run(run())
