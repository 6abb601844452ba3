"""Plan renewals (decision 16): each policy month by month, eligibility, dry runs,
exactly once per period, and bad input. Both engines; every step checks the books."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from tokenbank import InvalidInput, ManualClock, TokenService
from tokenbank.config import Settings
from tokenbank.db.engine import write_transaction
from tokenbank.ledger.repository.tables import plan_renewals
from tokenbank.plans.service import PlanService
from tokenbank.renewals import MonthlyRenewalService

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
    renewals = MonthlyRenewalService(bank)

    first = await renewals.renew_user("ann")
    assert first.success, first
    assert (first.period_start, first.period_end) == (
        JOINED,
        datetime(2026, 2, 28, 9, 30, tzinfo=UTC),
    )
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
        "pro",
        monthly_allocation_tokens=1_000,
        allocation_policy="rollover",
        rollover_cap_tokens=300,
    )
    await join(bank, plans, "bo", "pro")
    first = await MonthlyRenewalService(bank).renew_user("bo")
    # An allocation lasts its period and the next.
    assert first.expires_at == datetime(2026, 3, 31, 9, 30, tzinfo=UTC)
    await bank.debit("bo", amount=400, operation_type="usage")

    clock.set(datetime(2026, 3, 1, tzinfo=UTC))
    second = await MonthlyRenewalService(bank).renew_user("bo")
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
    third = await MonthlyRenewalService(bank).renew_user("bo")
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
        result = await MonthlyRenewalService(bank).renew_user("cy")
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
    await MonthlyRenewalService(bank).renew_user("di")
    clock.set(datetime(2026, 2, 27, tzinfo=UTC))
    hold = await bank.hold("di", amount=800, operation_type="usage", ttl_seconds=3_600 * 24 * 3)
    assert hold.success
    clock.set(datetime(2026, 3, 1, tzinfo=UTC))
    renewed = await MonthlyRenewalService(bank).renew_user("di")
    # Cap 0 would forfeit all 1,000; the hold's 800 stay.
    assert (renewed.tokens_forfeited, renewed.tokens_carried) == (200, 800)
    captured = await bank.capture(hold.hold_id or "", amount=800)
    assert captured.success
    assert await balance(bank, "di") == 1_000
    await books_ok(bank)


async def test_eligibility_says_why_not(
    bank: TokenService, plans: PlanService, clock: ManualClock
) -> None:
    await plans.create_plan("free")  # no allocation
    await plans.create_plan("pro", monthly_allocation_tokens=10)
    renewals = MonthlyRenewalService(bank)
    assert (await renewals.check_eligibility("nobody")).reason == "no wallet for this user"
    await bank.open_wallet("ann")
    assert (await renewals.check_eligibility("ann")).reason == "not on a plan"
    await plans.set_user_plan("ann", "free")
    assert (
        await renewals.check_eligibility("ann")
    ).reason == "plan 'free' has no monthly allocation"
    await plans.set_user_plan("ann", "pro")
    await bank.set_wallet_status("ann", "suspended")
    refused = await renewals.renew_user("ann")
    assert (refused.success, refused.error) == (False, "wallet is suspended")
    await bank.set_wallet_status("ann", "active")
    eligible = await renewals.check_eligibility("ann")
    assert (eligible.eligible, eligible.tier, eligible.days_until_renewal) == (True, "pro", 0)
    assert await balance(bank, "ann") == 0  # checking changed nothing


async def test_a_dry_run_changes_nothing_and_says_what_would_happen(
    bank: TokenService, plans: PlanService, clock: ManualClock
) -> None:
    await plans.create_plan("gift", monthly_allocation_tokens=100)
    await plans.create_plan("biz", monthly_allocation_tokens=10_000)
    for user_id, plan in [("a", "gift"), ("b", "gift"), ("c", "biz")]:
        await join(bank, plans, user_id, plan)
    preview = await MonthlyRenewalService(bank).renew_all_eligible(dry_run=True, tier="gift")
    assert (preview.dry_run, preview.total_processed, preview.successful) == (True, 2, 2)
    assert [(r.user_id, r.tokens_granted, r.new_balance) for r in preview.renewals] == [
        ("a", 100, None),
        ("b", 100, None),
    ]
    assert [await balance(bank, user) for user in "abc"] == [0, 0, 0]

    limited = await MonthlyRenewalService(bank).renew_all_eligible(limit=2)
    assert (limited.total_processed, limited.successful) == (2, 2)
    rest = await MonthlyRenewalService(bank).renew_all_eligible()
    assert (rest.total_processed, rest.successful, rest.failed) == (1, 1, 0)
    assert [await balance(bank, user) for user in "abc"] == [100, 100, 10_000]
    nothing = await MonthlyRenewalService(bank).renew_all_eligible()
    assert nothing.total_processed == 0
    await books_ok(bank)


async def test_racing_renewals_grant_once(
    bank: TokenService, plans: PlanService, clock: ManualClock
) -> None:
    await plans.create_plan("pro", monthly_allocation_tokens=2_000)
    users = [f"user-{n}" for n in range(12)]
    for user_id in users:
        await join(bank, plans, user_id, "pro")
    results = await asyncio.gather(
        *(MonthlyRenewalService(bank).renew_user(user_id) for user_id in users for _ in range(3))
    )
    assert sum(result.success for result in results) == len(users)
    assert {r.error for r in results if not r.success} == {"already renewed for this period"}
    assert [await balance(bank, user_id) for user_id in users] == [2_000] * len(users)
    await books_ok(bank)


async def test_the_database_refuses_a_second_renewal_of_a_period(
    bank: TokenService, plans: PlanService
) -> None:
    await plans.create_plan("pro", monthly_allocation_tokens=2_000)
    await join(bank, plans, "ann", "pro")
    await MonthlyRenewalService(bank).renew_user("ann")
    engine = await bank.engine()
    async with write_transaction(engine) as conn:
        row = (await conn.execute(select(plan_renewals))).one()._asdict()
    with pytest.raises(IntegrityError):
        async with write_transaction(engine) as conn:
            await conn.execute(insert(plan_renewals).values(row))
    bad_rows: list[dict[str, Any]] = [
        {"granted_tokens": 0, "period_start": JOINED - DAY},
        {"carried_tokens": -1, "period_start": JOINED - DAY},
        {"policy": "forever", "period_start": JOINED - DAY},
        {"period_end": JOINED - DAY, "period_start": JOINED - DAY},
    ]
    for changes in bad_rows:
        with pytest.raises(IntegrityError):
            async with write_transaction(engine) as conn:
                await conn.execute(insert(plan_renewals).values({**row, **changes}))


async def test_bad_plan_terms_are_refused_and_write_nothing(
    bank: TokenService, plans: PlanService
) -> None:
    bad: list[dict[str, object]] = [
        {"monthly_allocation_tokens": -1},
        {"allocation_policy": "forever"},
        {"rollover_cap_tokens": -5},
        {"rollover_cap_tokens": "many"},
    ]
    for terms in bad:
        with pytest.raises(InvalidInput):
            await plans.create_plan("pro", **terms)  # type: ignore[arg-type]
    assert await plans.list_plans() == []
    await plans.create_plan("pro", monthly_allocation_tokens=5)
    for terms in bad:
        with pytest.raises(InvalidInput):
            await plans.update_plan("pro", **terms)  # type: ignore[arg-type]
    assert (await plans.get_plan("pro")).allocation_policy == "expire"
    with pytest.raises(InvalidInput):
        await MonthlyRenewalService(bank).renew_all_eligible(tier="platinum")
    with pytest.raises(InvalidInput):
        await MonthlyRenewalService(bank).renew_all_eligible(limit=0)
    with pytest.raises(InvalidInput):
        await MonthlyRenewalService(bank).renew_user("")


async def test_joining_another_plan_starts_its_periods_and_missed_months_are_not_back_filled(
    bank: TokenService, plans: PlanService, clock: ManualClock
) -> None:
    await plans.create_plan("gift", monthly_allocation_tokens=100, allocation_policy="keep")
    await plans.create_plan("pro", monthly_allocation_tokens=2_000)
    await join(bank, plans, "ann", "gift")
    await MonthlyRenewalService(bank).renew_user("ann")
    clock.advance(3 * DAY)
    await plans.set_user_plan("ann", "gift")  # the same plan: nothing changes
    assert not (await MonthlyRenewalService(bank).check_eligibility("ann")).eligible
    await plans.set_user_plan("ann", "pro")
    joined_pro = clock()
    switched = await MonthlyRenewalService(bank).renew_user("ann")
    assert switched.success and switched.period_start == joined_pro
    # Pro's policy applies to pro's allocations: gift's 100 was granted to keep.
    assert (switched.tokens_carried, switched.tokens_forfeited) == (0, 0)
    assert switched.new_balance == 2_100
    clock.advance(100 * DAY)  # three periods without a renewal run
    late = await MonthlyRenewalService(bank).renew_user("ann")
    assert late.success and late.period_start is not None and late.period_end is not None
    assert late.period_start <= clock() < late.period_end
    assert late.period_start == datetime(2026, 5, 3, 9, 30, tzinfo=UTC)  # pro joined 3 Feb
    assert await balance(bank, "ann") == 2_100
    await books_ok(bank)


async def test_seed_defaults_are_seed_002s_tiers_once(plans: PlanService) -> None:
    created = await plans.seed_default_plans()
    assert [(p.name, p.monthly_allocation_tokens) for p in created] == [
        ("Gift", 100),
        ("Professional", 2_000),
        ("Business", 10_000),
    ]
    await plans.update_plan("Gift", monthly_allocation_tokens=150)
    assert await plans.seed_default_plans() == []
    assert (await plans.get_plan("Gift")).monthly_allocation_tokens == 150
