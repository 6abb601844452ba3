"""``@with_token_process``: the ``withTokenProcess`` wrapper, for sync and async.

::

    @with_token_process(feature_endpoint_id="summarize", user_id=lambda job: job["user_id"])
    async def summarize(job: dict) -> dict:
        ...
        return {"summary": text, "input_token": 120, "output_token": 400, "model": "gpt-4o"}

The wrapped function runs between a start and an end (see :mod:`._process` for the
whole flow); its result is returned unchanged.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, cast

from tokenbank.client._async.client import AsyncTokenClient
from tokenbank.client._process import UnsettledHandler
from tokenbank.client._sync.client import TokenClient

P = ParamSpec("P")
R = TypeVar("R")

UserIdSource = str | Callable[..., str]


def _user_id(source: UserIdSource, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """A fixed id, or one taken from the call's arguments (``(args) => ...``)."""
    user_id = source(*args, **kwargs) if callable(source) else source
    if not isinstance(user_id, str) or not user_id:
        raise ValueError(f"with_token_process: user_id must give a non-empty str, got {user_id!r}")
    return user_id


def with_token_process(
    *,
    feature_endpoint_id: str,
    user_id: UserIdSource,
    client: TokenClient | AsyncTokenClient | None = None,
    on_unsettled: UnsettledHandler | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Wrap a function in the Token Process dialect's start / run / end.

    ``user_id`` is a str, or a callable given the wrapped function's arguments.
    ``client`` is a :class:`TokenClient` for a sync function and an
    :class:`AsyncTokenClient` for an async one; without it, the functions share one
    made from the environment on the first call and kept for the process.
    """

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        if inspect.iscoroutinefunction(function):
            wrapped = _wrap_async(
                cast(Callable[..., Awaitable[Any]], function),
                feature_endpoint_id,
                user_id,
                _async_client_source(client),
                on_unsettled,
            )
        else:
            wrapped = _wrap_sync(
                function, feature_endpoint_id, user_id, _sync_client_source(client), on_unsettled
            )
        return cast(Callable[P, R], functools.wraps(function)(wrapped))

    return decorate


# Functions decorated without a client share one per kind, made from the environment on
# first use and kept for the life of the process (one connection pool, not one each).
@functools.cache
def default_sync_client() -> TokenClient:
    return TokenClient()


@functools.cache
def default_async_client() -> AsyncTokenClient:
    return AsyncTokenClient()


def _sync_client_source(client: TokenClient | AsyncTokenClient | None) -> Callable[[], TokenClient]:
    if isinstance(client, AsyncTokenClient):
        raise TypeError("with_token_process: a sync function needs a TokenClient")
    return (lambda: client) if client is not None else default_sync_client


def _async_client_source(
    client: TokenClient | AsyncTokenClient | None,
) -> Callable[[], AsyncTokenClient]:
    if isinstance(client, TokenClient):
        raise TypeError("with_token_process: an async function needs an AsyncTokenClient")
    return (lambda: client) if client is not None else default_async_client


def _wrap_sync(
    function: Callable[..., Any],
    feature_endpoint_id: str,
    user_id: UserIdSource,
    client: Callable[[], TokenClient],
    on_unsettled: UnsettledHandler | None,
) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        user = _user_id(user_id, args, kwargs)
        with client().token_process(
            user, feature_endpoint_id, on_unsettled=on_unsettled
        ) as process:
            result = function(*args, **kwargs)
            process.record_result(result)
        return result

    return wrapper


def _wrap_async(
    function: Callable[..., Awaitable[Any]],
    feature_endpoint_id: str,
    user_id: UserIdSource,
    client: Callable[[], AsyncTokenClient],
    on_unsettled: UnsettledHandler | None,
) -> Callable[..., Awaitable[Any]]:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        user = _user_id(user_id, args, kwargs)
        async with client().token_process(
            user, feature_endpoint_id, on_unsettled=on_unsettled
        ) as process:
            result = await function(*args, **kwargs)
            process.record_result(result)
        return result

    return wrapper
