"""The streaming recipe of docs/guide/charging.md, served by a real uvicorn.

The page's ``app.py`` is taken from the page as written. A client that leaves
mid-stream must leave the stream settled to the tokens it was sent, not to the
estimate reserved, nor to the whole answer.
"""

from __future__ import annotations

import asyncio
import re
import sys
import types
import typing
from pathlib import Path

import httpx
import pytest

if typing.TYPE_CHECKING:
    from conftest import ServeApp  # type: ignore[import-not-found]

pytestmark = pytest.mark.asyncio

PAGE = Path(__file__).resolve().parents[1] / "docs" / "guide" / "charging.md"
_BLOCK = re.compile(r'```python title="app.py"\n(.*?)\n```', re.DOTALL)


def recipe_app() -> types.ModuleType:
    match = _BLOCK.search(PAGE.read_text(encoding="utf-8"))
    assert match is not None, "docs/guide/charging.md has no app.py block"
    module = types.ModuleType("charging_recipe_app")
    sys.modules[module.__name__] = module  # pydantic looks models' modules up here
    try:
        exec(compile(match.group(1), str(PAGE), "exec"), module.__dict__)
    finally:
        del sys.modules[module.__name__]
    return module


def remaining(response: httpx.Response) -> int:
    found = re.search(r'"tokens";r=(\d+);', response.headers["RateLimit"])
    assert found is not None, response.headers
    return int(found.group(1))


async def test_a_client_leaving_mid_stream_is_charged_what_it_was_sent(
    serve_app: ServeApp,
) -> None:
    recipe = recipe_app()
    words = 400
    prompt = " ".join(f"w{i}" for i in range(words))
    async with serve_app(recipe.app) as address, httpx.AsyncClient() as http:
        base = f"http://{address}"
        received = 0
        params = {"prompt": prompt, "max_tokens": 500}
        async with http.stream("GET", f"{base}/complete", params=params) as stream:
            assert remaining(stream) == 500  # 1000 - the estimate
            async for chunk in stream.aiter_text():
                received += chunk.count(" ")
                if received >= 5:
                    break  # leave mid-stream: the connection is closed
        # Each probe reserves 1 and uses 1. Bounded by count: the server settles the
        # stream as soon as it notices the client left.
        for probe in range(1, 200):
            answer = await http.get(f"{base}/complete", params={"prompt": "x", "max_tokens": 1})
            left = remaining(answer)  # 1000 - stream's charge - probes (this one included)
            if left != 1000 - 500 - probe:
                break
            await asyncio.sleep(0.02)
        used = 1000 - left - probe
    assert received <= used < words, f"the stream settled {used} tokens, {received} received"


async def test_a_complete_stream_settles_its_exact_count(serve_app: ServeApp) -> None:
    recipe = recipe_app()
    async with serve_app(recipe.app) as address, httpx.AsyncClient() as http:
        base = f"http://{address}"
        answer = await http.get(f"{base}/complete", params={"prompt": "a b c d e f g"})
        assert answer.text == "a b c d e f g "
        assert remaining(answer) == 900
        after = await http.get(f"{base}/complete", params={"prompt": "x", "max_tokens": 10})
        assert remaining(after) == 1000 - 7 - 10
