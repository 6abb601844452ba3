"""Plan renewals (decision 14): each policy month by month, eligibility, dry runs,
exactly once per period, and bad input. Both engines; every step checks the books."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from tokenbank import InvalidInput, ManualClock, TokenService
from tokenbank.config import Settings
from tokenbank.db.engine import write_transaction
from tokenbank.plans.service import PlanService
from tokenbank.renewals import repository as renewal_repo

DAY = timedelta(days=1)
JOINED = datetime(2026, 1, 31, 9, 30, tzinfo=UTC)


@pytest.fixture
async def bank(database_url: str, clock: ManualClock) -> AsyncIterator[TokenService]:
    clock.set(JOINED)
    async with TokenService(
        database_url, settings=Settings(), clock=clock, welcome_bonus_tokens=0, auto_migrate=False
    ) as service:
        yield service


@pytest.fixture
async def plans(bank: TokenService) -> PlanService:
    return PlanService(await bank.engine(), clock=bank.clock)


async def books_ok(service: TokenService) -> None:
    report = await service.audit()
    assert report.ok, report.problems


async def balance(service: TokenService, user_id: str) -> int:
    info = await service.get_balance(user_id)
    assert info is not None
    return info.tokens_balance


async def join(bank: TokenService, plans: PlanService, user_id: str, plan: str) -> None:
    await bank.open_wallet(user_id)
    await plans.set_user_plan(user_id, plan)


async def test_expire_policy_month_by_month(
    bank: TokenService, plans: PlanService, clock: ManualClock
) -> None:
    await plans.create_plan("pro", monthly_allocation_tokens=2_000)
    await join(bank, plans, "ann", "pro")
    renewals = bank.renewals

    first = await renewals.renew_user("ann")
    assert first.success, first
    assert (first.period_start, first.period_end) == (JOINED, datetime(2026, 2, 28, 9, 30, tzinfo=UTC))
    assert first.expires_at == first.period_end
    assert (first.tokens_granted, first.tokens_carried, first.tokens_forfeited) == (2_000, 0, 0)
    assert first.new_balance == 2_000
    again = await renewals.renew_user("ann")
    assert not again.success and again.error == "already renewed for this period"
    assert await balance(bank, "ann") == 2_000

    await bank.debit("ann", amount=500, operation_type="usage")
    check = await renewals.check_eligibility("ann")
    assert not check.eligible and check.next_renewal_date == first.period_end
    assert check.days_until_renewal == 28

    clock.set(datetime(2026, 2, 28, 9, 30, tzinfo=UTC))  # the period's end, to the second
    assert (await renewals.check_eligibility("ann")).eligible
    second = await renewals.renew_user("ann")
    assert second.success, second
    # The 1,500 left of January's allocation expired with its period.
    assert second.new_balance == 2_000
    assert second.period_end == datetime(2026, 3, 31, 9, 30, tzinfo=UTC)
    info = await bank.get_balance("ann")
    assert info is not None and info.last_renewal_at == clock() and info.tier == "pro"
    await books_ok(bank)


async def test_rollover_keeps_up_to_the_cap(
    bank: TokenService, plans: PlanService, clock: ManualClock
) -> None:
    await plans.create_plan(
        "pro", monthly_allocation_tokens=1_000, allocation_policy="rollover", rollover_cap_tokens=300
    )
    await join(bank, plans, "bo", "pro")
    first = await bank.renewals.renew_user("bo")
    # An allocation lasts its period and the next.
    assert first.expires_at == datetime(2026, 3, 31, 9, 30, tzinfo=UTC)
    await bank.debit("bo", amount=400, operation_type="usage")

    clock.set(datetime(2026, 3, 1, tzinfo=UTC))
    second = await bank.renewals.renew_user("bo")
    assert (second.tokens_carried, second.tokens_forfeited) == (300, 300)
    assert second.new_balance == 1_300
    # The 300 carried are spent first (they expire first), and lapse at the end of March.
    await bank.debit("bo", amount=100, operation_type="usage")
    grants = await bank.get_grants("bo", limit=10)
    assert grants is not None
    by_expiry = {g.expires_at: g.remaining_tokens for g in grants if g.remaining_tokens}
    assert by_expiry == {
        datetime(2026, 3, 31, 9, 30, tzinfo=UTC): 200,
        datetime(2026, 4, 30, 9, 30, tzinfo=UTC): 1_000,
    }
    clock.set(datetime(2026, 3, 31, 9, 30, tzinfo=UTC))
    third = await bank.renewals.renew_user("bo")
    # March's 200 left expired on time; April keeps the cap of February's 1,000.
    assert (third.tokens_carried, third.tokens_forfeited) == (300, 700)
    assert third.new_balance == 1_300
    await books_ok(bank)


async def test_keep_policy_accumulates(
    bank: TokenService, plans: PlanService, clock: ManualClock
) -> None:
    await plans.create_plan("gift", monthly_allocation_tokens=100, allocation_policy="keep")
    await join(bank, plans, "cy", "gift")
    for month in range(1, 4):
        result = await bank.renewals.renew_user("cy")
        assert result.success and result.expires_at is None
        assert result.new_balance == 100 * month
        clock.advance(31 * DAY)
    await books_ok(bank)


async def test_rollover_never_takes_what_a_hold_needs(
    bank: TokenService, plans: PlanService, clock: ManualClock
) -> None:
    await plans.create_plan(
        "pro", monthly_allocation_tokens=1_000, allocation_policy="rollover", rollover_cap_tokens=0
    )
    await join(bank, plans, "di", "pro")
    await bank.renewals.renew_user("di")
    clock.set(datetime(2026, 2, 27, tzinfo=UTC))
    hold = await bank.hold("di", amount=800, operation_type="usage", ttl_seconds=3_600 * 24 * 3)
    assert hold.success
    clock.set(datetime(2026, 3, 1, tzinfo=UTC))
    renewed = await bank.renewals.renew_user("di")
    # Cap 0 would forfeit all 1,000; the hold's 800 stay.
    assert (renewed.tokens_forfeited, renewed.tokens_carried) == (200, 800)
    captured = await bank.capture(hold.hold_id or "", amount=800)
    assert captured.success
    assert await balance(bank, "di") == 1_000
    await books_ok(bank)
