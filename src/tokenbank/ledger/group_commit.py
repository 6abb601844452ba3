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
import time
from collections import deque

from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank.ledger.operations import Operation
from tokenbank.ledger.results import LedgerResult
from tokenbank.ledger.writer import Joiner, LedgerWriter, may_join
from tokenbank.metrics import (
    group_commit_batch_operations,
    group_commit_wait_seconds,
    group_commit_write_seconds,
)

DEFAULT_MAX_BATCH_OPERATIONS = 256
# How many turns of the event loop a drainer gives the queue to fill back up to the
# last batch's size (see GroupCommitter._gather). Measured over HTTP, 2 workers, 32
# connections: 3 and 8 gave the same batches (14-15 operations against 8).
GATHER_LOOP_TURNS = 4

# An operation, its caller's future, and when it was queued (perf_counter seconds).
_Queued = tuple[Operation, "asyncio.Future[LedgerResult]", float]


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
        self._queue: deque[_Queued] = deque()
        self._inflight = 0
        self._last_batch_operations = 0  # what joined it included
        self._drainers: set[asyncio.Task[None]] = set()

    async def submit(self, operation: Operation) -> LedgerResult:
        future: asyncio.Future[LedgerResult] = asyncio.get_running_loop().create_future()
        self._queue.append((operation, future, time.perf_counter()))
        if self._inflight < self._max_inflight:
            self._inflight += 1
            drainer = asyncio.create_task(self._drain())
            self._drainers.add(drainer)
            drainer.add_done_callback(self._drainers.discard)
        return await future

    async def wait_idle(self) -> None:
        """Wait until no batch is being written and every connection is returned.

        A batch's callers are answered before its drainer gives its connection back,
        so a service closing right after its last answer waits here first.
        """
        while self._drainers:
            await asyncio.gather(*self._drainers, return_exceptions=True)

    async def _drain(self) -> None:
        try:
            # Let the other requests of this loop iteration join the first batch.
            await asyncio.sleep(0)
            # One connection for as long as batches keep coming: a checkout per batch
            # would add the pool's liveness ping (a round trip) to every batch.
            # Returning it awaits, and what is queued meanwhile found this drainer
            # still counted as in flight: look again before leaving (no await
            # between this last look and the count going down in `finally`).
            while self._queue:
                async with self._writer.connection() as connection:
                    while self._queue:
                        # The batch is closed once the write turn is ours (SQLite's; no
                        # wait on PostgreSQL): what arrives while another process
                        # writes rides in it, rather than waiting for a turn of its own.
                        await self._gather()
                        async with self._writer.turn():
                            batch = self._take()
                            if batch:
                                await self._write(batch, connection)
                                self._last_batch_operations = len(batch)
        except Exception as error:
            # No connection (the database is down): fail what is queued rather than
            # leave it waiting for a drainer that may never come.
            while self._queue:
                self._fail(self._take(), error)
        finally:
            self._inflight -= 1

    async def _gather(self) -> None:
        """Give the requests already on their way a few turns of the event loop to
        queue, up to the last batch's size, before the next batch is taken.

        Under load, the requests whose answers the last batch sent come back within
        a turn or two (their bytes are already in the sockets). Taken at once, the
        queue holds only those that arrived while that batch was written: the
        process's requests split into two half-size batches that alternate, and each
        pays a transaction's statements for half the operations it could carry.
        Waiting costs nothing when the queue is already as large as the last batch,
        and at most a few turns (no timer) when the load has dropped.
        """
        for _ in range(GATHER_LOOP_TURNS):
            if len(self._queue) >= self._last_batch_operations:
                return
            await asyncio.sleep(0)

    def _take(self) -> list[_Queued]:
        size = min(len(self._queue), self._max_batch)
        return [self._queue.popleft() for _ in range(size)]

    async def _write(
        self,
        batch: list[_Queued],
        connection: AsyncConnection,
    ) -> None:
        operations = [operation for operation, _, _ in batch]
        # Per batch, not per operation: three observations however large the batch.
        started = time.perf_counter()
        group_commit_wait_seconds.observe(started - batch[0][2])
        try:
            results = await self._writer.apply(
                operations, connection=connection, join=self._joiner(batch)
            )
        except BaseException as error:
            self._fail(batch, error)
            if not isinstance(error, Exception):
                raise
            return
        finally:
            group_commit_batch_operations.observe(len(batch))  # what joined included
        group_commit_write_seconds.observe(time.perf_counter() - started)
        for (_, future, _), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    def _joiner(self, batch: list[_Queued]) -> Joiner:
        """Take into ``batch`` the queued operations on wallets it holds locked.

        On one busy wallet, two processes' batches take turns on its lock: while one
        waits, its next requests queue. Joining the batch that waits (it decides only
        once it holds the lock) doubles the batches' size, where otherwise each turn
        would carry half the wallet's requests. Queue order is kept per user: once a
        user has a queued operation that cannot join, none of theirs behind it joins;
        and nothing behind an operation whose user is unknown (a void) joins.
        """

        def join(locked_users: frozenset[str]) -> list[Operation]:
            room = self._max_batch - len(batch)
            if room <= 0 or not locked_users or not self._queue:
                return []
            kept: deque[_Queued] = deque()
            closed: set[str] = set()
            unknown_seen = False
            joined: list[Operation] = []
            for queued in self._queue:
                operation, user = queued[0], queued[0].user_key
                if (
                    len(joined) < room
                    and not unknown_seen
                    and user in locked_users
                    and user not in closed
                    and may_join(operation)
                ):
                    joined.append(operation)
                    batch.append(queued)
                    continue
                kept.append(queued)
                if user is None:
                    unknown_seen = True
                else:
                    closed.add(user)
            self._queue = kept
            return joined

        return join

    @staticmethod
    def _fail(batch: list[_Queued], error: BaseException) -> None:
        for _, future, _ in batch:
            if not future.done():
                future.set_exception(error)
