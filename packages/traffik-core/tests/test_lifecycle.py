"""traffik.lifecycle: the observer and span fire status and end exactly once, at the right time."""

from __future__ import annotations

import asyncio
import logging
import typing

import pytest

from traffik import lifecycle
from traffik.lifecycle import Lifecycle, LifecycleObserver, Outcome, attach, observe, span

pytestmark = pytest.mark.asyncio

Message = dict[str, typing.Any]


class Peer:
    """The server side of one connection: scripted incoming messages, recorded sends."""

    def __init__(self, *incoming: Message, then_block: bool = True) -> None:
        self.incoming: asyncio.Queue[Message] = asyncio.Queue()
        for message in incoming:
            self.incoming.put_nowait(message)
        self.sent: list[Message] = []
        self.reads = 0
        self.fail_send: type[BaseException] | None = None

    async def receive(self) -> Message:
        self.reads += 1
        return await self.incoming.get()

    async def send(self, message: Message) -> None:
        if self.fail_send is not None:
            raise self.fail_send()
        self.sent.append(message)


def http_scope() -> dict[str, typing.Any]:
    return {"type": "http", "method": "GET", "path": "/", "headers": []}


def ws_scope() -> dict[str, typing.Any]:
    return {"type": "websocket", "path": "/ws", "headers": []}


class Recorder:
    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.ends: list[tuple[int | None, Outcome]] = []
        self.ended = asyncio.Event()

    def register(self, scope: typing.Any) -> Lifecycle:
        lc = attach(scope)
        lc.on_status(self.statuses.append)
        lc.on_end(self.on_end)
        return lc

    async def on_end(self, status: int | None, outcome: Outcome) -> None:
        self.ends.append((status, outcome))
        self.ended.set()


START = {"type": "http.response.start", "status": 200, "headers": []}
BODY = {"type": "http.request", "body": b"", "more_body": False}


async def test_a_response_ends_complete_after_its_last_chunk() -> None:
    rec = Recorder()
    seen_at_chunk: list[int] = []

    async def app(scope: typing.Any, receive: typing.Any, send: typing.Any) -> None:
        rec.register(scope)
        await send(START)
        for _ in range(3):
            await send({"type": "http.response.body", "body": b"x", "more_body": True})
            seen_at_chunk.append(len(rec.ends))
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        assert rec.ends == [(200, Outcome.COMPLETE)]

    peer = Peer(BODY)
    await observe(app, http_scope(), peer.receive, peer.send)
    assert rec.statuses == [200]
    assert seen_at_chunk == [0, 0, 0]
    assert rec.ends == [(200, Outcome.COMPLETE)]


async def test_status_callbacks_run_before_the_start_is_sent() -> None:
    peer = Peer(BODY)
    order: list[str] = []

    async def app(scope: typing.Any, receive: typing.Any, send: typing.Any) -> None:
        attach(scope).on_status(
            lambda status: order.append(f"status {status} sent={len(peer.sent)}")
        )
        await send({**START, "status": 404})
        await send({"type": "http.response.body", "body": b""})

    await observe(app, http_scope(), peer.receive, peer.send)
    assert order == ["status 404 sent=0"]


@pytest.mark.parametrize(("sends_start", "status"), [(False, None), (True, 200)])
async def test_an_app_raising_ends_raised_with_the_status_so_far(
    sends_start: bool, status: int | None
) -> None:
    rec = Recorder()

    async def app(scope: typing.Any, receive: typing.Any, send: typing.Any) -> None:
        rec.register(scope)
        if sends_start:
            await send(START)
        raise RuntimeError("boom")

    peer = Peer(BODY)
    with pytest.raises(RuntimeError):
        await observe(app, http_scope(), peer.receive, peer.send)
    assert rec.ends == [(status, Outcome.RAISED)]


async def test_an_app_returning_without_finishing_ends_raised() -> None:
    rec = Recorder()

    async def app(scope: typing.Any, receive: typing.Any, send: typing.Any) -> None:
        rec.register(scope)
        await send(START)

    peer = Peer(BODY)
    await observe(app, http_scope(), peer.receive, peer.send)
    assert rec.ends == [(200, Outcome.RAISED)]


async def test_a_disconnect_read_by_the_app_ends_disconnected_once() -> None:
    rec = Recorder()

    async def app(scope: typing.Any, receive: typing.Any, send: typing.Any) -> None:
        rec.register(scope)
        assert (await receive())["type"] == "http.request"
        assert (await receive())["type"] == "http.disconnect"
        assert rec.ends == [(None, Outcome.DISCONNECTED)]
        await send(START)
        await send({"type": "http.response.body", "body": b""})

    peer = Peer(BODY, {"type": "http.disconnect"})
    await observe(app, http_scope(), peer.receive, peer.send)
    assert rec.ends == [(None, Outcome.DISCONNECTED)]


async def test_a_send_failing_with_oserror_ends_disconnected() -> None:
    rec = Recorder()

    async def app(scope: typing.Any, receive: typing.Any, send: typing.Any) -> None:
        rec.register(scope)
        await send(START)
        peer.fail_send = ConnectionResetError
        await send({"type": "http.response.body", "body": b"x", "more_body": True})

    peer = Peer(BODY)
    with pytest.raises(ConnectionResetError):
        await observe(app, http_scope(), peer.receive, peer.send)
    assert rec.ends == [(200, Outcome.DISCONNECTED)]


async def test_watch_disconnect_notices_a_client_leaving_a_busy_app() -> None:
    rec = Recorder()
    release = asyncio.Event()
    bodies: list[bytes] = []

    async def app(scope: typing.Any, receive: typing.Any, send: typing.Any) -> None:
        rec.register(scope).watch_disconnect()
        await release.wait()  # busy: never reads while the client leaves
        message = await receive()  # the body is still there, read ahead by the pump
        bodies.append(message["body"])
        assert (await receive())["type"] == "http.disconnect"

    peer = Peer({"type": "http.request", "body": b"payload", "more_body": False})
    task = asyncio.ensure_future(observe(app, http_scope(), peer.receive, peer.send))
    await asyncio.sleep(0)
    assert rec.ends == []
    peer.incoming.put_nowait({"type": "http.disconnect"})
    await asyncio.wait_for(rec.ended.wait(), 5)
    assert rec.ends == [(None, Outcome.DISCONNECTED)]
    release.set()
    await asyncio.wait_for(task, 5)
    assert bodies == [b"payload"]


async def test_the_pump_reads_an_upload_at_most_one_message_ahead() -> None:
    chunks = [{"type": "http.request", "body": b"%d" % n, "more_body": n < 4} for n in range(5)]
    peer = Peer(*chunks)
    reads_while_busy: list[int] = []
    got: list[bytes] = []
    release = asyncio.Event()

    async def app(scope: typing.Any, receive: typing.Any, send: typing.Any) -> None:
        attach(scope).watch_disconnect()
        await release.wait()
        reads_while_busy.append(peer.reads)
        while True:
            message = await receive()
            got.append(message["body"])
            if not message["more_body"]:
                break
        await send(START)
        await send({"type": "http.response.body", "body": b""})

    task = asyncio.ensure_future(observe(app, http_scope(), peer.receive, peer.send))
    for _ in range(10):
        await asyncio.sleep(0)
    release.set()
    await asyncio.wait_for(task, 5)
    assert reads_while_busy == [1]
    assert got == [b"0", b"1", b"2", b"3", b"4"]


async def test_a_websocket_holds_until_it_closes() -> None:
    rec = Recorder()
    steps: list[int] = []

    async def app(scope: typing.Any, receive: typing.Any, send: typing.Any) -> None:
        rec.register(scope)
        await receive()
        await send({"type": "websocket.accept"})
        steps.append(len(rec.ends))
        await send({"type": "websocket.close", "code": 1000})

    peer = Peer({"type": "websocket.connect"})
    await observe(app, ws_scope(), peer.receive, peer.send)
    assert steps == [0]
    assert rec.statuses == [101]
    assert rec.ends == [(101, Outcome.COMPLETE)]


async def test_a_websocket_client_leaving_ends_disconnected() -> None:
    rec = Recorder()

    async def app(scope: typing.Any, receive: typing.Any, send: typing.Any) -> None:
        rec.register(scope)
        await receive()
        await send({"type": "websocket.accept"})
        await receive()

    peer = Peer({"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1001})
    await observe(app, ws_scope(), peer.receive, peer.send)
    assert rec.ends == [(101, Outcome.DISCONNECTED)]


@pytest.mark.parametrize("close", [True, False])
async def test_a_websocket_closed_before_accept_reads_403_and_returning_ends_complete(
    close: bool,
) -> None:
    rec = Recorder()

    async def app(scope: typing.Any, receive: typing.Any, send: typing.Any) -> None:
        rec.register(scope)
        if close:
            await send({"type": "websocket.close", "code": 1013})

    peer = Peer({"type": "websocket.connect"})
    await observe(app, ws_scope(), peer.receive, peer.send)
    assert rec.ends == [(403 if close else None, Outcome.COMPLETE)]


async def test_nested_observers_share_one_lifecycle() -> None:
    rec = Recorder()

    async def app(scope: typing.Any, receive: typing.Any, send: typing.Any) -> None:
        rec.register(scope)
        await send(START)
        await send({"type": "http.response.body", "body": b""})

    peer = Peer(BODY)
    await LifecycleObserver(LifecycleObserver(app))(http_scope(), peer.receive, peer.send)
    assert rec.ends == [(200, Outcome.COMPLETE)]
    assert rec.statuses == [200]


async def test_other_scope_types_pass_through() -> None:
    scope: dict[str, typing.Any] = {"type": "lifespan"}
    calls: list[str] = []

    async def app(scope: typing.Any, receive: typing.Any, send: typing.Any) -> None:
        calls.append(scope["type"])

    peer = Peer()
    await observe(app, scope, peer.receive, peer.send)
    assert calls == ["lifespan"]
    assert "state" not in scope


async def test_span_ends_by_how_the_block_exits() -> None:
    cases: list[tuple[BaseException | None, Outcome]] = [
        (None, Outcome.COMPLETE),
        (RuntimeError("boom"), Outcome.RAISED),
        (ConnectionResetError(), Outcome.DISCONNECTED),
    ]
    for error, outcome in cases:
        rec = Recorder()
        scope = http_scope()
        with pytest.raises(type(error)) if error is not None else _no_error():
            async with span(scope) as lc:
                assert lc is rec.register(scope)
                assert not lc.observed
                if error is not None:
                    raise error
        assert rec.ends == [(None, outcome)]


async def test_span_inside_an_observer_leaves_the_end_to_it() -> None:
    rec = Recorder()
    order: list[str] = []

    async def app(scope: typing.Any, receive: typing.Any, send: typing.Any) -> None:
        async with span(scope) as lc:
            assert lc.observed
            rec.register(scope)
            await send(START)
            await send({"type": "http.response.body", "body": b""})
            order.append(f"ends={len(rec.ends)}")
        order.append("span exited")

    peer = Peer(BODY)
    await observe(app, http_scope(), peer.receive, peer.send)
    assert order == ["ends=1", "span exited"]
    assert rec.ends == [(200, Outcome.COMPLETE)]


async def test_a_failing_callback_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rec = Recorder()
    scope = http_scope()

    def broken(status: int | None, outcome: Outcome) -> None:
        raise ValueError("broken callback")

    attach(scope).on_end(broken)
    rec.register(scope)
    with caplog.at_level(logging.ERROR, logger="traffik.lifecycle"):
        async with span(scope):
            pass
    assert rec.ends == [(None, Outcome.COMPLETE)]
    assert "broken callback" in caplog.text


async def test_end_callbacks_survive_a_cancelled_request() -> None:
    finished = asyncio.Event()
    started = asyncio.Event()

    async def slow_release(status: int | None, outcome: Outcome) -> None:
        started.set()
        await asyncio.sleep(0.01)
        finished.set()

    scope = http_scope()

    async def request() -> None:
        async with span(scope) as lc:
            lc.on_end(slow_release)
            await asyncio.Event().wait()

    task = asyncio.ensure_future(request())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(finished.wait(), 5)
    assert attach(scope).outcome is Outcome.RAISED


async def test_a_callback_registered_after_the_end_is_called() -> None:
    scope = http_scope()
    async with span(scope):
        pass
    rec = Recorder()
    rec.register(scope)
    await asyncio.wait_for(rec.ended.wait(), 5)
    assert rec.ends == [(None, Outcome.COMPLETE)]


async def test_lifecycle_of_and_the_public_names() -> None:
    scope = http_scope()
    assert lifecycle.lifecycle_of(scope) is None
    lc = attach(scope)
    assert not lc.managed
    async with span(scope):
        assert lc.managed
    assert not lc.managed
    assert lifecycle.lifecycle_of(scope) is lc
    assert scope["state"][lifecycle.STATE_KEY] is lc
    assert set(lifecycle.__all__) >= {"Lifecycle", "Outcome", "attach", "observe", "span"}
    assert "observed=False" in repr(lc)


class _no_error:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
