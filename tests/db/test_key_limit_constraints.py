"""The database itself refuses bad key limits and counters (migration 0012), with the
Python layer bypassed; each refusal next to rows it accepts. Both engines."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.db.rows import accepted, engine_with_ann, refused
from tokenbank.apps.repository import api_keys, apps, request_counts
from tokenbank.db.engine import write_transaction
from tokenbank.ledger.repository.spend_caps import daily_spend

NOW = datetime(2026, 1, 1, tzinfo=UTC)
DAY = date(2026, 1, 1)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    async for engine in engine_with_ann(database_url):
        await accepted(engine, apps, {"slug": "app", "created_at": NOW})
        yield engine


def key(number: int, **limits: Any) -> dict[str, Any]:
    return {
        "app_id": 1,
        "key_hash": f"{number:064d}",
        "display_prefix": f"tb_{number}",
        "scopes": "read",
        "created_at": NOW,
        **limits,
    }


async def test_key_limits_are_positive_or_none(engine: AsyncEngine) -> None:
    await accepted(engine, api_keys, key(1))
    await accepted(engine, api_keys, key(2, rate_limit_per_minute=1, daily_spend_cap_tokens=1))
    for bad in (
        key(3, rate_limit_per_minute=0),
        key(4, rate_limit_per_minute=-5),
        key(5, daily_spend_cap_tokens=0),
        key(6, daily_spend_cap_tokens=-1),
    ):
        await refused(engine, api_keys, bad)
    with pytest.raises(IntegrityError):  # an UPDATE is judged too
        async with write_transaction(engine) as conn:
            await conn.execute(update(api_keys).values(rate_limit_per_minute=0))


async def test_request_counts(engine: AsyncEngine) -> None:
    await accepted(engine, api_keys, key(1))
    await accepted(
        engine, request_counts, {"key_id": 1, "window_start": NOW, "claimed_requests": 1}
    )
    for bad in (
        {"key_id": 1, "window_start": NOW, "claimed_requests": 1},  # one row per window
        {"key_id": 1, "window_start": NOW.replace(minute=1), "claimed_requests": 0},
        {"key_id": 99, "window_start": NOW, "claimed_requests": 1},  # no such key
    ):
        await refused(engine, request_counts, bad)


async def test_a_days_spend_stays_within_its_cap(engine: AsyncEngine) -> None:
    await accepted(engine, api_keys, key(1, daily_spend_cap_tokens=10))
    await accepted(
        engine, daily_spend, {"key_id": 1, "day": DAY, "spent_tokens": 10, "cap_tokens": 10}
    )
    next_day = date(2026, 1, 2)
    for bad in (
        {"key_id": 1, "day": DAY, "spent_tokens": 1, "cap_tokens": 10},  # one row per day
        {"key_id": 1, "day": next_day, "spent_tokens": 11, "cap_tokens": 10},
        {"key_id": 1, "day": next_day, "spent_tokens": -1, "cap_tokens": 10},
        {"key_id": 1, "day": next_day, "spent_tokens": 0, "cap_tokens": 0},
        {"key_id": 99, "day": next_day, "spent_tokens": 1, "cap_tokens": 10},
    ):
        await refused(engine, daily_spend, bad)
    with pytest.raises(IntegrityError):  # past the cap by an UPDATE
        async with write_transaction(engine) as conn:
            await conn.execute(
                update(daily_spend).values(spent_tokens=daily_spend.c.spent_tokens + 1)
            )
