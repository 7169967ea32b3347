"""Under load, exact: a burst on a healthy server is never mistaken for an outage.

The scenario of issue 14 (benchmarks/burst.py): a FastAPI route throttled at
50/day with SlidingWindowLogStrategy on a backend with its default failure
policy, one client firing requests at once, bounded by count. Every run admits
exactly the limit, answers nothing with a 5xx, and emits no backend_error,
fallback, overload or circuit event: the server decided every request.
"""

from __future__ import annotations

import typing
import uuid

import pytest

from benchmarks.burst import BackendSpec, burst, burst_in_processes

LIMIT = 50
QUIET = ("backend_error", "fallback", "overload", "circuit_open", "circuit_half_open")


@pytest.fixture(params=["redis", "cluster", "memcached"])
def spec(request: pytest.FixtureRequest) -> BackendSpec:
    kind = request.param
    if kind == "redis":
        pytest.importorskip("traffik.redis")
        return ("redis", request.getfixturevalue("redis_url"))
    if kind == "cluster":
        pytest.importorskip("traffik.redis")
        return ("cluster", request.getfixturevalue("redis_cluster").url)
    pytest.importorskip("traffik.memcached")
    server = request.getfixturevalue("memcached_server")
    return ("memcached", f"{server.host}:{server.port}")


def check(counts: typing.Mapping[str, int], requests: int) -> None:
    assert counts.get("status:200", 0) == LIMIT, counts
    assert counts.get("status:200", 0) + counts.get("status:429", 0) == requests, counts
    for kind in QUIET:
        assert counts.get(f"event:{kind}", 0) == 0, (kind, counts)


def test_1000_concurrent_requests_in_one_process_admit_exactly_the_limit(
    spec: BackendSpec,
) -> None:
    counts = burst(spec, f"load-{uuid.uuid4().hex[:8]}", n=1000, limit=LIMIT)
    check(counts, 1000)


@pytest.mark.slow
def test_3_processes_x_300_concurrent_requests_admit_exactly_the_limit(spec: BackendSpec) -> None:
    results = burst_in_processes(spec, f"load-{uuid.uuid4().hex[:8]}", 3, n=300, limit=LIMIT)
    total: dict[str, int] = {}
    for counts in results:
        for name, value in counts.items():
            total[name] = total.get(name, 0) + value
    check(total, 900)
