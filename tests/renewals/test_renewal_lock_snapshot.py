"""A renewal judges a wallet by the plan it is on when the renewal holds its lock.

On PostgreSQL a renewal locks its wallet (``FOR UPDATE OF wallets``). When that
statement waits for a wallet another transaction is writing, PostgreSQL hands back
the wallet's newest version, but a table joined to it in the same statement keeps
the statement's snapshot. A plan change committed while the renewal waited then
paired the wallet's new plan with its old plan's row (or none). SQLite has one
writer: nothing waits, nothing races.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.locks import until_someone_waits
from tokenbank import ManualClock, TokenService
from tokenbank.db.engine import write_transaction
from tokenbank.ledger.repository.writes import set_wallet_plan
from tokenbank.plans.service import PlanService
from tokenbank.renewals import MonthlyRenewalService

JOINED = datetime(2026, 1, 31, 9, 30, tzinfo=UTC)
WAIT_FOR_THE_LOCK_S = 2.0  # at most: long enough for the renewal to be waiting


async def test_a_renewal_that_waited_for_a_plan_change_renews_the_new_plan(
    service: TokenService, clock: ManualClock, engine_name: str
) -> None:
    if engine_name != "postgresql":
        pytest.skip("SQLite has one writer: nothing waits for a wallet's lock")
    bank = service
    clock.set(JOINED)
    plans = PlanService(await bank.engine(), clock=clock)
    await plans.create_plan("gift", monthly_allocation_tokens=100)
    await plans.create_plan("pro", monthly_allocation_tokens=2_000)
    await bank.open_wallet("ann")
    await plans.set_user_plan("ann", "gift")
    renewals = MonthlyRenewalService(bank)
    assert (await renewals.renew_user("ann")).success
    clock.advance(timedelta(days=30))  # gift's next allocation is due
    async with write_transaction(await bank.engine()) as conn:
        # A move to pro, not yet committed, holds the wallet's lock...
        assert await set_wallet_plan(conn, "ann", "pro", clock())
        # ...while a renewal of the same wallet starts and waits for it.
        renewal = asyncio.create_task(renewals.renew_user("ann"))
        assert await until_someone_waits(await bank.engine(), at_most_s=WAIT_FOR_THE_LOCK_S)
        assert not renewal.done()
    result = await renewal
    # Joining pro started its periods now, and its first allocation is what is due.
    assert result.success, result
    assert result.tokens_granted == 2_000
    assert result.period_start == clock()
    info = await bank.get_balance("ann")
    assert info is not None and info.tier == "pro"
    report = await bank.audit()
    assert report.ok, report.problems
