"""Credits that take effect later: nothing moves until their time; then one credit,
applied once, by the sweep or by a spend that needs it. Both engines, both write
paths; the database refuses a second application, a deletion, or an application by
another wallet's or amount's credit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from tokenbank import IdempotencyConflict, InvalidInput, ManualClock, TokenService
from tokenbank.config import Settings
from tokenbank.db.engine import write_transaction
from tokenbank.ledger.repository.tables import scheduled_credits

DAY = timedelta(days=1)


@pytest.fixture(params=["group_commit", "commit_each"])
async def bank(
    request: pytest.FixtureRequest, database_url: str, clock: ManualClock
) -> AsyncIterator[TokenService]:
    settings = Settings(group_commit=request.param == "group_commit")
    async with TokenService(
        database_url, settings=settings, clock=clock, welcome_bonus_tokens=0, auto_migrate=False
    ) as service:
        yield service


async def balance(bank: TokenService, user_id: str) -> int:
    info = await bank.get_balance(user_id)
    assert info is not None
    return info.tokens_balance


async def books_ok(bank: TokenService) -> None:
    report = await bank.audit()
    assert report.ok, report.problems


async def test_a_scheduled_credit_waits_then_a_spend_that_needs_it_applies_it(
    bank: TokenService, clock: ManualClock
) -> None:
    await bank.open_wallet("ann")
    await bank.credit("ann", amount=100, operation_type="purchase")
    starts = clock() + 7 * DAY
    scheduled = await bank.credit(
        "ann", amount=500, operation_type="bonus", effective_at=starts, expires_at=starts + DAY
    )
    assert scheduled.success and scheduled.scheduled_credit_id is not None
    assert (scheduled.transaction_id, scheduled.new_balance, scheduled.effective_at) == (
        None,
        100,
        starts,
    )
    waiting = await bank.get_scheduled_credits("ann")
    assert waiting is not None and [(w.amount_tokens, w.effective_at) for w in waiting] == [
        (500, starts)
    ]
    refused = await bank.debit("ann", amount=300)
    assert not refused.success  # not yet
    assert await balance(bank, "ann") == 100

    clock.set(starts)
    spent = await bank.debit("ann", amount=300)  # the catch-up applies it first
    assert spent.success and spent.new_balance == 300
    assert await bank.get_scheduled_credits("ann") == []
    grants = await bank.get_grants("ann")
    assert grants is not None
    bonus = next(g for g in grants if g.source == "bonus")
    # Its own expiry, and it went first (it expires; the purchase never does).
    assert (bonus.remaining_tokens, bonus.expires_at) == (200, starts + DAY)
    await books_ok(bank)


async def test_the_sweep_applies_each_due_credit_once(
    bank: TokenService, clock: ManualClock
) -> None:
    users = [f"user-{n}" for n in range(6)]
    for user_id in users:
        await bank.open_wallet(user_id)
        for offset in (1, 2, 40):
            await bank.credit(user_id, amount=10, effective_at=clock() + offset * DAY)
    clock.advance(3 * DAY)
    looked_at = await asyncio.gather(*(bank.apply_scheduled_credits() for _ in range(4)))
    assert max(looked_at) == len(users)
    assert [await balance(bank, user_id) for user_id in users] == [20] * len(users)
    assert await bank.apply_scheduled_credits() == 0
    waiting = await bank.get_scheduled_credits(users[0])
    assert waiting is not None and len(waiting) == 1
    await books_ok(bank)


async def test_a_scheduled_credit_is_idempotent_before_and_after_it_applies(
    bank: TokenService, clock: ManualClock
) -> None:
    await bank.open_wallet("bo")
    starts = clock() + DAY
    first = await bank.credit("bo", amount=50, effective_at=starts, idempotency_key="k1")
    again = await bank.credit("bo", amount=50, effective_at=starts, idempotency_key="k1")
    assert again.replayed and again.scheduled_credit_id == first.scheduled_credit_id
    with pytest.raises(IdempotencyConflict):
        await bank.credit("bo", amount=51, effective_at=starts, idempotency_key="k1")
    clock.set(starts + DAY)
    assert await bank.apply_scheduled_credits() == 1
    after = await bank.credit("bo", amount=50, effective_at=starts, idempotency_key="k1")
    assert after.replayed and after.scheduled_credit_id == first.scheduled_credit_id
    assert after.transaction_id is not None
    assert await balance(bank, "bo") == 50
    await books_ok(bank)


async def test_bad_scheduled_credits_are_refused_and_write_nothing(
    bank: TokenService, clock: ManualClock
) -> None:
    await bank.open_wallet("cy")
    starts = clock() + DAY
    bad: list[dict[str, object]] = [
        {"effective_at": starts, "expires_at": starts},
        {"effective_at": starts, "expires_at": starts - timedelta(seconds=1)},
        {"effective_at": datetime(2030, 1, 1)},  # no timezone
        {"effective_at": "tomorrow"},
        {"effective_at": clock() + 40_000 * DAY},
    ]
    for terms in bad:
        with pytest.raises(InvalidInput):
            await bank.credit("cy", amount=5, **terms)  # type: ignore[arg-type]
    assert await bank.get_scheduled_credits("cy") == []
    assert await bank.get_scheduled_credits("nobody") is None
    unknown = await bank.credit("nobody", amount=5, effective_at=starts)
    assert not unknown.success
    await bank.set_wallet_status("cy", "closed")
    closed = await bank.credit("cy", amount=5, effective_at=starts)
    assert not closed.success
    # A date in the past is "now": an ordinary credit.
    await bank.open_wallet("dee")
    now_credit = await bank.credit("dee", amount=5, effective_at=clock() - DAY)
    assert now_credit.transaction_id is not None and now_credit.new_balance == 5


async def test_the_database_applies_a_scheduled_credit_once(
    database_url: str, clock: ManualClock
) -> None:
    async with TokenService(
        database_url, clock=clock, welcome_bonus_tokens=0, auto_migrate=False
    ) as bank:
        for user_id in ("eve", "fay"):
            await bank.open_wallet(user_id)
        await bank.credit("eve", amount=70, effective_at=clock() + DAY)
        other = await bank.credit("fay", amount=70)
        same_wallet_other_amount = await bank.credit("eve", amount=71)
        engine = await bank.engine()
        async with engine.connect() as conn:
            row = (await conn.execute(select(scheduled_credits))).one()
        table = scheduled_credits
        refused_changes: list[Any] = [
            update(table).values(transaction_id=other.transaction_id),  # another wallet's
            update(table).values(transaction_id=same_wallet_other_amount.transaction_id),
            update(table).values(amount_tokens=1),
            delete(table),
        ]
        for statement in refused_changes:
            with pytest.raises((IntegrityError, DBAPIError)):
                async with write_transaction(engine) as conn:
                    await conn.execute(statement.where(table.c.id == row.id))
        clock.advance(2 * DAY)
        assert await bank.apply_scheduled_credits() == 1
        async with engine.connect() as conn:
            applied = (await conn.execute(select(table))).one()
        assert applied.transaction_id is not None
        with pytest.raises((IntegrityError, DBAPIError)):
            async with write_transaction(engine) as conn:
                await conn.execute(
                    update(table)
                    .where(table.c.id == row.id)
                    .values(transaction_id=same_wallet_other_amount.transaction_id)
                )
        report = await bank.audit()
        assert report.ok, report.problems


def test_the_grant_command_schedules_and_lists(database_url: str) -> None:
    from typer.testing import CliRunner

    from tokenbank.cli import app

    runner = CliRunner()

    def invoke(*args: str) -> str:
        result = runner.invoke(app, [*args, "--database-url", database_url])
        assert result.exit_code == 0, result.output
        return result.stdout

    invoke("users", "create", "gus")
    said = invoke("grant", "gus", "500", "--reason", "later", "--starts-in", "7d")
    assert said.startswith("ok: scheduled credit ") and "balance 10000 until then" in said
    listed = invoke("grants", "list", "gus").splitlines()
    assert listed[0].startswith("-  scheduled promotional priority 50  500 from ")
    assert "looked at 0 wallets with scheduled credits due" in invoke("grants", "sweep")
