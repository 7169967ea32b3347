"""``--section http``: the price of a throttle through a real server, against the peers.

Every app runs in its own uvicorn process (uvloop, httptools, one worker) pinned to one
core; the load generator (wrk, one thread, 32 connections, one client address) runs
pinned to the other core. A *round* measures every cell once, backend by backend, each
right after a run of the same framework's app without a limiter (FastAPI or Starlette),
and both apps without a limiter once more at the end: a cell's ratio is its requests/s
over the mean of the nearest baseline runs before and after it in the same round. The
report takes the median over rounds.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import typing
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks import _load, _peers
from benchmarks.peers._stats import flush

CONNECTIONS = 32
#: Seconds an app may take to answer its first request after its process starts.
START_TIMEOUT_S = 30.0
#: Seconds an app gets to exit after SIGTERM before it is killed.
STOP_TIMEOUT_S = 10.0
WARM_S = 1.0
OWN = "traffik (dev)"
BASELINE = "no limiter"
PATHS = ("admit", "refuse")
Log = typing.Callable[[str], None]

#: traffik (dev) apps: (framework, app name in traffik_dev.http_apps, how the throttle is applied).
OWN_APPS = (
    ("fastapi", "fastapi-depends", "Depends"),
    ("fastapi", "fastapi-decorator", "decorator"),
    ("fastapi", "fastapi-middleware", "ThrottleMiddleware"),
    ("starlette", "starlette-middleware", "ThrottleMiddleware"),
    ("starlette", "starlette-endpoint", "await throttle(request)"),
)
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

    def args(self, servers: dict[str, typing.Any], port: int) -> dict[str, typing.Any]:
        backend = "memory" if self.impl == BASELINE else self.backend  # builds no backend
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
            for framework, app, through in OWN_APPS:
                block.append(Cell(OWN, through, framework, backend, path, app, "traffik_dev",
                                  sys.executable))  # fmt: skip
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
def served(cell: Cell, servers: dict[str, typing.Any], pin: list[str]) -> typing.Iterator[int]:
    """Start the cell's app, wait until it answers, yield its port; always stop it."""
    port = _free_port()
    script = str(_peers.PEERS_DIR / "http_serve.py")
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            [*pin, cell.python, script, json.dumps(cell.args(servers, port))],
            cwd=str(_peers.PEERS_DIR), env=_peers.clean_env(), stdout=log, stderr=log,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"app exited with {proc.returncode}: {_tail(log)}")
                try:
                    _get(port)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"no answer {START_TIMEOUT_S:.0f} s after start: {_tail(log)}"
                        ) from None
                    time.sleep(0.05)
            yield port
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(STOP_TIMEOUT_S)


class HttpRun:
    """Settings and collected rows of one ``--section http`` run."""

    def __init__(self, args: typing.Any, servers: dict[str, typing.Any], log: Log) -> None:
        self.args = args
        self.servers = servers
        self.log = log
        self.server_pin, self.load_pin, self.pinning = pins()
        self.rows: list[dict[str, typing.Any]] = []
        self.errors: list[str] = []

    def load(self, port: int, warm: bool) -> _load.Result:
        if self.args.load == "python":
            n = min(self.args.requests, 64) if warm else self.args.requests
            return _load.count_bounded("127.0.0.1", port, CONNECTIONS, n, 120.0)
        seconds = WARM_S if warm else self.args.duration
        url = f"http://127.0.0.1:{port}/"
        return _load.wrk(url, CONNECTIONS, seconds, self.load_pin, seconds + 30.0)

    def measure(self, cell: Cell, rnd: int, seq: int) -> None:
        """Serve ``cell``, warm it up, check its status, load it; append one row."""
        row: dict[str, typing.Any] = {**asdict(cell), "round": rnd, "seq": seq}
        del row["python"]
        expected = 429 if cell.path == "refuse" else 200
        try:
            if cell.backend in ("redis", "memcached"):
                flush(cell.backend, self.servers)
            with served(cell, self.servers, self.server_pin) as port:
                self.load(port, warm=True)
                row["status"] = _get(port)
                row.update(self.load(port, warm=False))
        except Exception as exc:
            message = (
                f"{cell.impl} {cell.app} {cell.backend}/{cell.path}: {type(exc).__name__}: {exc}"
            )
            self.errors.append(f"round {rnd + 1}: {message}")
            self.log(f"    error: {message}")
            return
        if row["status"] != expected:
            self.errors.append(f"round {rnd + 1}: {cell.impl} {cell.app} {cell.backend}/"
                               f"{cell.path}: answered {row['status']}, expected {expected}")  # fmt: skip
        self.rows.append(row)
        self.log(f"    {cell.impl:<20} {cell.app:<21} {cell.backend:<9} {cell.path:<6} "
                 f"{row['rps']:8.0f} req/s  p99 {row['p99_ms']:.2f} ms  status {row['status']}")  # fmt: skip

    def round(self, rnd: int, blocks: dict[str, list[Cell]]) -> None:
        """Every cell right after a run of its framework's app without a limiter.

        Cells go backend by backend, rotated by round; both baselines close the round,
        so every cell has a baseline run just before and one after it.
        """
        base = {b.framework: b for b in baselines()}
        seq = 0
        for block in blocks.values():
            shift = rnd % len(block)
            for cell in block[shift:] + block[:shift]:
                self.measure(base[cell.framework], rnd, seq)
                self.measure(cell, rnd, seq + 1)
                seq += 2
        for b in base.values():
            self.measure(b, rnd, seq)
            seq += 1


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
