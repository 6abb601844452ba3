"""The batch kernel's write statement is accepted as written: a batch of every kind
of operation the kernel takes commits on its first attempt, without the writer's
fallback (one operation at a time), which would give the same outcomes and so hide
a statement the database refuses every time. (Found by a first attempt to merge
PostgreSQL's two statements into one: the sealing triggers, statement-level, then saw
the statement's own headers and refused every batch, and every other test passed;
migration 0016 now lets them pass a header their own statement wrote.)"""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank import ManualClock, TokenService
from tokenbank.config import Settings
from tokenbank.ledger.operations import CaptureHold, Credit, Debit, Operation, PlaceHold
from tokenbank.ledger.results import LedgerResult
from tokenbank.ledger.writer import Joiner, LedgerWriter


async def test_a_mixed_batch_commits_through_the_kernel(
    database_url: str, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(database_url=database_url, group_commit=False)
    async with TokenService(
        settings=settings, clock=clock, welcome_bonus_tokens=0, auto_migrate=False
    ) as service:
        for user in ("ann", "bob"):
            await service.open_wallet(user)
            await service.credit(user, amount=1_000)
        held = await service.hold("ann", 100, ttl_seconds=60)
        assert held.hold_id is not None
        attempts: list[bool] = []
        original = LedgerWriter._apply_all

        async def recording(
            self: LedgerWriter,
            conn: AsyncConnection,
            operations: list[Operation],
            now: datetime,
            *,
            use_kernel: bool,
            join: Joiner | None = None,
        ) -> list[LedgerResult]:
            attempts.append(use_kernel)
            return await original(self, conn, operations, now, use_kernel=use_kernel, join=join)

        monkeypatch.setattr(LedgerWriter, "_apply_all", recording)
        writer = LedgerWriter(await service.engine(), clock=clock)
        operations: list[Operation] = [
            Debit(user_id="ann", amount_tokens=10, idempotency_key="d1", metadata={"m": 1}),
            Debit(user_id="bob", amount_tokens=20, pricing={"model": "m", "tokens": 3}),
            Credit(user_id="bob", amount_tokens=5, description="top-up"),
            Debit(user_id="ann", amount_tokens=30),
            PlaceHold(user_id="bob", amount_tokens=40, ttl_seconds=60, idempotency_key="h1"),
            CaptureHold(hold_id=held.hold_id, amount_tokens=60, idempotency_key="c1"),
        ]
        results = await writer.apply(operations)
        balances = [await service.get_balance(user) for user in ("ann", "bob")]
        report = await service.audit()

    assert attempts == [True], "the kernel's statement was refused; the fallback wrote"
    assert all(result.success for result in results), results
    assert [(b.tokens_balance, b.held) for b in balances if b] == [(900, 0), (985, 40)]
    assert report.ok, report.problems
