"""Client errors as traffik's: BackendConnectionError (unreachable) or BackendError."""

from __future__ import annotations

import asyncio
import functools
import re
import ssl
import typing

from redis.exceptions import AuthenticationError, NoPermissionError, RedisClusterException
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from traffik.exceptions import BackendConnectionError, BackendError
from traffik.redis._scripts import script_calls

if typing.TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

__all__ = ["ACL_COMMANDS", "backend_error", "gated"]

P = typing.ParamSpec("P")
R = typing.TypeVar("R")

_CONNECTION_ERRORS = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    asyncio.TimeoutError,
    RedisClusterException,
)


class _Gated(typing.Protocol):
    @property
    def _gate(self) -> asyncio.Semaphore | None: ...


S = typing.TypeVar("S", bound=_Gated)


#: The commands of the smallest ACL, as docs/backends/redis-production.md gives it
#: (the scripts' inner calls included); a user needs them on the keys ~<namespace>:*.
ACL_COMMANDS = (
    "+ping +evalsha +script|load +time +get +set +del +unlink +exists +incrby +decrby "
    "+pexpire +mget +scan +zadd +zcard +zrange +zrem +zremrangebyscore +zscore"
)
ACL_DOCS = "the ACL in the docs ('Running Redis in production')"


def _tls_hint(text: str) -> str | None:
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return (
            "The server's TLS certificate is not signed by a CA this client trusts: set "
            "ssl_ca_certs (a URL parameter, or Redis(ssl_ca_certs=...)) to the CA that "
            "signed it."
        )
    if "certificate required" in text.lower():
        return (
            "The server asks for a TLS client certificate: pass ssl_certfile and "
            "ssl_keyfile (URL parameters, or arguments of Redis(...))."
        )
    if "[SSL" in text or "SSL:" in text:
        return (
            "The TLS handshake failed: check that the port speaks TLS, ssl_ca_certs (the "
            "CA that signed the server's certificate), and ssl_certfile and ssl_keyfile if "
            "the server asks for a client certificate."
        )
    return None


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The ssl.SSLError behind ``exc`` (redis-py 5.0 keeps it only as the context)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _closed(text: str) -> bool:
    """The peer closed or reset the connection (104, EOF, a broken pipe)."""
    lowered = text.lower()
    return any(sign in lowered for sign in ("reset by peer", "eof", "broken pipe", "(104"))


def _is_permission(text: str) -> bool:
    return "NOPERM" in text or "can't run this command" in text or "no permissions" in text


def _hint(exc: BaseException) -> str:
    """What to check for a connection error: TLS, credentials, permissions, or the address."""
    text = str(exc)
    if isinstance(exc, AuthenticationError) or "WRONGPASS" in text:
        return (
            "The server refused the user name or password: check the credentials "
            "(redis://user:password@host:port/db, or username= and password=)."
        )
    if _is_permission(text):
        return (
            f"The Redis user lacks a permission traffik needs: grant it {ACL_DOCS} "
            f"(on Redis Cluster, with +cluster|slots +command +info)."
        )
    if "Cluster mode is not enabled" in text:
        # redis-py says so too when the user may not run CLUSTER SLOTS.
        return (
            "Either the node is not part of a Redis Cluster (drop cluster=True), or the "
            "user may not read the slot map: grant it +cluster|slots +command +info."
        )
    return _tls_hint(text) or "Check that the server is running and reachable at that address."


def _missing_permission(exc: BaseException) -> BackendError | None:
    text = str(exc)
    if not (isinstance(exc, NoPermissionError) or _is_permission(text)):
        return None
    # A command refused inside a script is not named by Redis: name what the script calls.
    found = re.search(r"script: ([0-9a-f]{40})", text)
    ours = script_calls(found.group(1)) if found else None
    calls = (
        ""
        if ours is None
        else (f" (traffik's {ours[0]!r} script calls {', '.join(ours[1])}: the user needs each)")
    )
    return BackendError(
        f"The Redis user lacks a permission traffik needs: {text.rstrip('.')}{calls}. "
        f"Grant it {ACL_DOCS}: ~<namespace>:* {ACL_COMMANDS}."
    )


_TLS_CLOSED = (
    "The server closed the connection during the TLS handshake: if it asks for a "
    "client certificate (tls-auth-clients), pass ssl_certfile and ssl_keyfile (URL "
    "parameters, or arguments of Redis(...)); also check ssl_ca_certs."
)


def backend_error(where: str, op: str, exc: BaseException, *, tls: bool = False) -> BackendError:
    """The traffik exception for client error ``exc`` raised by ``op`` on the server ``where``.

    ``tls``: the backend speaks TLS (a ``rediss://`` URL). A server that refuses a
    client without a certificate may reset the connection before its TLS alert
    reaches the client (TLS 1.3 checks the certificate after the client's side of
    the handshake ends), so a reset on a TLS connection is explained as TLS.
    """
    if isinstance(exc, _CONNECTION_ERRORS):
        text = str(exc).rstrip(".")
        tls_error = _ssl_cause(exc)
        if tls_error is not None and str(tls_error) not in text:
            text += f" (TLS: {tls_error})"
            exc_hint = _tls_hint(str(tls_error)) or _hint(exc)
        else:
            exc_hint = _hint(exc)
        if tls and exc_hint.startswith("Check that the server") and _closed(text):
            exc_hint = _TLS_CLOSED
        return BackendConnectionError(
            f"Redis at {where} failed during {op}(): {type(exc).__name__}: {text}. {exc_hint}"
        )
    denied = _missing_permission(exc)
    if denied is not None:
        return denied
    return BackendError(f"RedisBackend.{op}() failed: {type(exc).__name__}: {exc}")


def gated(
    func: Callable[typing.Concatenate[S, P], Coroutine[typing.Any, typing.Any, R]],
) -> Callable[typing.Concatenate[S, P], Coroutine[typing.Any, typing.Any, R]]:
    """With a gate (a client whose pool raises when exhausted), the call waits for a slot.

    Errors are not translated here: ThrottleBackend wraps every backend method
    once, through :meth:`RedisBackend.wrap_error`.
    """

    @functools.wraps(func)
    async def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        gate = self._gate
        if gate is None:
            return await func(self, *args, **kwargs)
        async with gate:
            return await func(self, *args, **kwargs)

    return wrapper
