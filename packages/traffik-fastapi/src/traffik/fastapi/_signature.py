"""Attach FastAPI dependencies to a route function without exec.

FastAPI reads a route's dependencies from its signature only: there is no other
hook on the function (fastapi/fastapi#171). So the wrapper returned here carries a
``__signature__`` equal to the route's own plus one leading parameter per attached
dependency, each annotated ``Annotated[Any, Depends(...)]`` and named so that it
cannot clash with a user's parameter. FastAPI resolves them before the route's own
parameters; the wrapper drops them before calling the route. They are dependencies,
so they never appear in the OpenAPI document.

Stacked decorators never nest wrappers: each one rebuilds a single wrapper around
the original function with the combined dependencies (outermost first).
"""

from __future__ import annotations

import functools
import inspect
import typing

from starlette.responses import Response

from traffik.utils import is_async_callable

if typing.TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from fastapi import params

__all__ = ["HIDDEN_PREFIX", "attached_dependencies", "original_route", "with_dependencies"]

#: Prefix of the hidden parameters (``__traffik_dependency_0``, ...).
HIDDEN_PREFIX = "__traffik_dependency_"

_DEPENDENCIES_ATTR = "__traffik_dependencies__"
_ORIGINAL_ATTR = "__traffik_original__"

F = typing.TypeVar("F", bound="Callable[..., typing.Any]")


def original_route(route: Callable[..., typing.Any]) -> Callable[..., typing.Any]:
    """The undecorated route behind a traffik wrapper (the route itself if not wrapped)."""
    return typing.cast("Callable[..., typing.Any]", getattr(route, _ORIGINAL_ATTR, route))


def attached_dependencies(route: Callable[..., typing.Any]) -> tuple[params.Depends, ...]:
    """The dependencies traffik attached to ``route``, outermost decorator first."""
    return typing.cast("tuple[params.Depends, ...]", getattr(route, _DEPENDENCIES_ATTR, ()))


def _route_signature(route: Callable[..., typing.Any]) -> inspect.Signature:
    # Same evaluation as FastAPI's own (fastapi.dependencies.utils._get_signature), so
    # string annotations (``from __future__ import annotations``) resolve identically.
    try:
        return inspect.signature(route, eval_str=True)
    except NameError:
        return inspect.signature(route)


def _hidden_parameters(
    signature: inspect.Signature, dependencies: Sequence[params.Depends]
) -> list[inspect.Parameter]:
    names = set(signature.parameters)
    kinds = [p.kind for p in signature.parameters.values()]
    # Leading positional parameters run first (FastAPI solves in signature order);
    # positional-only routes (which FastAPI cannot call anyway) get keyword-only ones.
    kind = (
        inspect.Parameter.KEYWORD_ONLY
        if inspect.Parameter.POSITIONAL_ONLY in kinds
        else inspect.Parameter.POSITIONAL_OR_KEYWORD
    )
    hidden = []
    for index, dependency in enumerate(dependencies):
        name = f"{HIDDEN_PREFIX}{index}"
        if name in names:
            raise TypeError(
                f"The route already has a parameter named {name!r}, which traffik reserves "
                "for its throttle dependencies; rename that parameter."
            )
        hidden.append(
            inspect.Parameter(name, kind, annotation=typing.Annotated[typing.Any, dependency])
        )
    return hidden


def _combine(signature: inspect.Signature, hidden: list[inspect.Parameter]) -> inspect.Signature:
    params = list(signature.parameters.values())
    if hidden and hidden[0].kind is inspect.Parameter.KEYWORD_ONLY:
        at = next(
            (i for i, p in enumerate(params) if p.kind is inspect.Parameter.VAR_KEYWORD),
            len(params),
        )
        return signature.replace(parameters=[*params[:at], *hidden, *params[at:]])
    return signature.replace(parameters=[*hidden, *params])


def _finish_response(result: typing.Any, values: list[typing.Any]) -> typing.Any:
    # A route that returns a Response bypasses FastAPI's merge of the dependencies'
    # response headers; the dependency values are callables adding them back.
    if isinstance(result, Response):
        for value in values:
            if callable(value):
                value(result)
    return result


def with_dependencies(route: F, dependencies: Sequence[params.Depends]) -> F:
    """``route`` with ``dependencies`` attached ahead of any it already carries."""
    original = original_route(route)
    combined = (*dependencies, *attached_dependencies(route))
    signature = _route_signature(original)
    hidden = _hidden_parameters(signature, combined)
    names = tuple(p.name for p in hidden)

    wrapper: Callable[..., typing.Any]
    if is_async_callable(original) and len(names) == 1:
        # The usual case, one throttled(...) on the route: no list, no helper call.
        (only,) = names

        @functools.wraps(original)
        async def async_wrapper_one(*args: typing.Any, **kwargs: typing.Any) -> typing.Any:
            finish = kwargs.pop(only, None)
            result = await original(*args, **kwargs)
            if callable(finish) and isinstance(result, Response):
                finish(result)
            return result

        wrapper = async_wrapper_one
    elif is_async_callable(original):

        @functools.wraps(original)
        async def async_wrapper(*args: typing.Any, **kwargs: typing.Any) -> typing.Any:
            values = [kwargs.pop(name, None) for name in names]
            return _finish_response(await original(*args, **kwargs), values)

        wrapper = async_wrapper
    elif inspect.isgeneratorfunction(original) or inspect.isasyncgenfunction(original):

        @functools.wraps(original)
        def stream_wrapper(*args: typing.Any, **kwargs: typing.Any) -> typing.Any:
            for name in names:
                kwargs.pop(name, None)
            return original(*args, **kwargs)

        wrapper = stream_wrapper
    else:

        @functools.wraps(original)
        def sync_wrapper(*args: typing.Any, **kwargs: typing.Any) -> typing.Any:
            values = [kwargs.pop(name, None) for name in names]
            return _finish_response(original(*args, **kwargs), values)

        wrapper = sync_wrapper

    setattr(wrapper, "__signature__", _combine(signature, hidden))  # noqa: B010
    setattr(wrapper, _DEPENDENCIES_ATTR, combined)
    setattr(wrapper, _ORIGINAL_ATTR, original)
    return typing.cast("F", wrapper)
