"""Grants: stories of which tokens a wallet holds and which a spend takes.

Every step checks the grants' remainders (by name) and the books; both engines, and
the per-operation path as well as the batch kernel (``group_commit``).
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from tokenbank import ErrorCode, InvalidInput, ManualClock, TokenService
from tokenbank.config import Settings

DAY = timedelta(days=1)


async def remaining(service: TokenService, user_id: str) -> dict[int, int]:
    """What each grant of the user holds, by grant id."""
    grants = await service.get_grants(user_id, limit=500)
    assert grants is not None
    return {grant.grant_id: grant.remaining_tokens for grant in grants}


async def credited(service: TokenService, user_id: str, amount: int, **terms: object) -> int:
    """Credit a grant; its id (the newest grant)."""
    result = await service.credit(user_id, amount=amount, **terms)  # type: ignore[arg-type]
    assert result.success, result
    grants = await service.get_grants(user_id, limit=1)
    assert grants
    return grants[0].grant_id


async def books_ok(service: TokenService) -> None:
    report = await service.audit()
    assert report.ok, report.problems


async def test_debits_follow_the_consumption_order(bank: TokenService, clock: ManualClock) -> None:
    await bank.open_wallet("ann")
    paid = await credited(bank, "ann", 100, operation_type="purchase")
    promo = await credited(bank, "ann", 100, operation_type="bonus")
    soon = await credited(bank, "ann", 100, operation_type="bonus", expires_at=clock() + 5 * DAY)
    later = await credited(bank, "ann", 100, operation_type="bonus", expires_at=clock() + 9 * DAY)
    first = await credited(bank, "ann", 50, operation_type="purchase", priority=10)
    await books_ok(bank)

    # Priority 10 first, then the earliest expiry, the later one, promotional before
    # paid, and the paid purchase last.
    expected = [
        (30, {first: 20, soon: 100, later: 100, promo: 100, paid: 100}),
        (60, {first: 0, soon: 60, later: 100, promo: 100, paid: 100}),
        (120, {first: 0, soon: 0, later: 40, promo: 100, paid: 100}),
        (90, {first: 0, soon: 0, later: 0, promo: 50, paid: 100}),
        (80, {first: 0, soon: 0, later: 0, promo: 0, paid: 70}),
    ]
    for amount, after in expected:
        assert (await bank.debit("ann", amount=amount)).success
        assert await remaining(bank, "ann") == after
        await books_ok(bank)
    balance = await bank.get_balance("ann")
    assert balance is not None
    assert (balance.tokens_balance, balance.paid_tokens, balance.promotional_tokens) == (70, 70, 0)


async def test_a_refund_gives_back_to_the_grants_its_debit_took_from(bank: TokenService) -> None:
    await bank.open_wallet("bo")
    paid = await credited(bank, "bo", 100, operation_type="purchase")
    promo = await credited(bank, "bo", 30, operation_type="bonus")
    debit = await bank.debit("bo", amount=50)  # 30 promotional, then 20 paid
    assert await remaining(bank, "bo") == {paid: 80, promo: 0}
    await bank.debit("bo", amount=10)  # paid only
    assert await remaining(bank, "bo") == {paid: 70, promo: 0}

    # The named debit's tokens come back, the last taken first: paid, then promotional.
    assert (await bank.refund("bo", 25, refund_of=debit.transaction_id)).success
    assert await remaining(bank, "bo") == {paid: 90, promo: 5}
    # Without a debit named, the newest consumptions come back first (the 10 paid).
    assert (await bank.refund("bo", 12)).success
    assert await remaining(bank, "bo") == {paid: 100, promo: 7}
    await books_ok(bank)
    balance = await bank.get_balance("bo")
    assert balance is not None
    assert (balance.paid_tokens, balance.promotional_tokens) == (100, 7)


async def test_expired_tokens_leave_and_are_never_spent(
    bank: TokenService, clock: ManualClock
) -> None:
    await bank.open_wallet("cy")
    paid = await credited(bank, "cy", 50, operation_type="purchase")
    promo = await credited(bank, "cy", 100, operation_type="bonus", expires_at=clock() + DAY)
    balance = await bank.get_balance("cy")
    assert balance is not None
    assert (balance.next_expiry_at, balance.next_expiry_tokens) == (clock() + DAY, 100)

    clock.advance(2 * DAY.total_seconds())
    # No sweep ran: the spend itself expires the 100 first, and 60 is more than is left.
    refused = await bank.debit("cy", amount=60)
    assert refused.error_code == ErrorCode.INSUFFICIENT_TOKENS
    assert refused.available_tokens == 50
    assert await remaining(bank, "cy") == {paid: 50, promo: 0}
    entries = await bank.get_ledger().get_user_entries("cy")
    assert (entries[0].operation_type, entries[0].tokens_amount) == ("expiry", -100)
    assert (await bank.debit("cy", amount=40)).success
    assert await remaining(bank, "cy") == {paid: 10, promo: 0}
    grants = await bank.get_grants("cy")
    assert grants is not None
    assert {grant.grant_id: grant.status for grant in grants} == {paid: "active", promo: "expired"}
    await books_ok(bank)


async def test_the_sweep_expires_what_holds_do_not_need(
    bank: TokenService, clock: ManualClock
) -> None:
    await bank.open_wallet("di")
    paid = await credited(bank, "di", 20, operation_type="purchase")
    promo = await credited(bank, "di", 100, operation_type="bonus", expires_at=clock() + DAY)
    held = await bank.hold("di", 110, ttl_seconds=7 * 24 * 3600)
    assert held.success and held.hold_id is not None

    clock.advance(2 * DAY.total_seconds())
    assert await bank.expire_grants() == 1
    # Balance 120, held 110: only 10 can leave; the other 90 back the hold.
    assert await remaining(bank, "di") == {paid: 20, promo: 90}
    await books_ok(bank)

    # The capture takes the expired grant's 90 first, then 10 paid; nothing is left
    # to expire after it.
    assert (await bank.capture(held.hold_id, 100)).success
    assert await remaining(bank, "di") == {paid: 10, promo: 0}
    assert await bank.expire_grants() == 0
    await books_ok(bank)


async def test_a_void_lets_the_rest_of_an_expired_grant_go(
    bank: TokenService, clock: ManualClock
) -> None:
    await bank.open_wallet("ed")
    promo = await credited(bank, "ed", 100, operation_type="bonus", expires_at=clock() + DAY)
    held = await bank.hold("ed", 60, ttl_seconds=7 * 24 * 3600)
    assert held.hold_id is not None
    clock.advance(2 * DAY.total_seconds())
    await bank.expire_grants()
    assert await remaining(bank, "ed") == {promo: 60}
    assert (await bank.void(held.hold_id)).success
    await bank.expire_grants()
    assert await remaining(bank, "ed") == {promo: 0}
    balance = await bank.get_balance("ed")
    assert balance is not None and balance.tokens_balance == 0
    await books_ok(bank)


async def test_a_credit_pays_an_overdraft_first(bank: TokenService) -> None:
    await bank.open_wallet("fa")
    await credited(bank, "fa", 10, operation_type="bonus")
    held = await bank.hold("fa", 10)
    assert held.hold_id is not None
    # Usage that already happened is recorded in full (decision 6): 30 on 10.
    assert (await bank.capture(held.hold_id, 30)).success
    balance = await bank.get_balance("fa")
    assert balance is not None and balance.tokens_balance == -20
    bought = await credited(bank, "fa", 50, operation_type="purchase")
    assert (await remaining(bank, "fa"))[bought] == 30
    balance = await bank.get_balance("fa")
    assert balance is not None
    assert (balance.tokens_balance, balance.status, balance.paid_tokens) == (30, "active", 30)
    await books_ok(bank)


async def test_the_welcome_bonus_is_promotional_and_may_expire(
    database_url: str, clock: ManualClock
) -> None:
    settings = Settings(welcome_bonus_expiry_days=30)
    async with TokenService(
        database_url, settings=settings, clock=clock, welcome_bonus_tokens=500, auto_migrate=False
    ) as service:
        await service.open_wallet("gus")
        grants = await service.get_grants("gus")
        assert grants is not None and len(grants) == 1
        bonus = grants[0]
        assert (bonus.source, bonus.category, bonus.remaining_tokens) == (
            "bonus",
            "promotional",
            500,
        )
        assert bonus.expires_at == clock() + timedelta(days=30)


@pytest.mark.parametrize(
    ("terms", "field"),
    [
        ({"category": "gold"}, "category"),
        ({"priority": 101}, "priority"),
        ({"priority": -1}, "priority"),
        ({"priority": True}, "priority"),
        ({"expires_at": "tomorrow"}, "expires_at"),
    ],
)
async def test_bad_grant_terms_are_refused_and_write_nothing(
    service: TokenService, terms: dict[str, object], field: str
) -> None:
    await service.open_wallet("hal")
    before = await service.get_ledger().get_user_entries("hal")
    with pytest.raises(InvalidInput) as refused:
        await service.credit("hal", amount=10, **terms)  # type: ignore[arg-type]
    assert refused.value.field == field
    assert await service.get_ledger().get_user_entries("hal") == before
    assert await service.get_grants("hal") == []


async def test_an_expiry_in_the_past_is_refused(service: TokenService, clock: ManualClock) -> None:
    await service.open_wallet("ivy")
    naive = clock().replace(tzinfo=None) + DAY
    for when in (clock(), clock() - DAY, naive):
        with pytest.raises(InvalidInput) as refused:
            await service.credit("ivy", amount=10, expires_at=when)
        assert refused.value.field == "expires_at"
    assert await service.get_grants("ivy") == []
