"""Every Python block of docs/readme/40-redis.md runs as written, against the test server."""

from __future__ import annotations

import pathlib
import re

import pytest

from traffik.testing.servers import RedisServer

DOC = pathlib.Path(__file__).resolve().parents[3] / "docs" / "readme" / "40-redis.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)

pytestmark = pytest.mark.redis


def test_the_guide_has_examples() -> None:
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("source", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_block_runs(source: str, redis_server: RedisServer) -> None:
    code = source.replace("redis://localhost:6379/0", redis_server.url)
    code = code.replace(
        'host="localhost", port=6379', f'host="{redis_server.host}", port={redis_server.port}'
    )
    namespace: dict[str, object] = {"__name__": "docs_example"}
    exec(compile(code, str(DOC), "exec"), namespace)
