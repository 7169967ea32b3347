"""Every Python block of docs/readme/50-memcached.md runs as written, against the test server."""

from __future__ import annotations

import pathlib
import re

import pytest

from traffik.testing.servers import MemcachedServer

pytestmark = pytest.mark.memcached

DOC = pathlib.Path(__file__).resolve().parents[3] / "docs" / "readme" / "50-memcached.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_the_guide_has_examples() -> None:
    assert len(BLOCKS) >= 6
    assert "BENCH_TABLE" not in DOC.read_text(encoding="utf-8")


@pytest.mark.parametrize("source", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_block_runs(source: str, memcached_server: MemcachedServer) -> None:
    # Blocks talk to "localhost":11211 (the test server); a pool example only builds.
    assert '"localhost"' in source or "servers=" in source or "MemcachedBackend" not in source
    assert "asyncio.run(" not in source or '"localhost"' in source
    local = source.replace('"localhost"', repr(memcached_server.host)).replace(
        "11211", str(memcached_server.port)
    )
    namespace: dict[str, object] = {"__name__": "docs_example"}
    exec(compile(local, str(DOC), "exec"), namespace)
