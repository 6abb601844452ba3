"""The database refuses bad events, endpoints, deliveries, attempts and alert levels
(migration 0013), with the Python layer bypassed; each refusal next to a row it
accepts, so each test fails without its CHECK. Both engines."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.db.rows import accepted, engine_with_ann, refused
from tokenbank.apps.service import AppService
from tokenbank.db.engine import write_transaction
from tokenbank.events.repository import attempts, deliveries, endpoints, events, levels

NOW = datetime(2026, 1, 1, tzinfo=UTC)
EVENT = {"type": "balance.low", "user_id": "ann", "payload": {}, "created_at": NOW}
ENDPOINT = {
    "url": "https://app.example.test/hooks",
    "event_types": ["balance.low"],
    "secret": "whsec_c2VjcmV0",
    "enabled": True,
    "created_at": NOW,
    "updated_at": NOW,
}
DELIVERY = {
    "event_id": "evt_1",
    "endpoint_id": "whep_1",
    "status": "pending",
    "attempts": 0,
    "next_attempt_at": NOW,
    "created_at": NOW,
    "updated_at": NOW,
}


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    async for engine in engine_with_ann(database_url):
        await AppService(engine).create_app("shop")
        ENDPOINT["app_id"] = await _app_id(engine)
        await accepted(engine, events, {**EVENT, "id": "evt_1"})
        await accepted(engine, endpoints, {**ENDPOINT, "id": "whep_1"})
        yield engine


async def _app_id(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(
            (await conn.execute(text("SELECT id FROM apps WHERE slug = 'shop'"))).scalar_one()
        )


async def test_events_have_a_known_type_and_an_evt_id(engine: AsyncEngine) -> None:
    await accepted(engine, events, {**EVENT, "id": "evt_2", "type": "hold.expired"})
    await refused(engine, events, {**EVENT, "id": "evt_3", "type": "balance.sideways"})
    await refused(engine, events, {**EVENT, "id": "xyz_4"})


async def test_endpoints_are_http_with_a_standard_secret(engine: AsyncEngine) -> None:
    await accepted(engine, endpoints, {**ENDPOINT, "id": "whep_2", "url": "http://127.0.0.1/x"})
    await refused(engine, endpoints, {**ENDPOINT, "id": "whep_3", "url": "ftp://example.test/"})
    await refused(engine, endpoints, {**ENDPOINT, "id": "whep_4", "secret": "hunter2"})


async def test_deliveries_states(engine: AsyncEngine) -> None:
    await accepted(engine, events, {**EVENT, "id": "evt_2"})
    await accepted(engine, deliveries, {**DELIVERY})
    bad: list[dict[str, Any]] = [
        {"status": "lost"},
        {"attempts": -1},
        {"status": "delivered", "next_attempt_at": None},  # delivered without a time
        {"status": "pending", "next_attempt_at": None},  # pending never due
        {"status": "dead", "next_attempt_at": NOW},  # dead yet due
        {"status": "pending", "delivered_at": NOW},  # delivered time on a pending one
    ]
    for changes in bad:
        await refused(engine, deliveries, {**DELIVERY, "event_id": "evt_2", **changes})
    await refused(engine, deliveries, {**DELIVERY})  # one per (event, endpoint)
    good = {"status": "delivered", "next_attempt_at": None, "delivered_at": NOW}
    await accepted(engine, deliveries, {**DELIVERY, "event_id": "evt_2", **good})


async def test_attempts_log_an_outcome(engine: AsyncEngine) -> None:
    await accepted(engine, deliveries, {**DELIVERY})
    row = {"delivery_id": 1, "started_at": NOW, "duration_ms": 5, "status_code": 500}
    await accepted(engine, attempts, {**row, "attempt": 1})
    bad: list[dict[str, Any]] = [
        {"attempt": 0},
        {"attempt": 2, "duration_ms": -1},
        {"attempt": 3, "status_code": 99},
        {"attempt": 4, "status_code": 600},
        {"attempt": 5, "status_code": None, "error": None},
        {"attempt": 1},  # logged once
    ]
    for changes in bad:
        await refused(engine, attempts, {**row, **changes})
    await accepted(engine, attempts, {**row, "attempt": 2, "status_code": None, "error": "x"})


async def test_one_row_of_levels_with_critical_within_low(engine: AsyncEngine) -> None:
    await refused(
        engine, levels, {"id": 2, "low_tokens": 10, "critical_tokens": 1, "updated_at": NOW}
    )
    with pytest.raises(IntegrityError):
        async with write_transaction(engine) as conn:
            await conn.execute(update(levels).values(low_tokens=10, critical_tokens=11))
    async with write_transaction(engine) as conn:
        await conn.execute(update(levels).values(low_tokens=10, critical_tokens=10))
