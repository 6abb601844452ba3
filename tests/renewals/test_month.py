"""A month in the life of a user, under each allocation policy, on both engines.

Ann signs up (a welcome bonus that expires in 14 days), joins Professional (2,000 a
month), buys 5,000 tokens, uses some, lets the bonus's rest expire, uses more across
her allocation and her purchase, gets part of it refunded, and renews on 1 February.
After every step: each grant's remainder, the balance, and the audit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from tokenbank import ManualClock, MonthlyRenewalService, TokenService
from tokenbank.config import Settings
from tokenbank.plans.service import PlanService

START = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)


def on(day: int, month: int = 1) -> datetime:
    return datetime(2026, month, day, 12, 0, tzinfo=UTC)


@pytest.fixture
async def bank(database_url: str) -> AsyncIterator[TokenService]:
    settings = Settings(welcome_bonus_tokens=1_000, welcome_bonus_expiry_days=14)
    clock = ManualClock(START)
    async with TokenService(
        database_url, settings=settings, clock=clock, auto_migrate=False
    ) as service:
        yield service


class Story:
    def __init__(self, bank: TokenService) -> None:
        self.bank = bank
        self.clock: ManualClock = bank.clock  # type: ignore[assignment]
        self.names: dict[int, str] = {}

    async def name_newest(self, name: str) -> None:
        grants = await self.bank.get_grants("ann", limit=1)
        assert grants
        self.names[grants[0].grant_id] = name

    async def check(self, balance: int, **remaining: int) -> None:
        grants = await self.bank.get_grants("ann", limit=50)
        assert grants is not None
        held = {self.names[g.grant_id]: g.remaining_tokens for g in grants}
        assert held == remaining
        info = await self.bank.get_balance("ann")
        assert info is not None and info.tokens_balance == balance == sum(remaining.values())
        report = await self.bank.audit()
        assert report.ok, report.problems


@pytest.mark.parametrize("policy", ["expire", "rollover", "keep"])
async def test_a_month_in_the_life_of_a_user(bank: TokenService, policy: str) -> None:
    story = Story(bank)
    plans = PlanService(await bank.engine(), clock=bank.clock)
    renewals = MonthlyRenewalService(bank)
    await plans.create_plan(
        "Professional",
        monthly_allocation_tokens=2_000,
        allocation_policy=policy,
        rollover_cap_tokens=500,
    )

    opened = await bank.open_wallet("ann")  # the welcome bonus, promotional, 14 days
    assert opened.welcome_bonus_tokens == 1_000
    await story.name_newest("welcome")
    await story.check(1_000, welcome=1_000)

    await plans.set_user_plan("ann", "Professional")
    january = await renewals.renew_user("ann")
    assert january.success and january.period_end == datetime(2026, 2, 1, 10, tzinfo=UTC)
    await story.name_newest("january")
    await story.check(3_000, welcome=1_000, january=2_000)

    story.clock.set(on(2))
    assert (await bank.credit("ann", amount=5_000, operation_type="purchase")).success
    await story.name_newest("purchase")
    await story.check(8_000, welcome=1_000, january=2_000, purchase=5_000)

    story.clock.set(on(3))  # the bonus expires first, so it is spent first
    assert (await bank.debit("ann", amount=700, operation_type="usage")).success
    await story.check(7_300, welcome=300, january=2_000, purchase=5_000)

    story.clock.set(on(16))  # the bonus's last 300 leave as an expiry
    await bank.expire_grants()
    await story.check(7_000, welcome=0, january=2_000, purchase=5_000)

    story.clock.set(on(17))  # the allocation (promotional) before the purchase (paid)
    usage = await bank.debit("ann", amount=2_400, operation_type="usage")
    assert usage.success
    await story.check(4_600, welcome=0, january=0, purchase=4_600)

    story.clock.set(on(18))  # a refund returns to the debit's newest consumption first
    refund = await bank.refund("ann", amount=500, refund_of=usage.transaction_id)
    assert refund.success
    await story.check(5_100, welcome=0, january=100, purchase=5_000)

    story.clock.set(datetime(2026, 2, 1, 10, tzinfo=UTC))  # renewal day
    february = await renewals.renew_user("ann")
    assert february.success and february.tokens_granted == 2_000
    await story.name_newest("february")
    if policy == "expire":  # January's 100 lapsed with its period
        assert (february.tokens_carried, february.tokens_forfeited) == (0, 0)
        await story.check(7_000, welcome=0, january=0, purchase=5_000, february=2_000)
    else:  # rollover keeps it (under the cap of 500), keep keeps it
        assert (february.tokens_carried, february.tokens_forfeited) == (100, 0)
        await story.check(7_100, welcome=0, january=100, purchase=5_000, february=2_000)

    story.clock.set(on(2, month=2))  # what is left of January goes first, then February
    assert (await bank.debit("ann", amount=1_000, operation_type="usage")).success
    if policy == "expire":
        await story.check(6_000, welcome=0, january=0, purchase=5_000, february=1_000)
    else:
        await story.check(6_100, welcome=0, january=0, purchase=5_000, february=1_100)
