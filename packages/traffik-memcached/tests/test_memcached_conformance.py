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
