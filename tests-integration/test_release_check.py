"""``.ci/release_check.py`` fails loudly and always stops the index it started.

The full check (build, upload, install from the local index) runs in CI through
``hatch run release-check``; here its failure path runs against a real pypiserver with
the slow steps replaced, so a broken step is shown to exit 1 with its reason, and the
index process to be gone afterwards.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def release_check() -> Iterator[types.ModuleType]:
    spec = importlib.util.spec_from_file_location(
        "release_check", ROOT / ".ci" / "release_check.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["release_check"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("release_check", None)


def test_a_failing_step_exits_1_with_its_reason_and_stops_the_index(
    release_check: types.ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    started: list[object] = []
    real_start = release_check.Index.start

    def start(index: object) -> None:
        real_start(index)
        started.append(index)

    def broken_install(*args: object) -> None:
        raise release_check.CheckFailed("traffik-redis: imports failed (simulated)")

    monkeypatch.setattr(release_check, "build", lambda out: [])
    monkeypatch.setattr(release_check, "check_files", lambda files: None)
    monkeypatch.setattr(release_check.Index, "start", start)
    monkeypatch.setattr(release_check.Index, "upload", lambda self, files: None)
    monkeypatch.setattr(release_check, "check_installs", broken_install)

    assert release_check.main() == 1
    captured = capsys.readouterr()
    assert "RELEASE CHECK FAILED: traffik-redis: imports failed (simulated)" in captured.err
    [index] = started
    process = index.process  # type: ignore[attr-defined]
    assert process is not None, "the index was started"
    assert process.poll() is not None, "the index must be stopped after a failure"
    assert "stopped pypiserver" in captured.out


def test_free_port_is_on_loopback_and_unused(release_check: types.ModuleType) -> None:
    import socket

    port = release_check.free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))  # nothing holds it
