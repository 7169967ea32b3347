"""Deleting a namespace: SCAN (never KEYS) on every master, UNLINK page by page."""

from __future__ import annotations

import typing

from redis.asyncio import RedisCluster
from traffik.redis._keys import scan_pattern

if typing.TYPE_CHECKING:
    from traffik.redis._connection import Client

__all__ = ["SCAN_BATCH", "delete_namespace"]

#: Keys asked for per SCAN call, and so deleted per UNLINK at most.
SCAN_BATCH = 1000


async def delete_namespace(client: Client, namespace: str) -> None:
    """Delete every key under ``namespace:`` without blocking the server on a full scan."""
    pattern = scan_pattern(namespace)
    if isinstance(client, RedisCluster):
        for node in client.get_primaries():
            cursor = 0
            while True:
                cursors, keys = await client.scan(
                    cursor, match=pattern, count=SCAN_BATCH, target_nodes=node
                )
                cursor = typing.cast("dict[str, int]", cursors)[node.name]
                if keys:
                    # UNLINK splits the keys by slot on a cluster.
                    await client.unlink(*keys)
                if cursor == 0:
                    break
        return
    cursor = 0
    while True:
        cursor, keys = await client.scan(cursor, match=pattern, count=SCAN_BATCH)
        if keys:
            await client.unlink(*keys)
        if cursor == 0:
            break
