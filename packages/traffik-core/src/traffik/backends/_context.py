"""Which backend is active: the context variable, ``app.state``, and ``ThrottleContext``."""

from __future__ import annotations

import logging
import typing
from contextvars import ContextVar, Token

from traffik.exceptions import BackendError

if typing.TYPE_CHECKING:
    from types import TracebackType

    from traffik.backends.base import ThrottleBackend

__all__ = [
    "BACKEND_STATE_KEY",
    "ThrottleContext",
    "get_throttle_backend",
    "initialize_by_policy",
    "throttle_backend_ctx",
]

logger = logging.getLogger("traffik")

#: Attribute of ``app.state`` holding the backend registered by ``backend(app)``.
BACKEND_STATE_KEY = "__traffik_throttle_backend"

#: The backend of the innermost ``async with backend(...)`` block, if any.
throttle_backend_ctx: ContextVar[ThrottleBackend[typing.Any, typing.Any] | None] = ContextVar(
    "throttle_backend_ctx", default=None
)


async def initialize_by_policy(backend: ThrottleBackend[typing.Any, typing.Any]) -> None:
    """Initialise ``backend``; if it cannot be reached, start anyway unless its policy says raise.

    Throttles then answer by the backend's failure policy, and the circuit
    breaker's probes connect it once it is reachable (see :mod:`traffik.failures`).
    Without a policy, or with ``on_error="raise"``, the error propagates.
    """
    try:
        await backend.initialize()
    except BackendError as exc:
        policy = backend.failure_policy
        if policy is None or policy.on_error == "raise":
            raise
        logger.warning(
            "traffik: %r could not be initialised (%s); starting anyway, answering by its "
            "failure policy (%s) until it is reachable.",
            backend,
            exc,
            policy.on_error,
        )


def get_throttle_backend(app: typing.Any = None) -> ThrottleBackend[typing.Any, typing.Any] | None:
    """The active backend: the context variable first, then ``app.state``; None if neither."""
    backend = throttle_backend_ctx.get()
    if backend is not None:
        return backend
    if app is not None:
        state = getattr(app, "state", None)
        if state is not None:
            return typing.cast(
                "ThrottleBackend[typing.Any, typing.Any] | None",
                getattr(state, BACKEND_STATE_KEY, None),
            )
    return None


class ThrottleContext:
    """``async with backend(...)``: initialise, make the backend current, clean up on exit.

    On exit the backend's data is reset unless ``persistent``, and the backend is
    closed if ``close_on_exit``.
    """

    __slots__ = ("_token", "backend", "close_on_exit", "persistent")

    def __init__(
        self,
        backend: ThrottleBackend[typing.Any, typing.Any],
        persistent: bool,
        close_on_exit: bool,
    ) -> None:
        self.backend = backend
        self.persistent = persistent
        self.close_on_exit = close_on_exit
        self._token: Token[ThrottleBackend[typing.Any, typing.Any] | None] | None = None

    async def __aenter__(self) -> ThrottleBackend[typing.Any, typing.Any]:
        await initialize_by_policy(self.backend)
        self._token = throttle_backend_ctx.set(self.backend)
        return self.backend

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            try:
                throttle_backend_ctx.reset(self._token)
            except ValueError:
                # Exited in another context (for instance a lifespan run by a task
                # group): the variable belongs to that context and dies with it.
                pass
            self._token = None
        try:
            if not self.persistent:
                await self._tolerate(self.backend.reset(), "reset")
        finally:
            if self.close_on_exit:
                await self._tolerate(self.backend.close(), "close")

    async def _tolerate(self, step: typing.Awaitable[None], what: str) -> None:
        """Run a clean-up step; a dead backend must not crash the app's shutdown.

        With a failure policy other than ``"raise"`` the error is logged instead.
        """
        try:
            await step
        except BackendError as exc:
            policy = self.backend.failure_policy
            if policy is None or policy.on_error == "raise":
                raise
            logger.warning("traffik: could not %s %r on exit: %s", what, self.backend, exc)
