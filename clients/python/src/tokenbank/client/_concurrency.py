"""What the asyncio and the blocking client do differently, beyond ``async`` and ``await``.

``_async/client.py`` is the one source of both clients: scripts/generate_sync.py writes
``_sync/client.py`` from it, renaming each ``async_*`` helper here to its blocking twin
(and ``AsyncTokenClient`` to ``TokenClient``, ...). A difference that renaming cannot
express lives here, in both flavours.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def async_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


def sleep(seconds: float) -> None:
    time.sleep(seconds)


async def async_run_to_the_end(call: Awaitable[T]) -> T:
    """Await a call that undoes a charge (a refund, a void, a release) so that it runs
    to the end even when the caller is being cancelled: cancellation is usually why
    the work failed, and the user must get the tokens back all the same."""
    return await asyncio.shield(call)


def run_to_the_end(result: T) -> T:
    """The blocking twin of :func:`async_run_to_the_end`: a blocking call cannot be
    cancelled half-way, so by the time its result is here it has run to the end."""
    return result
