"""Server counters (Redis INFO, Memcached stats) and time bounds, standard library only."""

from __future__ import annotations

import asyncio
import socket
import typing

#: Coroutines of the concurrent phase and of the race check.
CONCURRENCY = 64


# --- tiny stats clients (no client library needed) -----------------------------------


_SCRIPTS = ("cmdstat_eval", "cmdstat_evalsha", "cmdstat_fcall", "cmdstat_evalsha_ro")


def _redis_info(host: str, port: int) -> dict[str, int]:
    """Sum of ``cmdstat_*`` calls (INFO excluded), of script usec, and ``total_reads_processed``.

    A script's usec includes the commands it calls, which count in their own
    ``cmdstat_*`` too: only EVAL/EVALSHA/FCALL time is summed, so nothing counts twice.
    """
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(b"*2\r\n$4\r\nINFO\r\n$3\r\nall\r\n")
        stream = sock.makefile("rb")
        header = stream.readline()
        size = int(header[1:-2])
        body = stream.read(size + 2).decode()
    calls = 0
    usec = 0
    reads = 0
    for line in body.splitlines():
        if line.startswith("cmdstat_"):
            name, _, rest = line.partition(":")
            if name in ("cmdstat_info", "cmdstat_config"):
                continue
            for part in rest.split(","):
                if part.startswith("calls="):
                    calls += int(part[6:])
                elif part.startswith("usec=") and name in _SCRIPTS:
                    usec += int(part[5:])
        elif line.startswith("total_reads_processed:"):
            reads = int(line.split(":", 1)[1])
    return {"commands": calls, "usec": usec, "reads": reads}


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
