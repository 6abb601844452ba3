"""A synchronous facade over :class:`TokenService`, for scripts and tests.

It runs one private event loop in a background thread and forwards each call to
it, so the async service keeps one engine and one connection pool.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

from tokenbank.ledger.service import LedgerView, TokenService

T = TypeVar("T")
CALL_TIMEOUT_SECONDS = 120.0


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout=CALL_TIMEOUT_SECONDS)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class _SyncProxy:
    """Turns every coroutine method of the wrapped object into a blocking call."""

    def __init__(self, target: Any, runner: _LoopThread) -> None:
        self._target = target
        self._runner = runner

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if not asyncio.iscoroutinefunction(attribute):
            return attribute

        @functools.wraps(attribute)
        def blocking(*args: Any, **kwargs: Any) -> Any:
            return self._runner.run(attribute(*args, **kwargs))

        return blocking


class SyncTokenService(_SyncProxy):
    """``TokenService`` with blocking methods: ``SyncTokenService(url).debit(...)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        runner = _LoopThread()
        factory: Callable[[], TokenService] = functools.partial(TokenService, *args, **kwargs)
        # Build the service inside its loop, so its locks belong to that loop.
        service = runner.run(_build(factory))
        super().__init__(service, runner)
        self.service = service

    def get_ledger(self) -> Any:
        ledger: LedgerView = self.service.get_ledger()
        return _SyncProxy(ledger, self._runner)

    def blocking(self, target: Any) -> Any:
        """Another service built on this one, with blocking methods:
        ``sync.blocking(MonthlyRenewalService(sync.service)).renew_user("u")``."""
        return _SyncProxy(target, self._runner)

    def close(self) -> None:
        self._runner.run(self.service.close())
        self._runner.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


async def _build(factory: Callable[[], TokenService]) -> TokenService:
    return factory()
