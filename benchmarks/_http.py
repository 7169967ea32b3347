"""``--section http``: the price of a throttle through a real server, against the peers.

Every app runs in its own uvicorn process (uvloop, httptools, one worker) pinned to one
core; the load generator (wrk, one thread, 32 connections, one client address) runs
pinned to the other core. Each cell is served together with the same
framework's app without a limiter (FastAPI or Starlette), both on the app core, and wrk
loads them in alternating bursts (ABBA order, so that a machine load drifting during the
pair weighs on both alike): the cell's ratio is its requests/s over the baseline's, taken
seconds apart. A *round* measures every cell once; the report takes the median over
rounds.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import typing
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks import _load, _peers
from benchmarks._sections import OWN
from benchmarks.peers._stats import flush

CONNECTIONS = 32
#: Seconds an app may take to answer its first request after its process starts.
START_TIMEOUT_S = 30.0
#: Seconds an app gets to exit after SIGTERM before it is killed.
STOP_TIMEOUT_S = 10.0
WARM_S = 1.0
BASELINE = "no limiter"
Log = typing.Callable[[str], None]

#: The floor limiters' apps (peers/floor_apps.py), served in the same pair as the cell.
FLOOR = "floor"
#: traffik (dev) apps: (framework, app name in traffik_dev.http_apps, how the throttle is
#: applied, the floor app of the same framework it is compared with).
OWN_APPS = (
    ("fastapi", "fastapi-depends", "Depends", "fastapi-floor-depends"),
    ("fastapi", "fastapi-decorator", "decorator", "fastapi-floor-depends"),
    ("fastapi", "fastapi-middleware", "ThrottleMiddleware", "fastapi-floor"),
    ("starlette", "starlette-middleware", "ThrottleMiddleware", "starlette-floor"),
    ("starlette", "starlette-endpoint", "await throttle(request)", "starlette-floor"),
    ("starlette", "starlette-decorator", "@throttled", "starlette-floor"),
)
#: Floor app -> how it limits (the report's "through" column).
FLOOR_THROUGH = {
    "fastapi-floor-depends": "Depends(dict window)",
    "fastapi-floor": "pure-ASGI dict window",
    "starlette-floor": "pure-ASGI dict window",
}
#: Peers served over HTTP: venv name -> (app name in the peer's http_apps, how it is applied).
PEER_APPS = {
    "traffik_122": ("fastapi-depends", "Depends"),
    "slowapi": ("fastapi-decorator", "@limiter.limit"),
    "fastapi_limiter": ("fastapi-depends", "Depends(RateLimiter)"),
}
PEER_BACKENDS = ("memory", "redis")


@dataclass(frozen=True)
class Cell:
    """One app to serve and load: who, through what, on which backend and path."""

    impl: str
    through: str
    framework: str
    backend: str
    path: str
    app: str
    module: str
    python: str
    #: The floor app served in the same pair (traffik's cells), "" for none.
    floor: str = ""

    def floor_cell(self) -> Cell | None:
        """The floor app of this cell, on the same path; None without one."""
        if not self.floor:
            return None
        return Cell(FLOOR, FLOOR_THROUGH[self.floor], self.framework, "—", self.path,
                    self.floor, "floor_apps", sys.executable)  # fmt: skip

    def args(self, servers: dict[str, typing.Any], port: int) -> dict[str, typing.Any]:
        # The baseline and the floors build no backend.
        backend = "memory" if self.impl in (BASELINE, FLOOR) else self.backend
        return {"module": self.module, "app": self.app, "backend": backend,
                "refuse": self.path == "refuse", "servers": servers, "port": port}  # fmt: skip


def baselines() -> list[Cell]:
    """The FastAPI and Starlette apps without a limiter (this environment)."""
    return [
        Cell(BASELINE, "—", fw, "—", "admit", f"{fw}-bare", "traffik_dev", sys.executable)
        for fw in ("fastapi", "starlette")
    ]


def cells(
    backends: list[str], paths: list[str], peers: list[_peers.Peer], only: list[str] | None
) -> dict[str, list[Cell]]:
    """The throttled cells, by backend, in table order; ``only`` keeps matching app names."""
    out: dict[str, list[Cell]] = {}
    for backend in backends:
        block: list[Cell] = []
        for path in paths:
            for framework, app, through, floor in OWN_APPS:
                block.append(Cell(OWN, through, framework, backend, path, app, "traffik_dev",
                                  sys.executable, floor))  # fmt: skip
            if backend not in PEER_BACKENDS:
                continue
            for peer in peers:
                if peer.venv in PEER_APPS:
                    app, through = PEER_APPS[peer.venv]
                    block.append(Cell(peer.name, through, "fastapi", backend, path, app,
                                      peer.script.removesuffix(".py"), str(peer.python)))  # fmt: skip
        if only:
            block = [c for c in block if any(o in c.app for o in only)]
        if block:
            out[backend] = block
    return out


def pins() -> tuple[list[str], list[str], str]:
    """taskset prefixes for the server and the load generator, and a note on pinning."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cores) < 2 or shutil.which("taskset") is None:
        return [], [], "not pinned (needs 2 cores and taskset; Debian: util-linux)"
    server, load = str(cores[0]), str(cores[1])
    return (["taskset", "-c", server], ["taskset", "-c", load],
            f"app on core {server}, load generator on core {load}")  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _tail(log: typing.IO[str]) -> str:
    log.seek(0)
    return " | ".join(log.read().strip().splitlines()[-3:])


@contextlib.contextmanager
def served(
    cells: list[Cell], servers: dict[str, typing.Any], pin: list[str]
) -> typing.Iterator[list[int]]:
    """Start the cells' apps together, wait until each answers, yield their ports.

    Every process started here is stopped on the way out (SIGTERM, then SIGKILL).
    """
    script = str(_peers.PEERS_DIR / "http_serve.py")
    procs: list[tuple[subprocess.Popen[bytes], int, typing.IO[str]]] = []
    with contextlib.ExitStack() as stack:
        for cell in cells:
            port = _free_port()
            log = stack.enter_context(tempfile.TemporaryFile("w+"))
            proc = subprocess.Popen(
                [*pin, cell.python, script, json.dumps(cell.args(servers, port))],
                cwd=str(_peers.PEERS_DIR), env=_peers.clean_env(), stdout=log, stderr=log,
            )  # fmt: skip
            stack.callback(_stop, proc)
            procs.append((proc, port, log))
        deadline = time.monotonic() + START_TIMEOUT_S
        for proc, port, log in procs:
            _wait_ready(proc, port, log, deadline)
        yield [port for _, port, _ in procs]


def _wait_ready(
    proc: subprocess.Popen[bytes], port: int, log: typing.IO[str], deadline: float
) -> None:
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited with {proc.returncode}: {_tail(log)}")
        try:
            _get(port)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"no answer {START_TIMEOUT_S:.0f} s after start: {_tail(log)}"
                ) from None
            time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)


def combine(bursts: list[_load.Result]) -> _load.Result:
    """Bursts of one app: requests/s over all of them, median p50 and p99, summed counts."""
    requests = sum(b["requests"] for b in bursts)
    seconds = sum(b["seconds"] for b in bursts)
    return {
        "requests": requests,
        "seconds": seconds,
        "rps": requests / seconds,
        "p50_ms": statistics.median(b["p50_ms"] for b in bursts),
        "p99_ms": statistics.median(b["p99_ms"] for b in bursts),
        "errors": sum(b["errors"] for b in bursts),
        "non2xx": sum(b["non2xx"] for b in bursts),
        "bursts": len(bursts),
    }


class HttpRun:
    """Settings and collected rows of one ``--section http`` run."""

    def __init__(self, args: typing.Any, servers: dict[str, typing.Any], log: Log) -> None:
        self.args = args
        self.servers = servers
        self.log = log
        self.server_pin, self.load_pin, self.pinning = pins()
        self.base = {b.framework: b for b in baselines()}
        self.rows: list[dict[str, typing.Any]] = []
        self.errors: list[str] = []

    def load(self, port: int, warm: bool) -> _load.Result:
        if self.args.load == "python":
            n = min(self.args.requests, 64) if warm else self.args.requests
            return _load.count_bounded("127.0.0.1", port, CONNECTIONS, n, 120.0)
        seconds = WARM_S if warm else self.args.duration
        url = f"http://127.0.0.1:{port}/"
        return _load.wrk(url, CONNECTIONS, seconds, self.load_pin, seconds + 30.0)

    def bursts(self, ports: list[int]) -> list[list[_load.Result]]:
        """Alternate load bursts between the apps, ABBA order, ``--bursts`` each."""
        out: list[list[_load.Result]] = [[] for _ in ports]
        for k in range(self.args.bursts):
            order = range(len(ports)) if k % 2 == 0 else reversed(range(len(ports)))
            for i in order:
                out[i].append(self.load(ports[i], warm=False))
        return out

    def measure(self, cell: Cell, rnd: int) -> None:
        """Serve ``cell``, its framework's app without a limiter and (traffik's cells) its
        floor app side by side; load them in alternating bursts; append a row for each,
        the cell's with its ratios to the others."""
        base = self.base[cell.framework]
        floor = cell.floor_cell()
        group = [base, cell] if floor is None else [base, floor, cell]
        where = f"{cell.impl} {cell.app} {cell.backend}/{cell.path}"
        rows: list[dict[str, typing.Any]] = []
        try:
            if cell.backend in ("redis", "memcached"):
                flush(cell.backend, self.servers)
            with served(group, self.servers, self.server_pin) as ports:
                for port in ports:
                    self.load(port, warm=True)
                statuses = [_get(port) for port in ports]
                results = self.bursts(ports)
        except Exception as exc:
            message = f"{where}: {type(exc).__name__}: {exc}"
            self.errors.append(f"round {rnd + 1}: {message}")
            self.log(f"    error: {message}")
            return
        for c, status, bursts in zip(group, statuses, results, strict=True):
            row: dict[str, typing.Any] = {**asdict(c), "round": rnd, "status": status,
                                          **combine(bursts)}  # fmt: skip
            del row["python"]
            rows.append(row)
        b, r = rows[0], rows[-1]
        for other in rows[1:]:
            other["ratio"] = other["rps"] / b["rps"]
            other["p99_ratio"] = other["p99_ms"] / b["p99_ms"]
        b["baseline_of"] = cell.app
        floor_note = ""
        if floor is not None:
            f = rows[1]
            f["floor_of"] = cell.app
            r["floor_ratio"] = r["rps"] / f["rps"]
            floor_note = f" {r['floor_ratio']:5.2f}× floor ({f['rps']:5.0f})"
        self.rows += rows
        expected = 429 if cell.path == "refuse" else 200
        if statuses[0] != 200 or statuses[-1] != expected or statuses[1] != expected:
            self.errors.append(f"round {rnd + 1}: {where}: answered {statuses[1:]} (expected "
                               f"{expected}), its baseline {statuses[0]}")  # fmt: skip
        self.log(f"    {cell.impl:<20} {cell.app:<21} {cell.backend:<9} {cell.path:<6} "
                 f"{r['rps']:7.0f} req/s {r['ratio']:5.2f}× (no limiter {b['rps']:5.0f}){floor_note}"
                 f"  p99 {r['p99_ms']:.2f} ms  status {statuses[-1]}")  # fmt: skip

    def round(self, rnd: int, blocks: dict[str, list[Cell]]) -> None:
        """Every cell once, backend by backend, each rotated by the round's number."""
        for block in blocks.values():
            shift = rnd % len(block)
            for cell in block[shift:] + block[:shift]:
                self.measure(cell, rnd)


def versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {d: version(d) for d in ("uvicorn", "uvloop", "httptools", "starlette", "fastapi")}
    if shutil.which("wrk"):
        proc = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
        out["wrk"] = (proc.stdout or proc.stderr).strip().splitlines()[0].split(" [")[0]
    return out


def run(args: typing.Any, servers: dict[str, typing.Any], peers: list[_peers.Peer],
        log: Log) -> HttpRun:  # fmt: skip
    """Every round of the http section; the rows are in the returned run."""
    if args.load == "wrk" and shutil.which("wrk") is None:
        raise SystemExit("--section http needs wrk on PATH (Debian: apt-get install wrk), "
                         "or --load python --requests N for a count-bounded smoke run.")  # fmt: skip
    state = HttpRun(args, servers, log)
    blocks = cells(args.backends, args.paths, peers, args.cells)
    log(f"http: {sum(len(b) for b in blocks.values())} cells per round; {state.pinning}")
    for rnd in range(args.reps):
        log(f"round {rnd + 1}/{args.reps}")
        state.round(rnd, blocks)
    return state


def write(state: HttpRun, report: str, out: Path, extra: dict[str, typing.Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report + "\n")
    raw = {"rows": state.rows, "errors": state.errors, "pinning": state.pinning, **extra}
    out.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")
