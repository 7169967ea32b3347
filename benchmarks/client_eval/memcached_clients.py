"""Reproduce the four client defects that ruled out aiomcache, on other memcached clients.

Run from the repository root (the candidates are not dependencies of the project;
install them into the hatch environment first)::

    hatch run uv pip install emcache meta-memcache memcachio
    hatch run python -m benchmarks.client_eval.memcached_clients

It starts a private memcached and, in front of it, a small TCP proxy that can hold
the server's replies back (to cancel a command whose reply is still owed, and to
make a server that stops answering). For every candidate and for traffik's own
client (``ours``) it prints, per check, PASS or FAIL and what the client returned:

1. cancel: ``get a`` is cancelled while its reply is held back; then ``get b`` on the
   same (only) connection must return b's value, not a's.
2. cas: a ``cas`` with a stale token (EXISTS) and one on a deleted key (NOT_FOUND)
   must give results a caller tells apart without parsing an error message.
3. timeout: with the server silent, a command must fail within its timeout (+0.2 s).
4. incr-missing: ``incr`` on a missing key must say "not found" distinguishably
   (None or a dedicated exception), not a generic error.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import typing

from traffik.testing.servers import MemcachedServer

TIMEOUT = 0.3
MARGIN = 0.2


class HoldingProxy:
    """TCP proxy: client bytes go through at once; server bytes wait while ``hold`` is set."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.hold = False
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        loop = asyncio.get_running_loop()
        for coro in (self._pipe(reader, up_writer, False), self._pipe(up_reader, writer, True)):
            task = loop.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, holdable: bool
    ) -> None:
        try:
            while data := await src.read(65536):
                while holdable and self.hold:
                    await asyncio.sleep(0.005)
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            dst.close()


class Adapter(typing.Protocol):
    name: str

    async def open(self, port: int) -> None: ...
    async def close(self) -> None: ...
    async def set(self, key: bytes, value: bytes) -> None: ...
    async def get(self, key: bytes) -> object: ...
    async def gets(self, key: bytes) -> int: ...
    async def cas(self, key: bytes, value: bytes, token: int) -> object: ...
    async def delete(self, key: bytes) -> None: ...
    async def incr(self, key: bytes) -> object: ...


class Ours:
    name = "ours (traffik.memcached._protocol)"

    async def open(self, port: int) -> None:
        from traffik.memcached._protocol import MemcachedClient

        self.c = MemcachedClient(
            "127.0.0.1", port, pool_size=1, timeout=TIMEOUT, connect_timeout=TIMEOUT
        )
        await self.c.connect()

    async def close(self) -> None:
        await self.c.close()

    async def set(self, key: bytes, value: bytes) -> None:
        await self.c.execute(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value), (0,))

    async def get(self, key: bytes) -> object:
        (values,) = await self.c.execute(b"get %s\r\n" % key, (1,))
        entry = typing.cast("dict[bytes, tuple[bytes, int]]", values).get(key)
        return None if entry is None else entry[0]

    async def gets(self, key: bytes) -> int:
        (values,) = await self.c.execute(b"gets %s\r\n" % key, (1,))
        return typing.cast("dict[bytes, tuple[bytes, int]]", values)[key][1]

    async def cas(self, key: bytes, value: bytes, token: int) -> object:
        command = b"cas %s 0 0 %d %d\r\n%s\r\n" % (key, len(value), token, value)
        return (await self.c.execute(command, (0,)))[0]

    async def delete(self, key: bytes) -> None:
        await self.c.execute(b"delete %s\r\n" % key, (0,))

    async def incr(self, key: bytes) -> object:
        return (await self.c.execute(b"incr %s 1\r\n" % key, (0,)))[0]


class Emcache:
    name = "emcache"

    async def open(self, port: int) -> None:
        import emcache

        self.c = await emcache.create_client(
            [emcache.MemcachedHostAddress("127.0.0.1", port)],
            timeout=TIMEOUT,
            max_connections=1,
            min_connections=1,
            connection_timeout=TIMEOUT,
        )

    async def close(self) -> None:
        await self.c.close()

    async def set(self, key: bytes, value: bytes) -> None:
        await self.c.set(key, value)

    async def get(self, key: bytes) -> object:
        item = await self.c.get(key)
        return None if item is None else item.value

    async def gets(self, key: bytes) -> int:
        item = await self.c.gets(key)
        return int(item.cas)

    async def cas(self, key: bytes, value: bytes, token: int) -> object:
        return await self.c.cas(key, value, token)

    async def delete(self, key: bytes) -> None:
        with contextlib.suppress(Exception):
            await self.c.delete(key)

    async def incr(self, key: bytes) -> object:
        return await self.c.increment(key, 1)


class Memcachio:
    name = "memcachio"

    async def open(self, port: int) -> None:
        import memcachio

        self.c = memcachio.Client(
            ("127.0.0.1", port),
            min_connections=1,
            max_connections=1,
            connect_timeout=TIMEOUT,
            read_timeout=TIMEOUT,
        )

    async def close(self) -> None:
        self.c.close() if not asyncio.iscoroutinefunction(self.c.close) else await self.c.close()

    async def set(self, key: bytes, value: bytes) -> None:
        await self.c.set(key, value)

    async def get(self, key: bytes) -> object:
        found = await self.c.get(key)
        return found[key].value if key in found else None

    async def gets(self, key: bytes) -> int:
        found = await self.c.gets(key)
        return int(found[key].cas)  # type: ignore[arg-type]

    async def cas(self, key: bytes, value: bytes, token: int) -> object:
        return await self.c.cas(key, value, token)

    async def delete(self, key: bytes) -> None:
        await self.c.delete(key)

    async def incr(self, key: bytes) -> object:
        return await self.c.incr(key, 1)


class MetaMemcache:
    """meta-memcache has no asyncio API: its blocking calls run in a worker thread."""

    name = "meta-memcache (blocking; run in asyncio.to_thread)"

    async def open(self, port: int) -> None:
        import meta_memcache as mm

        self.mm = mm
        self.c = mm.CacheClient.cache_client_from_servers(
            servers=[mm.ServerAddress(host="127.0.0.1", port=port)],
            connection_pool_factory_fn=mm.connection_pool_factory_builder(
                initial_pool_size=1,
                max_pool_size=1,
                connection_timeout=TIMEOUT,
                recv_timeout=TIMEOUT,
            ),
        )

    async def close(self) -> None:
        pass

    async def set(self, key: bytes, value: bytes) -> None:
        await asyncio.to_thread(self.c.set, key.decode(), value, 0)

    async def get(self, key: bytes) -> object:
        return await asyncio.to_thread(self.c.get, key.decode())

    async def gets(self, key: bytes) -> int:
        _, token = await asyncio.to_thread(self.c.get_cas, key.decode())
        return int(token)  # type: ignore[arg-type]

    async def cas(self, key: bytes, value: bytes, token: int) -> object:
        return await asyncio.to_thread(self.c.set, key.decode(), value, 0, False, token)

    async def delete(self, key: bytes) -> None:
        await asyncio.to_thread(self.c.delete, key.decode())

    async def incr(self, key: bytes) -> object:
        return await asyncio.to_thread(self.c.delta_and_get, key.decode(), 1)


async def _outcome(call: typing.Awaitable[object]) -> object:
    try:
        return await call
    except Exception as exc:  # what the caller sees is the point of the check
        return exc


def _show(value: object) -> str:
    if isinstance(value, BaseException):
        return f"raised {type(value).__module__}.{type(value).__qualname__}({str(value)!r})"
    return f"returned {value!r}"


async def check_cancel(a: Adapter, proxy: HoldingProxy) -> tuple[bool, str]:
    await a.set(b"eval-a", b"value-of-a")
    await a.set(b"eval-b", b"value-of-b")
    proxy.hold = True
    first = await _outcome(asyncio.wait_for(a.get(b"eval-a"), 0.05))
    proxy.hold = False
    await asyncio.sleep(0.05)
    second = await _outcome(a.get(b"eval-b"))
    ok = second == b"value-of-b"
    return ok, f"cancelled get a: {_show(first)}; then get b: {_show(second)}"


async def check_cas(a: Adapter) -> tuple[bool, str]:
    await a.set(b"eval-c", b"one")
    token = await a.gets(b"eval-c")
    await a.set(b"eval-c", b"two")
    exists = await _outcome(a.cas(b"eval-c", b"three", token))
    await a.delete(b"eval-c")
    not_found = await _outcome(a.cas(b"eval-c", b"three", token))
    kinds_differ = type(exists) is not type(not_found) and not (
        isinstance(not_found, type(exists)) or isinstance(exists, type(not_found))
    )
    ok = (exists != not_found and not isinstance(exists, BaseException)) or kinds_differ
    return ok, f"stale token (EXISTS): {_show(exists)}; deleted key (NOT_FOUND): {_show(not_found)}"


async def check_timeout(a: Adapter, proxy: HoldingProxy) -> tuple[bool, str]:
    proxy.hold = True
    started = time.perf_counter()
    try:
        result = await _outcome(asyncio.wait_for(a.get(b"eval-a"), 5.0))
    finally:
        elapsed = time.perf_counter() - started
        proxy.hold = False
    ok = isinstance(result, Exception) and elapsed <= TIMEOUT + MARGIN
    return ok, f"silent server, timeout {TIMEOUT} s: {_show(result)} after {elapsed:.3f} s"


async def check_incr_missing(a: Adapter) -> tuple[bool, str]:
    await a.delete(b"eval-missing")
    result = await _outcome(a.incr(b"eval-missing"))
    ok = result is None or result == b"NOT_FOUND" or "NotFound" in type(result).__name__
    return ok, f"incr on a missing key: {_show(result)}"


async def evaluate(adapter: Adapter, server: MemcachedServer) -> list[tuple[str, bool, str]]:
    proxy = HoldingProxy(server.port)
    await proxy.start()
    rows: list[tuple[str, bool, str]] = []
    try:
        await adapter.open(proxy.port)
        for name, check in (
            ("cancel", lambda: check_cancel(adapter, proxy)),
            ("cas", lambda: check_cas(adapter)),
            ("timeout", lambda: check_timeout(adapter, proxy)),
            ("incr-missing", lambda: check_incr_missing(adapter)),
        ):
            try:
                ok, detail = await check()
            except Exception as exc:
                ok, detail = False, f"the check itself failed: {_show(exc)}"
            rows.append((name, ok, detail))
            await asyncio.sleep(TIMEOUT)  # let a held-back reply drain before the next check
    except Exception as exc:
        rows.append(("open", False, _show(exc)))
    finally:
        with contextlib.suppress(Exception):
            await adapter.close()
        await proxy.close()
    return rows


async def main() -> None:
    with MemcachedServer() as server:
        for adapter in (Ours(), Emcache(), Memcachio(), MetaMemcache()):
            rows = await evaluate(adapter, server)
            verdict = "PASSES" if all(ok for _, ok, _ in rows) else "FAILS"
            print(f"\n== {adapter.name}: {verdict}")
            for name, ok, detail in rows:
                print(f"  {'PASS' if ok else 'FAIL'} {name:13} {detail}")


if __name__ == "__main__":
    asyncio.run(main())
