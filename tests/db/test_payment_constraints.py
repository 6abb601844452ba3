"""The database itself refuses bad packs, purchases and events (migration 0008), with
the Python layer bypassed; each refusal next to rows it accepts. Both engines."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.db.rows import accepted, engine_with_ann, refused
from tokenbank.db.engine import write_transaction
from tokenbank.payments.repository import events, packs, purchases

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    async for engine in engine_with_ann(database_url):
        yield engine


PACK = {
    "name": "Starter",
    "tokens": 150_000,
    "price_cents": 1_500,
    "currency": "usd",
    "active": True,
    "popular": False,
    "sort_order": 0,
    "created_at": NOW,
    "updated_at": NOW,
}


async def test_pack_terms(engine: AsyncEngine) -> None:
    await accepted(engine, packs, {**PACK, "id": "ok"})
    bad: list[dict[str, Any]] = [
        {"tokens": 0},
        {"price_cents": 0},
        {"price_cents": 10**9},
        {"currency": "USD"},
        {"currency": "us"},
        {"id": "ok"},  # taken
    ]
    for n, changes in enumerate(bad):
        await refused(engine, packs, {**PACK, "id": f"bad{n}", **changes})


def purchase(purchase_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "id": purchase_id,
        "user_id": "ann",
        "kind": "amount",
        "amount_cents": 1_000,
        "currency": "usd",
        "tokens": 100_000,
        "status": "pending",
        "refunded_cents": 0,
        "clawed_back_tokens": 0,
        "lost_tokens": 0,
        "frozen_tokens": 0,
        "created_at": NOW,
        "updated_at": NOW,
        **changes,
    }


async def test_purchase_rows(engine: AsyncEngine) -> None:
    await accepted(engine, purchases, purchase("p-ok"))
    await accepted(engine, purchases, purchase("p-failed", status="failed"))
    bad: list[dict[str, Any]] = [
        {"user_id": "nobody"},  # no such wallet
        {"kind": "gift"},
        {"status": "done"},
        {"amount_cents": 0},
        {"currency": "EUR"},
        {"tokens": 0},  # only a subscription sells no tokens
        {"status": "paid"},  # paid needs a time and a credit
        {"status": "paid", "paid_at": NOW},  # and the credit
        {"refunded_cents": 1_001},
        {"clawed_back_tokens": 60_000, "lost_tokens": 40_001},
        {"frozen_tokens": 1},  # frozen only in an open dispute
        {"dispute_status": "maybe"},
        {"kind": "subscription", "tokens": 0},  # a subscription names its plan
        {"pack_id": "no-such-pack"},
    ]
    for n, changes in enumerate(bad):
        await refused(engine, purchases, purchase(f"p-bad{n}", **changes))
    await accepted(
        engine,
        purchases,
        purchase("p-disputed", dispute_status="open", frozen_tokens=100_000),
    )


async def test_taken_back_never_exceeds_the_tokens_on_update(engine: AsyncEngine) -> None:
    await accepted(engine, purchases, purchase("p1", clawed_back_tokens=50_000))
    with pytest.raises(IntegrityError):
        async with write_transaction(engine) as conn:
            await conn.execute(
                update(purchases).where(purchases.c.id == "p1").values(lost_tokens=50_001)
            )


async def test_an_event_id_is_taken_in_once(engine: AsyncEngine) -> None:
    row = {
        "id": "evt_1",
        "type": "payment_intent.succeeded",
        "outcome": "applied",
        "received_at": NOW,
    }
    await accepted(engine, events, row)
    await refused(engine, events, {**row, "type": "other"})
    await refused(engine, events, {**row, "id": "evt_2", "outcome": "maybe"})
