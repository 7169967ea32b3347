"""The sections of a run: what is measured, for whom, and how results are gathered.

Our own code and the floors are measured in this process (sections A, C, D); each
peer runs the same harness in a subprocess inside its own environment. Section E
(memory) always runs in a fresh process per implementation and strategy, and
section B drives ``redis-benchmark`` against the same server.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import typing

from benchmarks import _peers

sys.path.insert(0, str(_peers.PEERS_DIR))

import _harness as h
import floors
import traffik_dev

OWN = "traffik (dev)"
FLOOR = "floor"
#: Strategies measured for memory per 100k keys (section E).
E_STRATEGIES = ("fw", "tb", "swl")

Log = typing.Callable[[str], None]


class Run:
    """Collects raw per-repetition results; the report takes medians."""

    def __init__(
        self,
        cfg: dict[str, typing.Any],
        servers: dict[str, typing.Any],
        backends: list[str],
        log: Log,
    ) -> None:
        self.cfg = cfg
        self.servers = servers
        self.backends = backends
        self.log = log
        self.a: list[dict[str, typing.Any]] = []
        self.c: list[dict[str, typing.Any]] = []
        self.d: list[dict[str, typing.Any]] = []
        self.e: list[dict[str, typing.Any]] = []
        self.b: list[dict[str, typing.Any]] = []
        self.notes: list[str] = []
        self.errors: list[str] = []
        self.versions: dict[str, str] = {}

    def args(self, sections: list[str], **extra: typing.Any) -> dict[str, typing.Any]:
        return {
            "servers": self.servers,
            "cfg": self.cfg,
            "sections": sections,
            "backends": self.backends,
            **extra,
        }

    def absorb(self, impl: str, rep: int, out: dict[str, typing.Any]) -> None:
        if "version" in out:
            self.versions[impl] = out["version"]
        for row in out.get("A", []):
            self.a.append({"impl": impl, "rep": rep, **row})
        for row in out.get("D", []):
            self.d.append({"impl": impl, "rep": rep, **row})
        for name, row in out.get("C", {}).items():
            backend, _, app = name.partition("/")
            self.c.append({"impl": impl, "rep": rep, "backend": backend, "app": app, **row})
        for strategy, row in out.get("E", {}).items():
            self.e.append({"impl": impl, "rep": rep, "strategy": strategy, **row})
        for error in out.get("errors", []):
            message = f"{impl}: {error}"
            if message not in self.errors:
                self.errors.append(message)


# --- in-process runs ------------------------------------------------------------------------


async def own_sections(run: Run, sections: list[str], rep: int) -> None:
    """Sections A and D for traffik (dev) and the floors, in this process."""
    for kind in run.backends:
        why = traffik_dev.available(kind)
        if why is not None:
            note = f"{OWN} on {kind}: {why}"
            if note not in run.notes:
                run.notes.append(note)
    if "A" in sections:
        await paired_a(run, rep)
    if "D" in sections:
        out = await h.run_sections(run.args(["D"]), traffik_dev.make, traffik_dev.supported)
        run.absorb(OWN, rep, out)
    run.versions[OWN] = traffik_dev.version()


async def paired_a(run: Run, rep: int) -> None:
    """Section A for traffik (dev), each case right after a floor case on the same backend.

    The ratio to the floor is then taken between two measurements seconds apart, which
    keeps it stable on a machine whose load changes from minute to minute.
    """
    for backend in run.backends:
        for keyspace in h.KEYSPACES:
            for strategy in traffik_dev.supported(backend):
                where = f"A {backend}/{strategy}/{keyspace}"
                try:
                    floor = await h.bounded(
                        h.case_a(floors.make, backend, "fw", keyspace, run.servers, run.cfg),
                        h.case_timeout(run.cfg),
                    )
                except Exception as exc:
                    run.errors.append(f"{FLOOR}: {where}: {type(exc).__name__}: {exc}")
                    continue
                run.a.append({"impl": FLOOR, "rep": rep, "backend": backend, "strategy": "fw",
                              "keyspace": keyspace, **floor})  # fmt: skip
                try:
                    own = await h.bounded(
                        h.case_a(
                            traffik_dev.make, backend, strategy, keyspace, run.servers, run.cfg
                        ),
                        h.case_timeout(run.cfg),
                    )
                except Exception as exc:
                    run.errors.append(f"{OWN}: {where}: {type(exc).__name__}: {exc}")
                    continue
                run.a.append({"impl": OWN, "rep": rep, "backend": backend, "strategy": strategy,
                              "keyspace": keyspace, "floor_ratio": own["rate"] / floor["rate"], **own})  # fmt: skip


async def own_end_to_end(run: Run, rep: int) -> None:
    """Section C for traffik (dev): Starlette and FastAPI apps, bare and throttled."""
    for kind in run.backends:
        if kind == "memcached":
            continue
        if traffik_dev.available(kind) is not None:
            continue
        built: dict[str, typing.Any] = {}
        for factory in (traffik_dev.starlette_apps, traffik_dev.fastapi_apps):
            try:
                apps, missing = factory(kind, run.servers)
            except Exception as exc:
                run.errors.append(
                    f"{OWN}: C {kind} {factory.__name__}: {type(exc).__name__}: {exc}"
                )
                continue
            built.update(apps)
            for note in missing:
                if note not in run.notes:
                    run.notes.append(f"{OWN} C: {note}")
        errors: list[str] = []
        for name, row in (await h.time_apps(built, run.cfg, kind, run.servers, errors)).items():
            run.c.append({"impl": OWN, "rep": rep, "backend": kind, "app": name, **row})
        for error in errors:
            if f"{OWN}: {error}" not in run.errors:
                run.errors.append(f"{OWN}: {error}")


def run_in_process(run: Run, sections: list[str], rep: int) -> None:
    async def body() -> None:
        if "A" in sections or "D" in sections:
            await own_sections(run, sections, rep)
        if "C" in sections:
            await own_end_to_end(run, rep)

    asyncio.run(body())


# --- subprocess runs ---------------------------------------------------------------------------


def run_peers(run: Run, peers: list[_peers.Peer], sections: list[str], rep: int) -> None:
    wanted = [s for s in sections if s in "ACD"]
    if not wanted:
        return
    for peer in peers:
        run.log(f"  {peer.name}: {','.join(wanted)}")
        out = _peers.run_script(peer.python, peer.script, run.args(wanted))
        run.absorb(peer.name, rep, out)


def run_memory(run: Run, peers: list[_peers.Peer], rep: int) -> None:
    """Section E: a fresh process per implementation and strategy."""
    if "memory" not in run.backends:
        return
    jobs: list[tuple[str, str | typing.Any, str]] = [
        (OWN, sys.executable, "traffik_dev.py"),
        (FLOOR, sys.executable, "floors.py"),
    ]
    jobs += [
        (p.name, p.python, p.script)
        for p in peers
        if p.script not in ("slowapi_peer.py", "fastapi_limiter_peer.py")
    ]
    for impl, python, script in jobs:
        for strategy in E_STRATEGIES:
            if impl == FLOOR and strategy != "fw":
                continue
            args = run.args(["E"], e_strategies=[strategy])
            args["backends"] = ["memory"]
            out = _peers.run_script(python, script, args)
            out.pop("version", None)
            run.absorb(impl, rep, out)


# --- section B: redis-benchmark -----------------------------------------------------------------

_RPS = re.compile(
    r"^\s*(?P<name>.+?):\s*(?P<rps>[\d.]+) requests per second(?:, p50=(?P<p50>[\d.]+) msec)?"
)


def redis_benchmark(run: Run) -> None:
    """The physical reference: redis-benchmark's own numbers on the same server."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        run.notes.append(
            "B skipped: redis-benchmark is not on PATH (Debian: apt-get install redis-tools)."
        )
        return
    host, port = run.servers["redis_host"], str(run.servers["redis_port"])
    from traffik.testing.servers import redis_command

    sha = str(redis_command(host, int(port), "SCRIPT", "LOAD", floors.FW_LUA))
    n = str(run.cfg["bench_n"])
    base = [binary, "-h", host, "-p", port, "-q", "-n", n]
    rows = [
        ("SET, GET", ["-c", "50", "-t", "set,get"]),
        ("SET, GET", ["-c", "1", "-t", "set,get"]),
        (
            "EVALSHA floor script",
            ["-c", "50", "-r", "10000", "EVALSHA", sha, "1", "bench:__rand_int__", "1", "1000"],
        ),
        (
            "EVALSHA floor script",
            ["-c", "1", "-r", "10000", "EVALSHA", sha, "1", "bench:__rand_int__", "1", "1000"],
        ),
    ]
    for label, extra in rows:
        try:
            proc = subprocess.run(
                [*base, *extra], capture_output=True, text=True, timeout=300, check=False
            )
        except subprocess.TimeoutExpired:
            run.errors.append(f"redis-benchmark {label} timed out")
            continue
        clients = extra[1]
        for chunk in proc.stdout.replace("\r", "\n").splitlines():
            match = _RPS.match(chunk)
            if match is None:
                continue
            name = match["name"].strip()
            if name.upper().startswith("EVALSHA"):
                name = label
            run.b.append({"command": name, "clients": int(clients), "rps": float(match["rps"]),
                          "p50_ms": float(match["p50"]) if match["p50"] else None})  # fmt: skip
