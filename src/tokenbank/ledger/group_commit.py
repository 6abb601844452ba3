"""Group commit: concurrent operations share one transaction and one durable commit.

Callers ``submit`` an operation and await its result. While a batch is being
written, new operations queue; when it commits, the next batch takes everything
queued (up to ``max_batch_operations``). An idle service therefore adds no delay,
and a busy one pays one commit (one fsync) per batch instead of per operation.
How long an operation waits for its batch is bounded by the batch size limit: at
most one full batch ahead of it per in-flight writer.

Each operation's outcome is its own (see :mod:`tokenbank.ledger.writer`). If a
batch fails to commit, every operation in it gets the error: none of them was
applied, and a retry with the same idempotency key is safe.
"""

from __future__ import annotations

import asyncio
from collections import deque

from tokenbank.ledger.operations import Operation
from tokenbank.ledger.results import LedgerResult
from tokenbank.ledger.writer import LedgerWriter

DEFAULT_MAX_BATCH_OPERATIONS = 256


class GroupCommitter:
    def __init__(
        self,
        writer: LedgerWriter,
        *,
        max_batch_operations: int = DEFAULT_MAX_BATCH_OPERATIONS,
        max_inflight_batches: int = 1,
    ) -> None:
        if max_batch_operations < 1 or max_inflight_batches < 1:
            raise ValueError("batch size and in-flight batches must be at least 1")
        self._writer = writer
        self._max_batch = max_batch_operations
        self._max_inflight = max_inflight_batches
        self._queue: deque[tuple[Operation, asyncio.Future[LedgerResult]]] = deque()
        self._inflight = 0
        self._drainers: set[asyncio.Task[None]] = set()

    async def submit(self, operation: Operation) -> LedgerResult:
        future: asyncio.Future[LedgerResult] = asyncio.get_running_loop().create_future()
        self._queue.append((operation, future))
        if self._inflight < self._max_inflight:
            self._inflight += 1
            drainer = asyncio.create_task(self._drain())
            self._drainers.add(drainer)
            drainer.add_done_callback(self._drainers.discard)
        return await future

    async def _drain(self) -> None:
        try:
            # Let the other requests of this loop iteration join the first batch.
            await asyncio.sleep(0)
            while self._queue:
                await self._write(self._take())
        finally:
            self._inflight -= 1

    def _take(self) -> list[tuple[Operation, asyncio.Future[LedgerResult]]]:
        size = min(len(self._queue), self._max_batch)
        return [self._queue.popleft() for _ in range(size)]

    async def _write(self, batch: list[tuple[Operation, asyncio.Future[LedgerResult]]]) -> None:
        try:
            results = await self._writer.apply([operation for operation, _ in batch])
        except BaseException as error:
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(error, Exception):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
