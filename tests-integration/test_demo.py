"""The demo (the main job) runs, and prints what the strategies really did."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from examples import demo

ROOT = Path(__file__).resolve().parents[1]


def test_in_memory_demo_is_deterministic(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main([]) == 0
    out = capsys.readouterr().out
    rows = {
        line.split("|")[0].strip(): [c.strip() for c in line.split("|")]
        for line in out.splitlines()
        if line.startswith("/")
    }
    # Columns: route | 200 | 429 | first Retry-After | RateLimit (last).
    # 30 requests at 10/s against 5/s: a fixed window admits 5 per second, 15 in 3 s.
    assert rows["/strategies/fixed-window"][1:3] == ["15", "15"]
    assert rows["/strategies/sliding-log"][1:3] == ["15", "15"]
    # A token bucket of 10 admits its burst, then the refill: more than the windows.
    assert int(rows["/strategies/token-bucket"][1]) > 15
    # GCRA with burst 1 spaces requests: every other one at 10/s.
    assert rows["/strategies/gcra"][1] == "15"
    assert '"gcra";r=0;t=1' in rows["/strategies/gcra"][4]
    # Each row sums to the 30 requests sent, and fits a docs code block (88 columns).
    assert all(int(row[1]) + int(row[2]) == 30 for row in rows.values())
    assert max(len(line.rstrip()) for line in out.splitlines()) <= 88
    assert "█·█·█·█·█·|" in out
    assert "WebSocket /ws, 5 messages against 3/s: ok, ok, ok, throttled, throttled" in out


@pytest.mark.redis
def test_demo_runs_on_redis(redis_server, capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--backend", redis_server.url, "--requests", "12", "--gap-ms", "50"]) == 0
    out = capsys.readouterr().out
    assert "real time" in out
    assert "/strategies/sliding-log" in out


@pytest.mark.memcached
def test_demo_runs_on_memcached(memcached_server, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"memcached://{memcached_server.host}:{memcached_server.port}"
    assert demo.main(["--backend", url, "--requests", "12", "--gap-ms", "50"]) == 0
    assert "/strategies/gcra" in capsys.readouterr().out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_serve_answers_curl_like_requests() -> None:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "examples.demo", "--serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/strategies/gcra"
        deadline = time.monotonic() + 30
        first = None
        while time.monotonic() < deadline:
            try:
                first = httpx.get(url, timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert first is not None, "the demo server did not answer within 30 s"
        second = httpx.get(url, timeout=2)
        assert first.status_code == 200
        # The configured 5/s, not the burst of 1 (issue 17: q=1;w=1 read as one per second).
        assert first.headers["ratelimit-policy"] == '"gcra";q=5;w=1'
        assert first.headers["ratelimit"] == '"gcra";r=0;t=1'
        assert second.status_code == 429
        assert int(second.headers["retry-after"]) >= 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)
