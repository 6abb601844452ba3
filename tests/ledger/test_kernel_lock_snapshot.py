"""The batch kernel judges a wallet by the grants it has when the kernel holds its lock.

On PostgreSQL the kernel locks its wallets and reads their grants in one statement.
When that statement waits for a wallet another transaction is writing, PostgreSQL
hands back the wallet's newest version, but a subquery still reads the statement's
snapshot: the grants from before that write. A kernel debit then took the wallet's
next expiry from grants that missed a credit's new grant, and the sweep never came
for it (the crash test found a grant 16 s past its expiry, untouched). SQLite has one
writer: nothing waits, nothing races.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import text

from tests.support.locks import until_someone_waits
from tokenbank import ManualClock, TokenService
from tokenbank.db.engine import write_transaction
from tokenbank.ledger import handlers
from tokenbank.ledger.operations import Credit, Debit
from tokenbank.ledger.writer import LedgerWriter

WAIT_FOR_THE_LOCK_S = 0.5  # long enough for the kernel's statement to be waiting


async def test_a_kernel_debit_that_waited_for_a_credit_sees_its_grant(
    service: TokenService, clock: ManualClock, engine_name: str
) -> None:
    if engine_name != "postgresql":
        pytest.skip("SQLite has one writer: nothing waits for a wallet's lock")
    await service.open_wallet("ida")
    await service.credit("ida", amount=100, operation_type="purchase")
    engine = await service.engine()
    expires_at = clock() + timedelta(hours=1)
    writer = LedgerWriter(engine, clock=clock)
    async with write_transaction(engine) as conn:
        # A credit with an expiry, not yet committed, holds the wallet's lock...
        credit = Credit(
            user_id="ida", amount_tokens=50, operation_type="bonus", expires_at=expires_at
        )
        assert (await handlers.credit(conn, credit, clock())).success
        # ...while a batch with a debit of the same wallet starts and waits for it.
        debit = asyncio.create_task(writer.apply([Debit(user_id="ida", amount_tokens=10)]))
        assert await until_someone_waits(engine, at_most_s=WAIT_FOR_THE_LOCK_S)
        assert not debit.done()
    (result,) = await debit
    assert result.success
    balance = await service.get_balance("ida")
    assert balance is not None and balance.tokens_balance == 140
    # The bonus is the wallet's only expiring grant: its expiry is the wallet's next event,
    # so the sweep will come for it (a grant the kernel did not see was left out).
    async with engine.connect() as conn:
        next_event = (
            await conn.execute(
                text("SELECT next_grant_event_at FROM wallets WHERE user_id = 'ida'")
            )
        ).scalar_one()
    assert next_event == expires_at
    clock.advance(timedelta(hours=2))
    await service.expire_grants()
    after = await service.get_balance("ida")
    # The debit took its 10 from the bonus (it expires first); the 40 left expired.
    assert after is not None and after.tokens_balance == 100
    report = await service.audit()
    assert report.ok, report.problems
