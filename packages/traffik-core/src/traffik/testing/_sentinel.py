"""A replicated Redis behind Sentinel, for tests: see `RedisSentinelServer`.

Import it from :mod:`traffik.testing.servers` (this module is built on its classes).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from traffik.testing.servers import (
    RedisServer,
    ServerError,
    _ManagedServer,
    _redis_answers_ping,
    _RespError,
    _wait_until,
    redis_command,
)

__all__ = ["RedisSentinelServer"]


class _SentinelProcess(_ManagedServer):
    """One ``redis-sentinel`` watching ``service`` at ``primary``, from its own config file."""

    _kind = "redis-sentinel"

    def __init__(
        self,
        service: str,
        primary: tuple[str, int],
        *,
        host: str,
        down_after_ms: int,
        failover_timeout_ms: int,
        quorum: int,
    ) -> None:
        super().__init__(host=host)
        self.service = service
        self.primary = primary
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.quorum = quorum

    def _command(self) -> list[str]:
        # Sentinel rewrites its config file as it learns the topology: one per process.
        path = os.path.join(self.tmpdir, "sentinel.conf")
        name, (host, port) = self.service, self.primary
        with open(path, "w", encoding="utf-8") as conf:
            conf.write(
                f"port {self.port}\nbind {self.host}\ndaemonize no\ndir {self.tmpdir}\n"
                f"logfile {os.path.join(self.tmpdir, 'sentinel.log')}\n"
                f"sentinel monitor {name} {host} {port} {self.quorum}\n"
                f"sentinel down-after-milliseconds {name} {self.down_after_ms}\n"
                f"sentinel failover-timeout {name} {self.failover_timeout_ms}\n"
                f"sentinel parallel-syncs {name} 1\n"
            )
        return [self.binary, path]

    def _answers(self) -> bool:
        return _redis_answers_ping(self.host, self.port)

    def command(self, *args: str) -> Any:
        return redis_command(self.host, self.port, *args)


def _pairs(raw: Any) -> dict[str, str]:
    items = list(raw or [])
    return {str(k): str(v) for k, v in zip(items[::2], items[1::2], strict=True)}


class RedisSentinelServer:
    """A primary, ``replicas`` replicas and ``sentinels`` Sentinels on free local ports.

    Every process is a child of this object, stopped by `stop` (and only those).
    The sentinels watch the primary as ``service`` with a quorum of a majority and
    declare it down after ``down_after_ms`` without an answer; `kill_primary` and
    `wait_for_failover` drive a failover as a crash would.

    ::

        with RedisSentinelServer() as group:
            backend = RedisBackend(group.url)   # redis+sentinel://.../mymaster/0
            old = group.kill_primary()
            new = group.wait_for_failover(old)
    """

    def __init__(
        self,
        service: str = "mymaster",
        *,
        replicas: int = 1,
        sentinels: int = 3,
        host: str = "127.0.0.1",
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 10000,
        extra_args: Sequence[str] = (),
    ) -> None:
        if replicas < 1 or sentinels < 1:
            raise ValueError(
                f"A Sentinel group needs at least one replica and one sentinel, got "
                f"replicas={replicas}, sentinels={sentinels}."
            )
        self.service = service
        self.host = host
        self.replicas_count = replicas
        self.sentinels_count = sentinels
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.extra_args = tuple(extra_args)
        self.servers: list[RedisServer] = []
        self.sentinels: list[_SentinelProcess] = []
        #: Seconds `wait_for_failover` waited, the last time it was called.
        self.last_failover_s: float | None = None

    # -- addresses ----------------------------------------------------------------

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every sentinel started."""
        return [(s.host, s.port) for s in self.sentinels]

    @property
    def url(self) -> str:
        """``redis+sentinel://HOST:PORT,HOST:PORT,.../SERVICE/0``."""
        nodes = ",".join(f"{host}:{port}" for host, port in self.sentinel_addresses)
        return f"redis+sentinel://{nodes}/{self.service}/0"

    def server(self, host: str, port: int) -> RedisServer:
        """The `RedisServer` at ``host:port`` (the primary or a replica)."""
        for server in self.servers:
            if (server.host, server.port) == (host, port):
                return server
        raise KeyError(f"{host}:{port} is not a Redis server of this group.")

    def primary_address(self) -> tuple[str, int]:
        """The primary's ``(host, port)`` as the first sentinel that answers reports it."""
        for sentinel in self.sentinels:
            with contextlib.suppress(OSError, _RespError):
                reply = sentinel.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
                if reply:
                    return str(reply[0]), int(reply[1])
        raise ServerError(f"No sentinel reports a primary for {self.service!r}.")

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> RedisSentinelServer:
        """Start the servers and the sentinels, and wait until they see each other; return self."""
        if self.servers:
            return self
        majority = self.sentinels_count // 2 + 1
        try:
            primary = RedisServer(host=self.host, extra_args=self.extra_args).start()
            self.servers.append(primary)
            for _ in range(self.replicas_count):
                replica = RedisServer(
                    host=self.host,
                    extra_args=(*self.extra_args, "--replicaof", self.host, str(primary.port)),
                )
                self.servers.append(replica)
                replica.start()
            for _ in range(self.sentinels_count):
                sentinel = _SentinelProcess(
                    self.service,
                    (primary.host, primary.port),
                    host=self.host,
                    down_after_ms=self.down_after_ms,
                    failover_timeout_ms=self.failover_timeout_ms,
                    quorum=majority,
                )
                self.sentinels.append(sentinel)
                sentinel.start()
            self.wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_until_ready(self, timeout: float = 60.0) -> None:
        """Wait until every live sentinel knows the replicas and the other sentinels,
        and every live replica's link to the primary is up."""

        def ready() -> bool:
            try:
                primary = self.primary_address()
                live = [s for s in self.sentinels if s.running()]
                for sentinel in live:
                    state = _pairs(sentinel.command("SENTINEL", "MASTER", self.service))
                    if (state.get("ip"), int(state.get("port", 0))) != primary:
                        return False
                    if "s_down" in state.get("flags", "") or "o_down" in state.get("flags", ""):
                        return False
                    if int(state.get("num-slaves", 0)) < self.replicas_count:
                        return False
                    if int(state.get("num-other-sentinels", 0)) < len(live) - 1:
                        return False
                for server in self.servers:
                    if not server.running() or (server.host, server.port) == primary:
                        continue
                    info = str(server.command("INFO", "replication"))
                    if "master_link_status:up" not in info:
                        return False
            except (OSError, _RespError, ServerError, ValueError):
                return False
            return True

        _wait_until(ready, timeout, f"the Sentinel group of {self.service!r} to be ready")

    def kill_primary(self) -> tuple[str, int]:
        """SIGKILL the current primary, as a crash would; return its ``(host, port)``."""
        address = self.primary_address()
        self.server(*address).kill()
        return address

    def wait_for_failover(self, old: tuple[str, int], timeout: float = 60.0) -> tuple[str, int]:
        """Wait until every live sentinel names a primary other than ``old`` and that
        server says it is a master; return its ``(host, port)``."""
        found: list[tuple[str, int]] = []

        def promoted() -> bool:
            try:
                addresses = set()
                for sentinel in self.sentinels:
                    if sentinel.running():
                        reply = sentinel.command(
                            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service
                        )
                        addresses.add((str(reply[0]), int(reply[1])))
                if len(addresses) != 1 or old in addresses:
                    return False
                (address,) = addresses
                info = str(self.server(*address).command("INFO", "replication"))
            except (OSError, _RespError, KeyError, TypeError):
                return False
            if "role:master" not in info:
                return False
            found.append(address)
            return True

        started = time.monotonic()
        _wait_until(promoted, timeout, f"Sentinel to promote a replica of {self.service!r}")
        self.last_failover_s = time.monotonic() - started
        return found[-1]

    def stop(self) -> None:
        """Stop every process this group started and delete their directories."""
        processes: list[_ManagedServer] = [*self.sentinels, *self.servers]
        self.sentinels, self.servers = [], []
        for process in processes:
            with contextlib.suppress(Exception):
                process.close()

    def __enter__(self) -> RedisSentinelServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<RedisSentinelServer {self.service!r} sentinels={self.sentinel_addresses}>"
