"""The real-server helpers of traffik.testing.servers, against real processes."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import pytest

from traffik.testing.servers import (
    MemcachedServer,
    MissingBinaryError,
    RedisClusterServer,
    RedisServer,
    ServerError,
    find_free_port,
    redis_command,
    require_binary,
)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child we already reaped is gone; a zombie would still answer kill(0).
    return True


def _memcached(server: MemcachedServer, line: bytes) -> bytes:
    with socket.create_connection((server.host, server.port), timeout=2) as sock:
        sock.sendall(line)
        with sock.makefile("rb") as stream:
            return stream.readline()


def _wait(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_require_binary_names_the_debian_package() -> None:
    with pytest.raises(MissingBinaryError, match="apt-get install some-debian-pkg"):
        require_binary("traffik-no-such-binary", "some-debian-pkg")


def test_require_binary_returns_a_path() -> None:
    assert os.path.isabs(require_binary("sh", "dash"))


def test_find_free_port_can_be_bound() -> None:
    port = find_free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


@pytest.mark.redis
def test_session_redis_server_answers(redis_server: RedisServer, redis_url: str) -> None:
    assert redis_server.running()
    assert redis_url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis_server.command("PING") == "PONG"
    assert redis_server.command("CONFIG", "GET", "save") == ["save", ""]
    assert redis_server.command("CONFIG", "GET", "appendonly") == ["appendonly", "no"]


@pytest.mark.redis
def test_redis_kill_then_restart_on_the_same_port_with_empty_data(
    make_redis_server: Callable[..., RedisServer],
) -> None:
    server = make_redis_server()
    port, pid = server.port, server.pid
    assert pid is not None
    assert server.command("SET", "k", "v") == "OK"

    server.kill()
    assert not server.running()
    assert not _pid_alive(pid)
    with pytest.raises(OSError):
        redis_command(server.host, port, "PING", timeout=0.5)

    server.restart()
    assert server.port == port
    assert server.pid != pid
    assert server.command("PING") == "PONG"
    assert server.command("GET", "k") is None


@pytest.mark.redis
def test_redis_restart_while_running_empties_it(
    make_redis_server: Callable[..., RedisServer],
) -> None:
    server = make_redis_server()
    server.command("SET", "k", "v")
    server.restart()
    assert server.command("DBSIZE") == 0


@pytest.mark.redis
def test_redis_stop_ends_only_its_process_and_close_removes_its_dir(
    make_redis_server: Callable[..., RedisServer],
) -> None:
    first = make_redis_server()
    second = make_redis_server()
    assert first.port != second.port
    pid = first.pid
    assert pid is not None
    tmpdir = first.tmpdir

    first.close()
    assert not _pid_alive(pid)
    assert not os.path.exists(tmpdir)
    assert second.command("PING") == "PONG"


@pytest.mark.redis
def test_redis_on_a_taken_port_fails_with_a_clear_error(
    redis_server: RedisServer,
) -> None:
    with pytest.raises(ServerError, match="could not be started"):
        RedisServer(redis_server.port).start()


@pytest.mark.redis
def test_redis_context_manager_stops() -> None:
    with RedisServer(extra_args=("--maxmemory", "10mb")) as server:
        assert server.command("CONFIG", "GET", "maxmemory") == ["maxmemory", "10485760"]
        pid = server.pid
    assert pid is not None
    assert not server.running()
    assert not _pid_alive(pid)


@pytest.mark.memcached
def test_memcached_kill_then_restart_on_the_same_port(
    make_memcached_server: Callable[..., MemcachedServer],
    memcached_server: MemcachedServer,
) -> None:
    assert _memcached(memcached_server, b"version\r\n").startswith(b"VERSION")
    server = make_memcached_server()
    port = server.port
    assert _memcached(server, b"set k 0 0 1\r\nv\r\n") == b"STORED\r\n"

    server.kill()
    assert not server.running()
    with pytest.raises(OSError):
        socket.create_connection((server.host, port), timeout=0.5).close()

    server.restart()
    assert server.port == port
    assert _memcached(server, b"get k\r\n") == b"END\r\n"


@pytest.mark.redis
@pytest.mark.cluster
def test_session_cluster_is_healthy(redis_cluster: RedisClusterServer) -> None:
    assert len(redis_cluster.nodes) == 6
    assert redis_cluster.startup_nodes[0] == {
        "host": redis_cluster.nodes[0][0],
        "port": redis_cluster.nodes[0][1],
    }
    for host, port in redis_cluster.nodes:
        info = redis_command(host, port, "CLUSTER", "INFO")
        assert "cluster_state:ok" in info
        assert "cluster_slots_assigned:16384" in info
    masters = redis_cluster.masters()
    assert len(masters) == 3
    assert redis_cluster.url == "redis://{}:{}/0".format(*redis_cluster.nodes[0])
    assert redis_cluster.nodes[0] in masters
    replicas = {redis_cluster.replica_of(master) for master in masters}
    assert len(replicas) == 3
    assert not replicas & set(masters)


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.cluster
def test_cluster_failover_promotes_the_replica(
    make_redis_cluster: Callable[..., RedisClusterServer],
) -> None:
    cluster = make_redis_cluster()
    master = cluster.masters()[0]
    replica = cluster.replica_of(master)

    cluster.kill_node(*master)
    assert _wait(lambda: replica in cluster.masters())
    cluster.wait_until_ok()
    assert len(cluster.masters()) == 3
    assert master not in cluster.masters()


def test_cluster_needs_three_masters() -> None:
    with pytest.raises(ValueError, match="at least 3 masters"):
        RedisClusterServer(masters=2)
