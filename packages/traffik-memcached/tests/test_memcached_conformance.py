"""traffik-memcached passes the backend conformance kit against a real memcached."""

from __future__ import annotations

import pytest

from traffik.memcached import MemcachedBackend
from traffik.testing import BackendConformance
from traffik.testing.servers import MemcachedServer

pytestmark = pytest.mark.memcached


class TestMemcachedConformance(BackendConformance):
    @pytest.fixture(autouse=True)
    def _server(self, memcached_server: MemcachedServer) -> None:
        self.server = memcached_server

    def make_backend(self, namespace: str) -> MemcachedBackend:
        return MemcachedBackend(self.server.host, self.server.port, namespace=namespace)


class TestMemcachedPoolConformance(BackendConformance):
    """The same kit on a pool of three servers (keys spread by rendezvous hashing)."""

    @pytest.fixture(autouse=True)
    def _servers(self, memcached_pool: list[MemcachedServer]) -> None:
        self.servers = [server.address for server in memcached_pool]

    def make_backend(self, namespace: str) -> MemcachedBackend:
        return MemcachedBackend(servers=self.servers, namespace=namespace)
