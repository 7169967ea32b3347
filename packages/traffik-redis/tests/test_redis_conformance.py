"""RedisBackend passes the backend conformance kit on a single node and on a cluster."""

from __future__ import annotations

import pytest

from traffik.redis import RedisBackend
from traffik.testing import BackendConformance
from traffik.testing.servers import RedisClusterServer, RedisServer


@pytest.mark.redis
class TestRedisConformance(BackendConformance):
    @pytest.fixture(autouse=True)
    def _server(self, redis_server: RedisServer) -> None:
        self.server = redis_server

    def make_backend(self, namespace: str) -> RedisBackend:
        return RedisBackend(self.server.url, namespace=namespace)


@pytest.mark.cluster
class TestRedisClusterConformance(BackendConformance):
    @pytest.fixture(autouse=True)
    def _cluster(self, redis_cluster: RedisClusterServer) -> None:
        self.cluster = redis_cluster

    def make_backend(self, namespace: str) -> RedisBackend:
        return RedisBackend(self.cluster.url, namespace=namespace, cluster=True)
