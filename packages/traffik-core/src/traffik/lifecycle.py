"""The response lifecycle: when a connection's status is known, and when it is over.

Throttles that act after admission (a concurrency slot released when the response
is done, a charge refunded when the status says so) need to know, per connection,
two moments:

- the **status**: the status line of the response is known (HTTP
  ``http.response.start``; WebSocket ``accept`` = 101, a close before accept = 403,
  a denial response = its status);
- the **end**, exactly once, with an :class:`Outcome`: the response was sent
  completely (:attr:`Outcome.COMPLETE`: the last body chunk of an HTTP response,
  streaming included, or a WebSocket closed by the app or its endpoint returning),
  the client went away (:attr:`Outcome.DISCONNECTED`), or the app raised
  (:attr:`Outcome.RAISED`; also an HTTP app returning without finishing its
  response, which the server answers with a 500).

API::

    lc = lifecycle.attach(connection.scope)     # this connection's Lifecycle
    lc.on_status(callback)   # callback(status: int), awaited before the start is sent
    lc.on_end(callback)      # callback(status: int | None, outcome: Outcome), once
    lc.watch_disconnect()    # notice a disconnect while the app is busy (if observed)

Callbacks may be plain functions or coroutine functions; an exception in one is
logged and swallowed (it never breaks the response). End callbacks run in a task
shielded from cancellation, so a release is not lost when the request is cancelled.

Who fires them (integrations; only public names are used):

- :class:`LifecycleObserver` (an ASGI app wrapper; :func:`observe` for a single
  call) watches ``send`` and ``receive`` of an HTTP or WebSocket connection and
  fires both moments exactly; it is what ``ThrottleMiddleware``, a wrapped
  ``route.app`` and a wrapped Starlette response use. With
  :meth:`Lifecycle.watch_disconnect` it owns ``receive`` through a one-message
  look-ahead pump, so a client that goes away while a slow endpoint computes is
  noticed at once (the body is never read ahead by more than one message).
- :func:`span` (an async context manager) ends a lifecycle nobody observes when the
  block exits: ``COMPLETE`` on a normal exit, ``DISCONNECTED`` on ``OSError`` or
  Starlette's ``ClientDisconnect``, ``RAISED`` on any other exception; the status is
  then None. Used by FastAPI request-scoped yield dependencies and direct
  ``async with`` uses. When an observer is present it fires the end itself, and the
  span's exit changes nothing.

- :func:`connection_lifecycle` is the FastAPI side: a yield dependency for
  ``Depends(connection_lifecycle, scope="request")`` (FastAPI 0.121 and later exit
  those after the response was sent: a streaming response after its last chunk,
  a WebSocket after its endpoint returned; an exception is thrown into it). It
  ends the lifecycle through :func:`span` and wraps the matched route's public
  ``route.app`` in a :class:`LifecycleObserver`, so the route's *later* requests
  are observed exactly. :func:`observe_routes` does that at startup
  (``backend(app)`` and ``backend.lifespan`` call it), so such routes are observed
  from their first request. Without a backend context on the app, the first
  request of a route ends with status None, and an ``HTTPException`` raised by its
  endpoint ends it ``RAISED`` (the error response is sent after the dependency
  exits); every later request sees the real status and outcome. Routes a FastAPI
  app includes from an ``APIRouter`` run (FastAPI 0.16x) through FastAPI's private
  route contexts, which no public attribute reaches: they always end by the
  request-scoped exit (status None; a disconnect seen when the endpoint returns or
  a stream's next chunk fails). ``app.add_middleware(LifecycleObserver)`` observes
  every request of an app exactly, routers included. A throttle whose
  ``needs_lifecycle`` is True
  gets this parameter in its FastAPI signature (``Depends(throttle)``), and
  ``traffik.fastapi.throttled`` adds it for such throttles.

Integration summary (what fires the end):

- ``ThrottleMiddleware``: an observer around the app, when a rule's throttle has
  ``needs_lifecycle``;
- Starlette ``@throttled``: the exception, else an observer around the returned
  response; a WebSocket: the endpoint returning;
- FastAPI ``Depends`` and ``@throttled``: an observer around ``route.app``
  (installed by ``backend(app)``, else by the route's first request, which
  ``connection_lifecycle`` ends);
- ``async with`` (direct use): :func:`span`.

``attach`` returns the lifecycle of the connection, creating an unobserved one when
no observer is in place (``Lifecycle.observed`` tells which). The lifecycle lives in
``scope["state"]``, so every layer sharing that dict sees the same one.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
import typing
from collections import deque

from starlette.requests import ClientDisconnect, HTTPConnection
from starlette.websockets import WebSocketDisconnect

if typing.TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping

    Message = MutableMapping[str, typing.Any]
    Scope = MutableMapping[str, typing.Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]
    ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = [
    "STATE_KEY",
    "EndCallback",
    "Lifecycle",
    "LifecycleObserver",
    "Outcome",
    "StatusCallback",
    "attach",
    "connection_lifecycle",
    "lifecycle_of",
    "observe",
    "observe_routes",
    "span",
]

logger = logging.getLogger("traffik.lifecycle")

#: Key of the :class:`Lifecycle` in ``scope["state"]``.
STATE_KEY = "traffik.lifecycle"


class Outcome(str, enum.Enum):
    """How a connection's response ended."""

    #: Sent completely (last body chunk; a WebSocket closed by the app or its return).
    COMPLETE = "complete"
    #: The client went away before the response was complete.
    DISCONNECTED = "disconnected"
    #: The app raised (or returned without finishing an HTTP response).
    RAISED = "raised"


#: ``callback(status)``: the status line is known (awaited before it is sent).
StatusCallback = typing.Callable[[int], typing.Any]
#: ``callback(status or None, outcome)``: the connection is over (called once).
EndCallback = typing.Callable[[int | None, Outcome], typing.Any]

_DISCONNECTS = frozenset({"http.disconnect", "websocket.disconnect"})
_background: set[asyncio.Task[None]] = set()


async def _call(callback: typing.Callable[..., typing.Any], *args: typing.Any) -> None:
    try:
        result = callback(*args)
        if inspect.isawaitable(result):
            await result
    except Exception:
        logger.exception("traffik lifecycle callback %r failed", callback)


class Lifecycle:
    """One connection's response lifecycle (see the module docs).

    ``status`` is the status once known (else None); ``outcome`` is set when the
    end fired; ``observed`` is True when an observer sees the connection's
    messages (so ``status`` will be known).
    """

    __slots__ = ("_end", "_pump", "_spans", "_status_callbacks", "observed", "outcome", "status")

    def __init__(self, *, observed: bool = False) -> None:
        self.status: int | None = None
        self.outcome: Outcome | None = None
        self.observed = observed
        self._status_callbacks: list[StatusCallback] = []
        self._end: list[EndCallback] = []
        self._pump: _Pump | None = None
        self._spans = 0

    def __repr__(self) -> str:
        return (
            f"Lifecycle(status={self.status!r}, outcome={self.outcome!r}, observed={self.observed})"
        )

    @property
    def managed(self) -> bool:
        """True when something will end this lifecycle: an observer, or an open :func:`span`.

        A callback registered on an unmanaged lifecycle may never be called.
        """
        return self.observed or self._spans > 0

    @property
    def ended(self) -> bool:
        """True once the end fired."""
        return self.outcome is not None

    def on_status(self, callback: StatusCallback) -> None:
        """Call ``callback(status)`` when the status is known (never, if the app raises first).

        Registered after the status is known, it is not called: read ``status``.
        """
        self._status_callbacks.append(callback)

    def on_end(self, callback: EndCallback) -> None:
        """Call ``callback(status, outcome)`` once, when the connection is over.

        Registered after the end, it is called at once (in a task).
        """
        if self.outcome is not None:
            _spawn(_call(callback, self.status, self.outcome))
            return
        self._end.append(callback)

    def watch_disconnect(self) -> None:
        """Ask the observer to notice a client going away while the app is busy.

        Does nothing on an unobserved lifecycle, a WebSocket, or once ended.
        """
        pump = self._pump
        if pump is not None and self.outcome is None:
            pump.start()

    async def status_known(self, status: int) -> None:
        """Record ``status`` and run the status callbacks (observers call this)."""
        self.status = status
        callbacks, self._status_callbacks = self._status_callbacks, []
        for callback in callbacks:
            await _call(callback, status)

    async def finish(self, outcome: Outcome) -> None:
        """End the lifecycle with ``outcome`` and run the end callbacks; later calls do nothing.

        The callbacks run in a task this call waits for, shielded: a cancelled
        request does not cancel them.
        """
        if self.outcome is not None:
            return
        self.outcome = outcome
        pump = self._pump
        if pump is not None:
            pump.stop()
        callbacks, self._end = self._end, []
        if not callbacks:
            return
        task = _spawn(self._run_end(callbacks, self.status, outcome))
        await asyncio.shield(task)

    async def finish_for(self, exc: BaseException) -> None:
        """End the lifecycle with what exception ``exc`` means: ``DISCONNECTED`` for
        ``OSError``, Starlette's ``ClientDisconnect`` or ``WebSocketDisconnect``,
        else ``RAISED``."""
        await self.finish(_outcome_of(exc))

    @staticmethod
    async def _run_end(callbacks: list[EndCallback], status: int | None, outcome: Outcome) -> None:
        for callback in callbacks:
            await _call(callback, status, outcome)


def _spawn(coro: typing.Coroutine[typing.Any, typing.Any, None]) -> asyncio.Task[None]:
    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task


def lifecycle_of(scope: Scope) -> Lifecycle | None:
    """The lifecycle attached to ``scope``, or None."""
    state = scope.get("state")
    if state is None:
        return None
    found: Lifecycle | None = state.get(STATE_KEY)
    return found


def attach(scope: Scope) -> Lifecycle:
    """The lifecycle of ``scope``: the observed one if any, else a new unobserved one."""
    state = scope.get("state")
    if state is None:
        state = scope["state"] = {}
    found: Lifecycle | None = state.get(STATE_KEY)
    if found is None:
        found = state[STATE_KEY] = Lifecycle()
    return found


@contextlib.asynccontextmanager
async def span(scope: Scope) -> AsyncIterator[Lifecycle]:
    """Yield the lifecycle of ``scope``; unless an observer watches it, end it on exit.

    The outcome on exit: ``COMPLETE`` normally, ``DISCONNECTED`` for ``OSError``
    or Starlette's ``ClientDisconnect``, ``RAISED`` for any other exception
    (including cancellation). The exception itself propagates.
    """
    lc = attach(scope)
    if lc.observed:
        # The observer ends it, with the status: an exception here may still become
        # an error response (an HTTPException handled further out).
        yield lc
        return
    lc._spans += 1
    try:
        yield lc
    except BaseException as exc:
        await lc.finish_for(exc)
        raise
    finally:
        lc._spans -= 1
    await lc.finish(Outcome.COMPLETE)


def _outcome_of(exc: BaseException) -> Outcome:
    if isinstance(exc, (OSError, ClientDisconnect, WebSocketDisconnect)):
        return Outcome.DISCONNECTED
    return Outcome.RAISED


async def connection_lifecycle(connection: HTTPConnection) -> AsyncIterator[Lifecycle]:
    """A FastAPI dependency (``Depends(connection_lifecycle, scope="request")``) yielding
    the connection's lifecycle, ended by :func:`span` when FastAPI exits it.

    FastAPI (0.121 and later) exits request-scoped yield dependencies after the
    response was sent (a streaming one: after its last chunk) or after the
    endpoint raised, so the end comes at the right time with the status unknown.
    It also wraps the matched route's ``app`` in a :class:`LifecycleObserver`, so
    from the route's next request on the status and disconnects are observed
    exactly (and a disconnect during a slow endpoint is noticed at once).
    """
    scope = connection.scope
    route = scope.get("route")
    app = getattr(route, "app", None)
    if app is not None and not isinstance(app, LifecycleObserver):
        route.app = LifecycleObserver(app)  # type: ignore[union-attr]
    async with span(scope) as lc:
        yield lc


def observe_routes(app: typing.Any) -> int:
    """Wrap, in a :class:`LifecycleObserver`, the ``app`` of every route of ``app`` (through
    mounts) whose FastAPI dependencies include :func:`connection_lifecycle`; return how many.

    ``backend(app)`` and ``backend.lifespan`` call it at startup, so those routes are
    observed from their first request. Only public attributes are read (``routes``,
    ``dependant``, ``app``); a route already observed is left alone.
    """
    wrapped = 0
    for route in _routes_of(app, 0):
        dependant = getattr(route, "dependant", None)
        inner = getattr(route, "app", None)
        if dependant is None or inner is None or isinstance(inner, LifecycleObserver):
            continue
        if _solves_lifecycle(dependant):
            route.app = LifecycleObserver(inner)
            wrapped += 1
    return wrapped


def _routes_of(app: typing.Any, depth: int) -> list[typing.Any]:
    router = getattr(app, "router", None)
    routes = getattr(router if router is not None else app, "routes", None)
    if not isinstance(routes, (list, tuple)) or depth > 8:
        return []
    found: list[typing.Any] = []
    for route in routes:
        found.append(route)
        if getattr(route, "dependant", None) is None and hasattr(route, "routes"):
            found.extend(_routes_of(route, depth + 1))  # a Mount or a nested router
    return found


def _solves_lifecycle(dependant: typing.Any) -> bool:
    pending = [dependant]
    while pending:
        current = pending.pop()
        if getattr(current, "call", None) is connection_lifecycle:
            return True
        pending.extend(getattr(current, "dependencies", ()) or ())
    return False


class _Pump:
    """Owns ``receive`` once started: reads at most one message ahead of the app.

    Before the request body is complete it reads only when nothing is buffered, so
    an upload is never read ahead by more than one message; after the body, the
    only message left is the disconnect, which it waits for.
    """

    __slots__ = ("_arrived", "_body_done", "_buffer", "_consumed", "_lc", "_receive", "_task")

    def __init__(self, receive: Receive, lc: Lifecycle) -> None:
        self._receive = receive
        self._lc = lc
        self._buffer: deque[Message] = deque()
        self._body_done = False
        self._task: asyncio.Task[None] | None = None
        # Created on start(): most observed requests never start a pump.
        self._arrived: asyncio.Event = typing.cast("asyncio.Event", None)
        self._consumed: asyncio.Event = typing.cast("asyncio.Event", None)

    def start(self) -> None:
        if self._task is None:
            self._arrived = asyncio.Event()
            self._consumed = asyncio.Event()
            self._task = _spawn(self._run())

    def stop(self) -> None:
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        if self._arrived is not None:
            self._arrived.set()

    def _running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        while True:
            while self._buffer and not self._body_done:
                self._consumed.clear()
                await self._consumed.wait()
            message = await self._receive()
            kind = message.get("type")
            if kind == "http.request" and not message.get("more_body", False):
                self._body_done = True
            self._buffer.append(message)
            self._arrived.set()
            if kind in _DISCONNECTS:
                await self._lc.finish(Outcome.DISCONNECTED)
                return

    async def receive(self) -> Message:
        while not self._buffer:
            if not self._running():
                return await self._receive()
            self._arrived.clear()
            await self._arrived.wait()
        message = self._buffer.popleft()
        self._consumed.set()
        return message


class LifecycleObserver:
    """An ASGI app wrapper that fires the lifecycle of every HTTP/WebSocket connection.

    If the connection already has an observed lifecycle (an outer observer), the
    app is called untouched. Other scope types pass through.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await observe(self.app, scope, receive, send)


async def observe(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Run ``app`` on the connection with its lifecycle observed (see :class:`LifecycleObserver`)."""
    kind = scope["type"]
    if kind not in ("http", "websocket"):
        await app(scope, receive, send)
        return
    state = scope.get("state")
    if state is None:
        state = scope["state"] = {}
    existing: Lifecycle | None = state.get(STATE_KEY)
    if existing is not None and existing.observed:
        await app(scope, receive, send)
        return
    # An unobserved lifecycle (left by an earlier layer) becomes observed: same object.
    lc = existing if existing is not None else Lifecycle()
    lc.observed = True
    state[STATE_KEY] = lc
    if kind == "http":
        await _observe_http(app, lc, scope, receive, send)
    else:
        await _observe_websocket(app, lc, scope, receive, send)


async def _observe_http(
    app: ASGIApp, lc: Lifecycle, scope: Scope, receive: Receive, send: Send
) -> None:
    pump = lc._pump = _Pump(receive, lc)

    async def observed_receive() -> Message:
        message = await pump.receive()
        if message["type"] == "http.disconnect" and lc.outcome is None:
            await lc.finish(Outcome.DISCONNECTED)
        return message

    async def observed_send(message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if lc.outcome is None:
                await lc.status_known(message["status"])
            await send(message)
            return
        last = (kind == "http.response.body" and not message.get("more_body", False)) or (
            kind == "http.response.pathsend"
        )
        await _forward(lc, send, message, last)

    try:
        # Returned without completing the response: the server answers 500.
        await _run(app, lc, scope, observed_receive, observed_send, Outcome.RAISED)
    finally:
        pump.stop()


async def _forward(lc: Lifecycle, send: Send, message: Message, last: bool) -> None:
    try:
        await send(message)
    except OSError:
        await lc.finish(Outcome.DISCONNECTED)
        raise
    if last:
        await lc.finish(Outcome.COMPLETE)


async def _run(
    app: ASGIApp, lc: Lifecycle, scope: Scope, receive: Receive, send: Send, returned: Outcome
) -> None:
    try:
        await app(scope, receive, send)
    except BaseException as exc:
        await lc.finish_for(exc)
        raise
    await lc.finish(returned)


async def _observe_websocket(
    app: ASGIApp, lc: Lifecycle, scope: Scope, receive: Receive, send: Send
) -> None:
    async def observed_receive() -> Message:
        message = await receive()
        if message["type"] == "websocket.disconnect" and lc.outcome is None:
            await lc.finish(Outcome.DISCONNECTED)
        return message

    async def observed_send(message: Message) -> None:
        kind = message["type"]
        if lc.outcome is None:
            if kind == "websocket.accept":
                await lc.status_known(101)
            elif kind == "websocket.close" and lc.status is None:
                await lc.status_known(403)
            elif kind == "websocket.http.response.start":
                await lc.status_known(message["status"])
        last = kind == "websocket.close" or (
            kind == "websocket.http.response.body" and not message.get("more_body", False)
        )
        await _forward(lc, send, message, last)

    # The endpoint returned: the server closes the socket normally.
    await _run(app, lc, scope, observed_receive, observed_send, Outcome.COMPLETE)
