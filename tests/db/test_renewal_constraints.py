"""The database itself refuses bad plan terms and bad scheduled credits (migration 0006),
with the Python layer bypassed; each refusal next to a row it accepts. Both engines."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.db.rows import accepted, engine_with_ann, refused
from tokenbank.ledger.repository.tables import scheduled_credits, wallets
from tokenbank.plans.repository import plans

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    async for engine in engine_with_ann(database_url):
        yield engine


async def test_plan_policy_and_cap(engine: AsyncEngine) -> None:
    base = {"monthly_allocation_tokens": 10, "created_at": NOW, "updated_at": NOW}
    await accepted(engine, plans, {**base, "name": "ok", "allocation_policy": "rollover"})
    await accepted(engine, plans, {**base, "name": "ok2", "rollover_cap_tokens": 0})
    await refused(engine, plans, {**base, "name": "p1", "allocation_policy": "forever"})
    await refused(engine, plans, {**base, "name": "p2", "rollover_cap_tokens": -1})
    await refused(engine, plans, {**base, "name": "p3", "rollover_cap_tokens": 10**13})


async def test_scheduled_credit_terms(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        wallet_id = (await conn.execute(wallets.select())).one().id
    good = {
        "wallet_id": wallet_id,
        "operation_type": "bonus",
        "category": "promotional",
        "priority": 50,
        "amount_tokens": 5,
        "effective_at": NOW,
        "expires_at": NOW + timedelta(days=1),
        "idempotency_scope": "",
        "created_at": NOW,
    }
    await accepted(engine, scheduled_credits, good)
    bad: list[dict[str, Any]] = [
        {"category": "gold"},
        {"priority": 101},
        {"amount_tokens": 0},
        {"expires_at": NOW},
        {"wallet_id": wallet_id + 1_000},
    ]
    for changes in bad:
        await refused(engine, scheduled_credits, {**good, **changes})
