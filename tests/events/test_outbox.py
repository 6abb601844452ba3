"""The outbox: events written by the database in their cause's transaction, once per
crossing, on both engines (decision 15)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text

from tokenbank import ManualClock, TokenService
from tokenbank.config import Settings
from tokenbank.events.service import sync_alert_levels


async def events_of(service: TokenService, user_id: str) -> list[tuple[str, dict[str, Any]]]:
    engine = await service.engine()
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT type, payload, id FROM events WHERE user_id = :user"
                    " ORDER BY created_at, id"
                ),
                {"user": user_id},
            )
        ).all()
    return [
        (row.type, row.payload if isinstance(row.payload, dict) else _json(row.payload))
        for row in rows
    ]


def _json(value: Any) -> dict[str, Any]:
    import json

    loaded: dict[str, Any] = json.loads(value)
    return loaded


def types_of(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [event_type for event_type, _ in events]


async def test_a_crossing_is_one_event_and_recovery_another(service: TokenService) -> None:
    await service.open_wallet("ann")
    await service.credit("ann", amount=1_500, operation_type="purchase")
    assert await events_of(service, "ann") == []
    await service.debit("ann", amount=400, operation_type="usage")  # 1,100: above low
    await service.debit("ann", amount=200, operation_type="usage")  # 900: crosses low
    await service.debit("ann", amount=100, operation_type="usage")  # 800: no crossing
    await service.debit("ann", amount=750, operation_type="usage")  # 50: crosses critical
    await service.debit("ann", amount=10, operation_type="usage")  # 40: nothing
    await service.credit("ann", amount=2_000, operation_type="purchase")  # 2,040: recovered
    events = await events_of(service, "ann")
    assert types_of(events) == ["balance.low", "balance.critical", "balance.recovered"]
    low = events[0][1]
    assert (low["userId"], low["availableTokens"], low["thresholdTokens"]) == ("ann", 900, 1_000)
    assert events[1][1]["thresholdTokens"] == 100


async def test_one_debit_across_both_levels_is_two_events(service: TokenService) -> None:
    await service.open_wallet("bea")
    await service.credit("bea", amount=5_000, operation_type="purchase")
    await service.debit("bea", amount=4_990, operation_type="usage")
    # One transaction: the same time, so in no particular order.
    assert sorted(types_of(await events_of(service, "bea"))) == ["balance.critical", "balance.low"]


async def test_holds_count_against_the_available_tokens(service: TokenService) -> None:
    await service.open_wallet("cy")
    await service.credit("cy", amount=1_200, operation_type="purchase")
    hold = await service.hold("cy", amount=300, ttl_seconds=60)
    assert hold.success
    assert types_of(await events_of(service, "cy")) == ["balance.low"]


async def test_status_changes_and_expired_holds(service: TokenService, clock: ManualClock) -> None:
    await service.open_wallet("dee")
    await service.credit("dee", amount=5_000, operation_type="purchase")
    await service.set_wallet_status("dee", "suspended")
    await service.set_wallet_status("dee", "active")
    await service.hold("dee", amount=10, ttl_seconds=60)
    clock.advance(120)
    assert await service.release_expired_holds() == 1
    kinds = types_of(await events_of(service, "dee"))
    assert kinds == ["wallet.suspended", "wallet.reactivated", "hold.expired"]


async def test_a_change_that_rolls_back_leaves_no_event(service: TokenService) -> None:
    await service.open_wallet("eve")
    await service.credit("eve", amount=1_500, operation_type="purchase")
    engine = await service.engine()
    try:
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE wallets SET balance_tokens = 10 WHERE user_id = 'eve'"))
            inside = (await conn.execute(text("SELECT count(*) FROM events"))).scalar_one()
            assert inside == 2  # low and critical, inside the transaction
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    assert await events_of(service, "eve") == []


async def test_the_levels_follow_the_settings(service: TokenService, clock: ManualClock) -> None:
    await service.open_wallet("fay")
    await service.credit("fay", amount=600, operation_type="purchase")
    assert types_of(await events_of(service, "fay")) == []  # credits from 0 cross up only
    settings = Settings(low_balance_tokens=500, critical_balance_tokens=50)
    assert await sync_alert_levels(await service.engine(), settings, clock())
    assert not await sync_alert_levels(await service.engine(), settings, clock())
    await service.debit("fay", amount=200, operation_type="usage")  # 400 < 500
    await service.open_wallet("gus")  # a new wallet gets the levels too
    await service.credit("gus", amount=600, operation_type="purchase")
    await service.debit("gus", amount=560, operation_type="usage")  # 40 < 50
    assert types_of(await events_of(service, "fay")) == ["balance.low"]
    assert sorted(types_of(await events_of(service, "gus"))) == ["balance.critical", "balance.low"]


async def test_racing_debits_cross_each_level_once(database_url: str, engine_name: str) -> None:
    """200 debits from four services (their own connections and group commits) race
    down through both levels: one balance.low, one balance.critical."""
    if engine_name != "postgresql":
        pytest.skip("SQLite has one writer: nothing races")
    services = [
        TokenService(database_url, welcome_bonus_tokens=0, auto_migrate=False) for _ in range(4)
    ]
    try:
        await services[0].open_wallet("race")
        await services[0].credit("race", amount=2_000, operation_type="purchase")
        results = await asyncio.gather(
            *(
                service.debit("race", amount=10, operation_type="usage")
                for service in services
                for _ in range(50)
            )
        )
        assert all(result.success for result in results)
        assert sorted(types_of(await events_of(services[0], "race"))) == [
            "balance.critical",
            "balance.low",
        ]
    finally:
        for service in services:
            await service.close()
