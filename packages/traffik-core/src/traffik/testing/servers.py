"""Real Redis, Redis Cluster and Memcached servers for tests and benchmarks.

Each server runs as a child process on a free local port, in its own temporary
directory, with persistence switched off. It is started and stopped by
`mirakuru <https://pypi.org/project/mirakuru/>`_ (installed with the ``testing``
extra of traffik-core and imported only when a server starts), and only the
process a server started is ever signalled.

::

    from traffik.testing.servers import RedisServer

    with RedisServer() as server:
        backend = RedisBackend(server.url, namespace="test")
        ...
        server.kill()       # SIGKILL: simulate a crash
        server.restart()    # same port, empty data, answers PING again

This module never imports pytest; the repository's root ``conftest.py`` wraps
these classes in session fixtures (``redis_server``, ``redis_cluster``,
``memcached_server``) and factories (``make_redis_server``, ``make_memcached_server``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar

from traffik.testing._tls import TLSFiles, make_tls_files

__all__ = [
    "MemcachedServer",
    "MissingBinaryError",
    "RedisClusterServer",
    "RedisSentinelServer",
    "RedisServer",
    "ServerError",
    "TLSFiles",
    "find_free_port",
    "make_tls_files",
    "redis_command",
    "require_binary",
    "tls_files",
]

_START_TIMEOUT_S = 30.0
_START_ATTEMPTS = 5
_POLL_S = 0.05

_S = TypeVar("_S", bound="_ManagedServer")


class ServerError(RuntimeError):
    """A test server could not be started, reached or stopped."""


class MissingBinaryError(ServerError):
    """A server binary (``redis-server``, ``redis-cli``, ``memcached``) is not on ``PATH``."""

    def __init__(self, name: str, debian_package: str) -> None:
        self.name = name
        self.debian_package = debian_package
        super().__init__(
            f"The {name!r} executable was not found on PATH. Install it "
            f"(Debian/Ubuntu: 'apt-get install {debian_package}') and run again."
        )


def require_binary(name: str, debian_package: str) -> str:
    """Return the path of executable ``name``, or raise `MissingBinaryError`.

    ``debian_package`` is the package that provides it; the error message names it.
    """
    path = shutil.which(name)
    if path is None:
        raise MissingBinaryError(name, debian_package)
    return path


def find_free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that nothing listens on right now.

    Another process may take it before you bind it: the servers here retry with a
    new port when that happens.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _find_cluster_port(host: str) -> int:
    """A free port P whose cluster bus port P + 10000 is free too (and below 65536)."""
    for _ in range(200):
        port = random.randint(20000, 55000)
        if _port_is_free(host, port) and _port_is_free(host, port + 10000):
            return port
    raise ServerError(
        f"No free port pair (P, P + 10000) was found on {host} for a Redis Cluster node. "
        "Free some local ports and run again."
    )


# --- a minimal blocking RESP client, so that core needs no Redis client library ---


class _RespError(Exception):
    pass


def _read_reply(stream: Any) -> Any:
    line: bytes = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("The connection closed in the middle of a reply.")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body.decode()
    if kind == b"-":
        raise _RespError(body.decode())
    if kind == b":":
        return int(body)
    if kind == b"$":
        size = int(body)
        if size < 0:
            return None
        data: bytes = stream.read(size + 2)
        return data[:-2].decode()
    if kind == b"*":
        count = int(body)
        return None if count < 0 else [_read_reply(stream) for _ in range(count)]
    raise ConnectionError(f"Unexpected reply type {kind!r}.")


def redis_command(
    host: str,
    port: int,
    *args: str,
    timeout: float = 2.0,
    ssl_context: ssl.SSLContext | None = None,
) -> Any:
    """Send one command to the Redis server at ``host:port`` and return its decoded reply.

    With ``ssl_context``, the connection is made over TLS.
    """
    payload = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        raw = arg.encode()
        payload.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    with contextlib.ExitStack() as stack:
        sock = stack.enter_context(socket.create_connection((host, port), timeout=timeout))
        if ssl_context is not None:
            sock = stack.enter_context(ssl_context.wrap_socket(sock, server_hostname=host))
        sock.sendall(b"".join(payload))
        with sock.makefile("rb") as stream:
            return _read_reply(stream)


def _redis_answers_ping(host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> bool:
    try:
        reply = redis_command(host, port, "PING", timeout=1.0, ssl_context=ssl_context)
        return bool(reply == "PONG")
    except (OSError, _RespError):
        return False


def tls_files(directory: str | None = None) -> TLSFiles:
    """Make a test CA, server and client certificates (``openssl`` must be on ``PATH``).

    The files go into ``directory`` (a new temporary directory by default); delete
    it when done. Pass the result to ``RedisServer(tls=...)``.
    """
    openssl = require_binary("openssl", "openssl")
    return make_tls_files(directory or tempfile.mkdtemp(prefix="traffik-tls-"), openssl)


def _memcached_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(b"version\r\n")
            with sock.makefile("rb") as stream:
                return bool(stream.readline().startswith(b"VERSION"))
    except OSError:
        return False


def _wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(_POLL_S)
    raise ServerError(f"Timed out after {timeout:.0f} s waiting for {what}.")


# --- one server process ---


class _ManagedServer:
    """A server process on one local port, started and stopped through mirakuru."""

    #: The executable, which is also the name of the Debian package that provides it.
    _kind = "server"

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        extra_args: Sequence[str] = (),
    ) -> None:
        self.binary = require_binary(self._kind, self._kind)
        self.host = host
        self._fixed_port = port is not None
        self.port: int = port if port is not None else self._choose_port()
        self.extra_args = tuple(extra_args)
        self._executor: Any = None
        self._tmpdir: str | None = None

    # subclasses define these
    def _command(self) -> list[str]:
        raise NotImplementedError

    def _answers(self) -> bool:
        raise NotImplementedError

    def _choose_port(self) -> int:
        return find_free_port(self.host)

    @property
    def tmpdir(self) -> str:
        """The server's private working directory (created on first start)."""
        if self._tmpdir is None:
            self._tmpdir = tempfile.mkdtemp(prefix=f"traffik-{self._kind}-")
        return self._tmpdir

    @property
    def pid(self) -> int | None:
        """The PID of the running server process, or None."""
        if self._executor is None or self._executor.process is None:
            return None
        pid: int = self._executor.process.pid
        return pid

    def running(self) -> bool:
        """Whether the server process this object started is alive."""
        return self._executor is not None and bool(self._executor.running())

    def start(self: _S) -> _S:
        """Start the server and wait until it answers; return self.

        When the port was chosen automatically and another process took it first, a
        new port is tried (up to a few times).
        """
        if self.running():
            return self
        attempts = 1 if self._fixed_port else _START_ATTEMPTS
        last_error: Exception | None = None
        for attempt in range(attempts):
            if attempt:
                self.port = self._choose_port()
            try:
                self._start_once()
                return self
            except ServerError as exc:
                last_error = exc
        raise ServerError(
            f"The {self._kind} could not be started after {attempts} attempt(s): {last_error}"
        ) from last_error

    def _start_once(self) -> None:
        from mirakuru import TCPExecutor
        from mirakuru.exceptions import AlreadyRunning, ProcessExitedWithError, TimeoutExpired

        executor = TCPExecutor(
            self._command(),
            host=self.host,
            port=self.port,
            timeout=_START_TIMEOUT_S,
            sleep=_POLL_S,
            stdin=None,
            stdout=None,
            stderr=None,
            popen_kwargs={
                "stdin": subprocess.DEVNULL,
                "stdout": subprocess.DEVNULL,
                "stderr": subprocess.DEVNULL,
            },
            cwd=self.tmpdir,
        )
        try:
            executor.start()
        except (AlreadyRunning, ProcessExitedWithError, TimeoutExpired) as exc:
            with contextlib.suppress(Exception):
                executor.kill()
            raise ServerError(
                f"{self._kind} on {self.host}:{self.port} did not start ({exc}).{self._log_tail()}"
            ) from exc
        self._executor = executor
        try:
            _wait_until(self._answers, _START_TIMEOUT_S, f"{self._kind} on port {self.port}")
        except ServerError:
            self.kill()
            raise

    def _log_tail(self) -> str:
        return ""

    def stop(self) -> None:
        """Stop the server gracefully (SIGTERM, then SIGKILL if it lingers)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            from mirakuru.exceptions import ProcessFinishedWithError

            # A server killed earlier, or one that exits with a status of its own on
            # SIGTERM, is stopped all the same.
            with contextlib.suppress(ProcessFinishedWithError):
                executor.stop()

    def kill(self) -> None:
        """Kill the server with SIGKILL, as a crash would (for failure tests)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.kill(sig=signal.SIGKILL)

    def restart(self: _S) -> _S:
        """Stop the server if it runs, wipe its data, and start it again on the same port."""
        self.stop()
        self._reset_data()
        fixed, self._fixed_port = self._fixed_port, True
        try:
            return self.start()
        finally:
            self._fixed_port = fixed

    def _reset_data(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            os.makedirs(self._tmpdir, exist_ok=True)

    def close(self) -> None:
        """Stop the server and delete its working directory."""
        self.stop()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running() else "stopped"
        return f"<{type(self).__name__} {self.host}:{self.port} {state}>"


class RedisServer(_ManagedServer):
    """A private ``redis-server`` on a free local port: no persistence, its own temp dir.

    ``extra_args`` are appended to the command line (e.g. ``("--maxmemory", "10mb")``).
    With ``tls`` (see `tls_files`), the port speaks TLS only (``--tls-port``, no
    plain port), replication uses TLS too, and ``tls_auth_clients`` (``"no"``,
    ``"optional"`` or ``"yes"``) says whether clients must show a certificate.
    """

    _kind = "redis-server"

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        extra_args: Sequence[str] = (),
        tls: TLSFiles | None = None,
        tls_auth_clients: str = "no",
    ) -> None:
        if tls_auth_clients not in {"no", "optional", "yes"}:
            raise ValueError(
                f"tls_auth_clients must be 'no', 'optional' or 'yes', got {tls_auth_clients!r}."
            )
        super().__init__(port, host=host, extra_args=extra_args)
        self.tls = tls
        self.tls_auth_clients = tls_auth_clients

    @property
    def url(self) -> str:
        """``redis://HOST:PORT/0`` (``rediss://`` with TLS)."""
        scheme = "redis" if self.tls is None else "rediss"
        return f"{scheme}://{self.host}:{self.port}/0"

    def _ports(self) -> list[str]:
        if self.tls is None:
            return ["--port", str(self.port)]
        return [
            "--port", "0",
            "--tls-port", str(self.port),
            "--tls-cert-file", self.tls.server_cert,
            "--tls-key-file", self.tls.server_key,
            "--tls-ca-cert-file", self.tls.ca_cert,
            "--tls-auth-clients", self.tls_auth_clients,
            "--tls-replication", "yes",
        ]  # fmt: skip

    def ssl_context(self) -> ssl.SSLContext | None:
        """The context `command` connects with: None without TLS."""
        return None if self.tls is None else self.tls.client_context()

    def _command(self) -> list[str]:
        return [
            self.binary,
            *self._ports(),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", self.tmpdir,
            "--logfile", os.path.join(self.tmpdir, "redis.log"),
            *self.extra_args,
        ]  # fmt: skip

    def _answers(self) -> bool:
        return _redis_answers_ping(self.host, self.port, self.ssl_context())

    def _log_tail(self) -> str:
        try:
            with open(os.path.join(self.tmpdir, "redis.log"), encoding="utf-8") as log:
                lines = log.read().splitlines()[-5:]
        except OSError:
            return ""
        return " Last log lines: " + " | ".join(lines) if lines else ""

    def command(self, *args: str) -> Any:
        """Send one command to this server (a tiny blocking client) and return the reply."""
        return redis_command(self.host, self.port, *args, ssl_context=self.ssl_context())

    @contextlib.contextmanager
    def writes_paused(self, seconds: float = 10.0) -> Iterator[None]:
        """Hold every write command on this server until the block ends (``CLIENT PAUSE``).

        The pause is long, so that no loaded machine outlasts it before the block's
        code has run; leaving the block ends it at once with ``CLIENT UNPAUSE``.
        """
        self.command("CLIENT", "PAUSE", str(int(seconds * 1000)), "WRITE")
        try:
            yield
        finally:
            self.command("CLIENT", "UNPAUSE")

    async def cancel_while_paused(self, call: Awaitable[Any], settle: float = 0.05) -> None:
        """Run ``call`` while writes are paused, cancel it as it waits, check it ended cancelled.

        For tests of what a cancellation leaves behind (a reply still owed on a
        connection, a lock half taken or half released). Raises AssertionError if
        ``call`` finished instead of being cancelled.
        """
        with self.writes_paused():
            task = asyncio.ensure_future(call)
            await asyncio.sleep(settle)  # time to reach the server and wait on the pause
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                return
        raise AssertionError(f"{call!r} finished although writes were paused; nothing to cancel.")


class MemcachedServer(_ManagedServer):
    """A private ``memcached -l HOST -p PORT -U 0`` (TCP only) on a free local port."""

    _kind = "memcached"

    @property
    def url(self) -> str:
        """``memcached://HOST:PORT``."""
        return f"memcached://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        """``HOST:PORT``, as ``MemcachedBackend(servers=[...])`` takes it."""
        return f"{self.host}:{self.port}"

    def _command(self) -> list[str]:
        command = [self.binary, "-l", self.host, "-p", str(self.port), "-U", "0", "-m", "64"]
        # memcached refuses to run as root unless told which user to run as (CI runs as root).
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command += ["-u", "root"]
        return [*command, *self.extra_args]

    def _answers(self) -> bool:
        return _memcached_answers(self.host, self.port)


# --- Redis Cluster ---


class _ClusterNode(RedisServer):
    """A cluster node: its port P must leave the bus port P + 10000 free as well."""

    def _choose_port(self) -> int:
        return _find_cluster_port(self.host)


class RedisClusterServer:
    """A local Redis Cluster: ``masters`` masters with ``replicas_per_master`` replicas each.

    Every node is a `RedisServer` started with ``--cluster-enabled yes`` on a free port
    (whose bus port, port + 10000, is free too). `start` creates the cluster with
    ``redis-cli --cluster create`` and waits until every node reports
    ``cluster_state:ok`` and every replica is in sync. With ``tls`` (see `tls_files`)
    every node speaks TLS only, the cluster bus and replication included
    (``--tls-cluster yes``), and `url` is ``rediss://``.
    """

    def __init__(
        self,
        masters: int = 3,
        replicas_per_master: int = 1,
        *,
        host: str = "127.0.0.1",
        node_timeout_ms: int = 3000,
        extra_args: Sequence[str] = (),
        tls: TLSFiles | None = None,
    ) -> None:
        if masters < 3:
            raise ValueError(f"A Redis Cluster needs at least 3 masters, got {masters}.")
        if replicas_per_master < 0:
            raise ValueError(f"replicas_per_master must be 0 or more, got {replicas_per_master}.")
        self.redis_cli = require_binary("redis-cli", "redis-tools")
        require_binary("redis-server", "redis-server")
        self.host = host
        self.masters_count = masters
        self.replicas_per_master = replicas_per_master
        self.node_timeout_ms = node_timeout_ms
        self.extra_args = tuple(extra_args)
        self.tls = tls
        self._servers: list[RedisServer] = []

    @property
    def nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every node started, masters first as created."""
        return [(s.host, s.port) for s in self._servers]

    @property
    def startup_nodes(self) -> list[dict[str, Any]]:
        """``[{"host": ..., "port": ...}, ...]`` for cluster clients."""
        return [{"host": host, "port": port} for host, port in self.nodes]

    @property
    def url(self) -> str:
        """``redis://HOST:PORT/0`` of the first master (``rediss://`` with TLS)."""
        host, port = self.nodes[0]
        return f"{'redis' if self.tls is None else 'rediss'}://{host}:{port}/0"

    def server(self, host: str, port: int) -> RedisServer:
        """The `RedisServer` running node ``host:port``."""
        for server in self._servers:
            if (server.host, server.port) == (host, port):
                return server
        raise KeyError(f"{host}:{port} is not a node of this cluster.")

    def start(self) -> RedisClusterServer:
        """Start all nodes, create the cluster and wait until it is healthy; return self."""
        if self._servers:
            return self
        total = self.masters_count * (1 + self.replicas_per_master)
        args = (
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            *self.extra_args,
        )  # fmt: skip
        if self.tls is not None:
            args += ("--tls-cluster", "yes")
        try:
            for _ in range(total):
                server = _ClusterNode(host=self.host, extra_args=args, tls=self.tls)
                self._servers.append(server)
                server.start()
            self._create()
            self.wait_until_ok(expected_nodes=total, replicas=True)
        except BaseException:
            self.stop()
            raise
        return self

    def _create(self) -> None:
        addresses = [f"{host}:{port}" for host, port in self.nodes]
        command = [self.redis_cli, "--cluster", "create", *addresses]
        if self.tls is not None:
            tls = self.tls
            command += ["--tls", "--cacert", tls.ca_cert, "--cert", tls.client_cert]
            command += ["--key", tls.client_key]
        command += ["--cluster-replicas", str(self.replicas_per_master), "--cluster-yes"]
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=_START_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            raise ServerError(
                "redis-cli --cluster create failed with status "
                f"{result.returncode}: {result.stdout[-500:]} {result.stderr[-500:]}"
            )

    def _live(self) -> list[RedisServer]:
        return [s for s in self._servers if s.running()]

    def cluster_nodes(self) -> list[dict[str, Any]]:
        """Parsed ``CLUSTER NODES`` as seen by the first live node.

        Each entry has ``id``, ``host``, ``port``, ``flags`` (a set), ``master_id``
        (None for masters) and ``connected``.
        """
        for server in self._live():
            try:
                raw = server.command("CLUSTER", "NODES")
            except (OSError, _RespError):
                continue
            return _parse_cluster_nodes(str(raw))
        raise ServerError("No node of the cluster answers CLUSTER NODES.")

    def masters(self) -> list[tuple[str, int]]:
        """``(host, port)`` of the masters that are currently up and serve slots."""
        return [
            (n["host"], n["port"])
            for n in self.cluster_nodes()
            if "master" in n["flags"] and not n["flags"] & {"fail", "fail?"}
        ]

    def replica_of(self, master: tuple[str, int]) -> tuple[str, int]:
        """``(host, port)`` of a healthy replica of ``master``."""
        nodes = self.cluster_nodes()
        ids = {(n["host"], n["port"]): n["id"] for n in nodes}
        master_id = ids.get(master)
        if master_id is None:
            raise KeyError(f"{master[0]}:{master[1]} is not a node of this cluster.")
        for node in nodes:
            if node["master_id"] == master_id and not node["flags"] & {"fail", "fail?"}:
                return node["host"], node["port"]
        raise KeyError(f"{master[0]}:{master[1]} has no healthy replica.")

    def kill_node(self, host: str, port: int) -> None:
        """SIGKILL one node (for failover tests). Its replica takes over after the node timeout."""
        self.server(host, port).kill()

    def wait_until_ok(
        self,
        timeout: float = 60.0,
        *,
        expected_nodes: int | None = None,
        replicas: bool = False,
    ) -> None:
        """Wait until every live node reports ``cluster_state:ok``.

        With ``expected_nodes``, also until every live node knows that many nodes; with
        ``replicas``, also until every live replica's link to its master is up.
        """

        def healthy() -> bool:
            try:
                for server in self._live():
                    info = _info_fields(server.command("CLUSTER", "INFO"))
                    if info.get("cluster_state") != "ok":
                        return False
                    if expected_nodes is not None and (
                        info.get("cluster_known_nodes") != str(expected_nodes)
                    ):
                        return False
                    if replicas:
                        repl = _info_fields(server.command("INFO", "replication"))
                        if repl.get("role") == "slave" and repl.get("master_link_status") != "up":
                            return False
            except (OSError, _RespError):
                return False
            return True

        _wait_until(healthy, timeout, "the Redis Cluster to report cluster_state:ok")

    def stop(self) -> None:
        """Stop every node this cluster started and delete their directories."""
        servers, self._servers = self._servers, []
        for server in servers:
            with contextlib.suppress(Exception):
                server.close()

    def __enter__(self) -> RedisClusterServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<RedisClusterServer nodes={self.nodes}>"


def _info_fields(raw: Any) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in str(raw).splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _parse_cluster_nodes(raw: str) -> list[dict[str, Any]]:
    nodes = []
    for line in raw.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        address = parts[1].split("@", 1)[0]
        host, _, port = address.rpartition(":")
        nodes.append(
            {
                "id": parts[0],
                "host": host,
                "port": int(port) if port.isdigit() else 0,
                "flags": set(parts[2].split(",")),
                "master_id": None if parts[3] == "-" else parts[3],
                "connected": parts[7] == "connected",
            }
        )
    return nodes


# Built on the classes above, so imported last (import it from here, not from _sentinel).
from traffik.testing._sentinel import RedisSentinelServer  # noqa: E402
