"""How group commit fills its batches (issue 15).

A batch that waited for a wallet's lock takes in what queued on that wallet
meanwhile: the operations join in queue order, each user's order is kept, and the
books are the same as one operation at a time. And a drainer gives the requests
already on their way a few turns of the event loop to queue before it takes a batch."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tokenbank import TokenService
from tokenbank.config import Settings
from tokenbank.ledger.group_commit import GroupCommitter
from tokenbank.ledger.operations import (
    CaptureHold,
    Credit,
    Debit,
    Operation,
    PlaceHold,
    Refund,
    VoidHold,
)
from tokenbank.ledger.results import LedgerResult, OperationResult

POSTGRESQL_ONLY = pytest.mark.parametrize("engine_name", ["postgresql"], indirect=True)
LOCK_WAIT_POLLS = 1_000  # 10 s


def _queued(committer: GroupCommitter, operations: Sequence[Operation]) -> None:
    loop = asyncio.get_running_loop()
    for operation in operations:
        committer._queue.append((operation, loop.create_future(), 0.0))


def _queue_of(committer: GroupCommitter) -> list[Operation]:
    return [operation for operation, _, _ in committer._queue]


async def test_only_operations_on_locked_wallets_join_in_queue_order() -> None:
    committer = GroupCommitter(writer=None, max_batch_operations=5)  # type: ignore[arg-type]
    refund = Refund(user_id="bob", amount_tokens=1)
    queued: list[Operation] = [
        Debit(user_id="ann", amount_tokens=1),  # joins
        Debit(user_id="cat", amount_tokens=1),  # not locked by the batch
        refund,  # the kernel never takes a refund: bob's later ones stay behind it
        Debit(user_id="bob", amount_tokens=2),
        PlaceHold(user_id="ann", amount_tokens=3, ttl_seconds=60),  # joins
        Credit(user_id="ann", amount_tokens=4),  # joins
        Debit(user_id="ann", amount_tokens=5, idempotency_key="k-5"),  # joins
    ]
    _queued(committer, queued)
    batch: list[Any] = []
    joined = committer._joiner(batch)(frozenset({"ann", "bob"}))
    assert joined == [queued[0], queued[4], queued[5], queued[6]]
    assert [item[0] for item in batch] == joined
    assert _queue_of(committer) == [queued[1], refund, queued[3]]


async def test_nothing_joins_behind_an_operation_whose_wallet_is_unknown() -> None:
    committer = GroupCommitter(writer=None)  # type: ignore[arg-type]
    queued: list[Operation] = [
        Debit(user_id="ann", amount_tokens=1),
        VoidHold(hold_id="hold_" + "1" * 32),  # could be ann's hold: what follows keeps its place
        Debit(user_id="ann", amount_tokens=2),
        CaptureHold(hold_id="hold_" + "2" * 32, amount_tokens=1),
        Debit(user_id="ann", amount_tokens=3),
    ]
    _queued(committer, queued)
    joined = committer._joiner([])(frozenset({"ann"}))
    assert joined == [queued[0]]
    assert _queue_of(committer) == queued[1:]


async def test_a_full_batch_takes_no_more() -> None:
    committer = GroupCommitter(writer=None, max_batch_operations=3)  # type: ignore[arg-type]
    queued = [Debit(user_id="ann", amount_tokens=n) for n in range(1, 5)]
    _queued(committer, queued)
    batch: list[Any] = [None, None]  # two already in it: room for one
    assert committer._joiner(batch)(frozenset({"ann"})) == [queued[0]]
    assert _queue_of(committer) == queued[1:]


@POSTGRESQL_ONLY
async def test_a_batch_waiting_for_a_wallet_lock_takes_in_what_queued_on_it(
    database_url: str,
) -> None:
    settings = Settings(database_url=database_url, group_commit=True)
    async with TokenService(settings=settings, welcome_bonus_tokens=0) as service:
        for user in ("hot", "cold"):
            await service.open_wallet(user)
            await service.credit(user, amount=100)
        writer = service._writer
        assert writer is not None
        batches: list[int] = []  # each batch's size, what joined it included
        original = writer.apply

        async def recording(operations: Sequence[Operation], **options: Any) -> list[LedgerResult]:
            results = await original(operations, **options)
            batches.append(len(results))
            return results

        writer.apply = recording  # type: ignore[method-assign]
        # Another session holds the hot wallet's row lock, as another worker's batch does.
        url = make_url(database_url).set(drivername="postgresql")
        blocker = await asyncpg.connect(url.render_as_string(hide_password=False))
        try:
            blocking = blocker.transaction()
            await blocking.start()
            await blocker.execute("SELECT 1 FROM wallets WHERE user_id = 'hot' FOR UPDATE")
            first = asyncio.create_task(service.debit("hot", amount=1))
            await _until_waiting_for_a_lock(blocker)
            later = [
                asyncio.create_task(service.debit("hot", amount=2)),
                asyncio.create_task(service.debit("cold", amount=5)),
                asyncio.create_task(service.debit("hot", amount=3)),
            ]
            await asyncio.sleep(0.05)  # all three queued behind the waiting batch
            await blocking.rollback()
        finally:
            await blocker.close()
        results = [await first, *[await task for task in later]]
    assert all(result.success for result in results)
    # The hot wallet's three debits in one batch, in the order they were made.
    assert [result.new_balance for result in results] == [99, 97, 95, 94]
    assert batches[-2:] == [3, 1], batches
    async with TokenService(settings=settings, welcome_bonus_tokens=0) as service:
        assert (await service.audit()).ok


async def _until_waiting_for_a_lock(connection: asyncpg.Connection) -> None:
    for _ in range(LOCK_WAIT_POLLS):
        waiting = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the batch never waited for the wallet's lock")


class _CountingWriter:
    """Stands in for the ledger writer: records each batch's size, applies nothing."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[None]:
        yield None

    def turn(self) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()

    async def apply(self, operations: Sequence[Operation], **_: Any) -> list[LedgerResult]:
        self.batches.append(len(operations))
        return [OperationResult(success=True) for _ in operations]


async def test_a_drainer_gives_the_requests_on_their_way_a_few_turns_to_queue() -> None:
    """After a batch of four, four requests arriving one loop turn apart ride in one
    batch, not in the two or three the first of them would otherwise have closed."""
    writer = _CountingWriter()
    committer = GroupCommitter(writer)  # type: ignore[arg-type]

    async def debit_after(turns: int) -> LedgerResult:
        for _ in range(turns):
            await asyncio.sleep(0)
        return await committer.submit(Debit(user_id="ann", amount_tokens=1))

    await asyncio.gather(*(debit_after(0) for _ in range(4)))
    await committer.wait_idle()
    await asyncio.gather(*(debit_after(turns) for turns in range(4)))
    assert writer.batches == [4, 4]
