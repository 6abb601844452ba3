"""The database queues auto-recharges by itself (migration 0008), with the Python layer
bypassed: an UPDATE that takes a wallet's available tokens across its armed threshold,
downward, inserts one queued recharge; anything else inserts none. Both engines."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbank import TokenService
from tokenbank.db.engine import write_transaction
from tokenbank.ledger.repository.tables import wallets
from tokenbank.payments.repository import auto_recharge, recharges

NOW = datetime(2026, 1, 1, tzinfo=UTC)
THRESHOLD = 100


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    async with TokenService(database_url, welcome_bonus_tokens=0, auto_migrate=False) as bank:
        await bank.open_wallet("ann")
        engine = await bank.engine()
        async with write_transaction(engine) as conn:
            await conn.execute(
                insert(auto_recharge).values(
                    user_id="ann",
                    enabled=True,
                    threshold_tokens=THRESHOLD,
                    amount_cents=500,
                    payment_method_id="pm_test",
                    updated_at=NOW,
                )
            )
        yield engine


async def set_wallet(engine: AsyncEngine, **values: Any) -> None:
    async with write_transaction(engine) as conn:
        await conn.execute(update(wallets).where(wallets.c.user_id == "ann").values(**values))


async def queued(engine: AsyncEngine) -> list[tuple[str, int]]:
    async with engine.connect() as conn:
        query = select(recharges.c.status, recharges.c.available_tokens).order_by(recharges.c.id)
        return [(row.status, row.available_tokens) for row in (await conn.execute(query)).all()]


async def armed_at(engine: AsyncEngine) -> int | None:
    async with engine.connect() as conn:
        query = select(wallets.c.recharge_below_tokens).where(wallets.c.user_id == "ann")
        found: int | None = (await conn.execute(query)).scalar_one()
        return found


async def test_the_settings_arm_and_disarm_the_wallet(engine: AsyncEngine) -> None:
    assert await armed_at(engine) == THRESHOLD
    async with write_transaction(engine) as conn:
        await conn.execute(update(auto_recharge).values(threshold_tokens=250))
    assert await armed_at(engine) == 250
    async with write_transaction(engine) as conn:
        await conn.execute(update(auto_recharge).values(enabled=False))
    assert await armed_at(engine) is None


async def test_a_crossing_queues_one_recharge_and_a_second_waits_for_the_first(
    engine: AsyncEngine,
) -> None:
    await set_wallet(engine, balance_tokens=500)  # upward: none
    assert await queued(engine) == []
    await set_wallet(engine, balance_tokens=60)  # across, downward
    assert await queued(engine) == [("queued", 60)]
    await set_wallet(engine, balance_tokens=500)
    await set_wallet(engine, balance_tokens=40)  # across again while one is queued
    assert await queued(engine) == [("queued", 60)]
    async with write_transaction(engine) as conn:
        await conn.execute(update(recharges).values(status="succeeded"))
    await set_wallet(engine, balance_tokens=500)
    await set_wallet(engine, balance_tokens=500, held_tokens=450)  # a hold crosses too
    assert await queued(engine) == [("succeeded", 60), ("queued", 50)]


async def test_updates_that_do_not_cross_queue_nothing(engine: AsyncEngine) -> None:
    await set_wallet(engine, balance_tokens=500)
    await set_wallet(engine, balance_tokens=THRESHOLD)  # not below: still armed
    await set_wallet(engine, balance_tokens=300)
    assert await queued(engine) == []
    # A rolled-back crossing leaves nothing behind.
    async with engine.connect() as conn:
        transaction = await conn.begin()
        await conn.execute(update(wallets).values(balance_tokens=10))
        assert len((await conn.execute(select(recharges))).all()) == 1  # seen inside
        await transaction.rollback()
    assert await queued(engine) == []
    # Below to further below, or back up from below: not a crossing.
    async with write_transaction(engine) as conn:
        await conn.execute(update(auto_recharge).values(enabled=False))
    await set_wallet(engine, balance_tokens=50)  # disarmed: none
    async with write_transaction(engine) as conn:
        await conn.execute(update(auto_recharge).values(enabled=True))
    await set_wallet(engine, balance_tokens=20)
    await set_wallet(engine, balance_tokens=90)
    assert await queued(engine) == []


async def test_a_wallet_that_is_not_active_queues_nothing(engine: AsyncEngine) -> None:
    await set_wallet(engine, balance_tokens=500)
    await set_wallet(engine, balance_tokens=10, status="suspended", suspended_reason="admin")
    await set_wallet(engine, balance_tokens=500, status="closed", suspended_reason=None)
    await set_wallet(engine, balance_tokens=10)
    assert await queued(engine) == []


async def test_one_recharge_in_flight_per_wallet(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        wallet_id = (await conn.execute(select(wallets.c.id))).scalar_one()
    row = {
        "wallet_id": wallet_id,
        "available_tokens": 5,
        "created_at": NOW,
        "updated_at": NOW,
    }
    async with write_transaction(engine) as conn:
        await conn.execute(insert(recharges).values(**row, status="failed"))
        await conn.execute(insert(recharges).values(**row, status="queued"))
    for status in ("queued", "processing"):
        with pytest.raises(IntegrityError):
            async with write_transaction(engine) as conn:
                await conn.execute(insert(recharges).values(**row, status=status))
    async with write_transaction(engine) as conn:
        await conn.execute(insert(recharges).values(**row, status="succeeded"))
