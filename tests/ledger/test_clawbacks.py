"""Clawbacks: a refunded or disputed purchase takes back what is left of its own grant.

A clawback takes from the grant of the one credit it names and from no other, at most
the amount asked, never what pending holds need; what it cannot take is the caller's
loss to report (decision 13). Every story checks each grant's remainder, the answer
and the books; both engines, both write paths (``bank``: group commit or one by one).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import text

from tokenbank import ClawbackResult, ErrorCode, IdempotencyConflict, InvalidInput, TokenService
from tokenbank.clock import ManualClock
from tokenbank.db.engine import write_transaction
from tokenbank.ledger import handlers
from tokenbank.ledger.grants import LiveGrant, plan_clawback
from tokenbank.ledger.operations import ClawBack, Credit, Debit, Operation
from tokenbank.ledger.writer import _kernel_operations

DAY = timedelta(days=1)
FOREVER_SECONDS = 7 * 24 * 3600


async def remaining(service: TokenService, user_id: str) -> dict[int, int]:
    """What each grant of the user holds, by grant id."""
    grants = await service.get_grants(user_id, limit=500)
    assert grants is not None
    return {grant.grant_id: grant.remaining_tokens for grant in grants}


async def credited(service: TokenService, user_id: str, amount: int, **terms: object) -> str:
    """Credit a grant; the credit's transaction id."""
    result = await service.credit(user_id, amount=amount, **terms)  # type: ignore[arg-type]
    assert result.success and result.transaction_id is not None, result
    return result.transaction_id


async def newest_grant(service: TokenService, user_id: str) -> int:
    grants = await service.get_grants(user_id, limit=1)
    assert grants
    return grants[0].grant_id


async def books_ok(service: TokenService) -> None:
    report = await service.audit()
    assert report.ok, report.problems


async def balance_of(service: TokenService, user_id: str) -> tuple[int, int]:
    """(balance, held)."""
    balance = await service.get_balance(user_id)
    assert balance is not None
    return balance.tokens_balance, balance.held


def clawed(result: ClawbackResult) -> tuple[bool, int, int, int | None]:
    return result.success, result.clawed_tokens, result.not_clawed_tokens, result.balance_after


# --- what a clawback takes ------------------------------------------------------------------


async def test_a_clawback_takes_only_from_its_credits_grant(bank: TokenService) -> None:
    await bank.open_wallet("ann")
    purchase = await credited(bank, "ann", 100, operation_type="purchase")
    bought = await newest_grant(bank, "ann")
    await credited(bank, "ann", 50, operation_type="bonus")
    bonus = await newest_grant(bank, "ann")
    await credited(bank, "ann", 80, operation_type="purchase")
    later = await newest_grant(bank, "ann")
    assert (await bank.debit("ann", amount=30)).success  # the bonus first (promotional)
    assert await remaining(bank, "ann") == {bought: 100, bonus: 20, later: 80}

    result = await bank.claw_back("ann", credit_transaction_id=purchase, amount=100)
    assert clawed(result) == (True, 100, 0, 100)
    assert result.transaction_id is not None and not result.replayed
    assert await remaining(bank, "ann") == {bought: 0, bonus: 20, later: 80}
    assert await balance_of(bank, "ann") == (100, 0)

    entries = await bank.get_ledger().get_user_entries("ann", operation_type="clawback")
    assert [(e.transaction_id, e.tokens_amount, e.balance_after) for e in entries] == [
        (result.transaction_id, -100, 100)
    ]
    report = await bank.audit()
    assert report.ok, report.problems
    assert report.system_balances["tokens_clawed_back"] == 100


async def test_a_clawback_stops_at_what_is_left_of_the_grant(bank: TokenService) -> None:
    await bank.open_wallet("bo")
    purchase = await credited(bank, "bo", 100, operation_type="purchase")
    bought = await newest_grant(bank, "bo")
    assert (await bank.debit("bo", amount=70)).success
    await credited(bank, "bo", 40, operation_type="bonus")
    bonus = await newest_grant(bank, "bo")

    # 70 were spent: only 30 come back, and the bonus is not touched for the rest.
    result = await bank.claw_back("bo", credit_transaction_id=purchase, amount=100)
    assert clawed(result) == (True, 30, 70, 40)
    assert await remaining(bank, "bo") == {bought: 0, bonus: 40}
    # Nothing is left of it now: a second clawback takes nothing and writes nothing.
    again = await bank.claw_back("bo", credit_transaction_id=purchase, amount=10)
    assert clawed(again) == (True, 0, 10, 40)
    assert again.transaction_id is None
    assert len(await bank.get_ledger().get_user_entries("bo", operation_type="clawback")) == 1
    await books_ok(bank)


async def test_a_clawback_takes_less_than_is_left_when_asked_less(bank: TokenService) -> None:
    await bank.open_wallet("cy")
    purchase = await credited(bank, "cy", 100, operation_type="purchase")
    bought = await newest_grant(bank, "cy")
    result = await bank.claw_back("cy", credit_transaction_id=purchase, amount=25)
    assert clawed(result) == (True, 25, 0, 75)
    assert await remaining(bank, "cy") == {bought: 75}
    await books_ok(bank)


async def test_a_clawback_leaves_what_pending_holds_need(bank: TokenService) -> None:
    await bank.open_wallet("di")
    purchase = await credited(bank, "di", 100, operation_type="purchase")
    bought = await newest_grant(bank, "di")
    await credited(bank, "di", 50, operation_type="bonus")
    bonus = await newest_grant(bank, "di")
    held = await bank.hold("di", 120, ttl_seconds=FOREVER_SECONDS)
    assert held.success and held.hold_id is not None

    # Balance 150, held 120: 30 are spare, however much of the purchase is left.
    first = await bank.claw_back("di", credit_transaction_id=purchase, amount=100)
    assert clawed(first) == (True, 30, 70, 120)
    assert await remaining(bank, "di") == {bought: 70, bonus: 50}
    assert await balance_of(bank, "di") == (120, 120)
    await books_ok(bank)

    # Once the hold is gone, the rest can be taken.
    assert (await bank.void(held.hold_id)).success
    second = await bank.claw_back("di", credit_transaction_id=purchase, amount=70)
    assert clawed(second) == (True, 70, 0, 50)
    assert await remaining(bank, "di") == {bought: 0, bonus: 50}
    await books_ok(bank)


async def test_a_clawback_frees_tokens_of_expired_holds_first(
    bank: TokenService, clock: ManualClock
) -> None:
    await bank.open_wallet("ed")
    purchase = await credited(bank, "ed", 100, operation_type="purchase")
    assert (await bank.hold("ed", 100, ttl_seconds=60)).success
    clock.advance(120)
    # No sweep ran: the clawback releases the expired hold itself, then takes it all.
    result = await bank.claw_back("ed", credit_transaction_id=purchase, amount=100)
    assert clawed(result) == (True, 100, 0, 0)
    assert await balance_of(bank, "ed") == (0, 0)
    await books_ok(bank)


async def test_an_expired_grant_leaves_as_expiry_not_as_clawback(
    bank: TokenService, clock: ManualClock
) -> None:
    await bank.open_wallet("flo")
    purchase = await credited(bank, "flo", 100, operation_type="purchase", expires_at=clock() + DAY)
    clock.advance(2 * DAY.total_seconds())
    result = await bank.claw_back("flo", credit_transaction_id=purchase, amount=100)
    assert clawed(result) == (True, 0, 100, 0)
    entries = await bank.get_ledger().get_user_entries("flo")
    assert [(e.operation_type, e.tokens_amount) for e in entries[:1]] == [("expiry", -100)]
    await books_ok(bank)


async def test_an_overdrawn_wallet_gives_nothing_back(bank: TokenService) -> None:
    await bank.open_wallet("gil")
    purchase = await credited(bank, "gil", 10, operation_type="purchase")
    assert (await bank.debit("gil", amount=25, allow_overdraft=True)).success
    result = await bank.claw_back("gil", credit_transaction_id=purchase, amount=10)
    assert clawed(result) == (True, 0, 10, -15)
    await books_ok(bank)


async def test_a_won_dispute_gives_the_tokens_back_as_a_new_credit(
    bank: TokenService, clock: ManualClock
) -> None:
    await bank.open_wallet("hal")
    terms = {"operation_type": "purchase", "priority": 20, "expires_at": clock() + 30 * DAY}
    purchase = await credited(bank, "hal", 100, **terms)
    lost = await bank.claw_back("hal", credit_transaction_id=purchase, amount=100)
    assert clawed(lost) == (True, 100, 0, 0)
    await credited(bank, "hal", lost.clawed_tokens, **terms)
    grants = await bank.get_grants("hal")
    assert grants is not None
    assert [(g.remaining_tokens, g.priority, g.expires_at) for g in grants] == [
        (100, 20, terms["expires_at"]),
        (0, 20, terms["expires_at"]),
    ]
    await books_ok(bank)


# --- keys, refusals, bad input ---------------------------------------------------------------


async def test_the_same_key_replays_and_another_request_conflicts(bank: TokenService) -> None:
    await bank.open_wallet("ivy")
    purchase = await credited(bank, "ivy", 100, operation_type="purchase")
    first = await bank.claw_back(
        "ivy", credit_transaction_id=purchase, amount=60, idempotency_key="refund-1"
    )
    assert clawed(first) == (True, 60, 0, 40)
    assert (await bank.debit("ivy", amount=5)).success

    # Metadata and description do not make a request another one.
    again = await bank.claw_back(
        "ivy",
        credit_transaction_id=purchase,
        amount=60,
        idempotency_key="refund-1",
        description="retried",
        metadata={"attempt": 2},
    )
    assert again.replayed
    assert (again.transaction_id, *clawed(again)) == (first.transaction_id, True, 60, 0, 40)
    with pytest.raises(IdempotencyConflict):
        await bank.claw_back(
            "ivy", credit_transaction_id=purchase, amount=61, idempotency_key="refund-1"
        )
    with pytest.raises(IdempotencyConflict):
        await bank.debit("ivy", amount=1, idempotency_key="refund-1")
    assert len(await bank.get_ledger().get_user_entries("ivy", operation_type="clawback")) == 1
    assert await balance_of(bank, "ivy") == (35, 0)
    await books_ok(bank)


async def test_a_retry_of_a_clawback_that_took_nothing_takes_nothing(bank: TokenService) -> None:
    await bank.open_wallet("jo")
    purchase = await credited(bank, "jo", 100, operation_type="purchase")
    bought = await newest_grant(bank, "jo")
    held = await bank.hold("jo", 100, ttl_seconds=FOREVER_SECONDS)
    assert held.hold_id is not None
    first = await bank.claw_back(
        "jo", credit_transaction_id=purchase, amount=100, idempotency_key="dispute-1"
    )
    assert clawed(first) == (True, 0, 100, 100)
    assert first.transaction_id is None

    # The caller reported the loss: the same request must not take what the void frees.
    assert (await bank.void(held.hold_id)).success
    again = await bank.claw_back(
        "jo", credit_transaction_id=purchase, amount=100, idempotency_key="dispute-1"
    )
    assert again.replayed and again.transaction_id is None
    assert clawed(again) == (True, 0, 100, 100)
    assert await remaining(bank, "jo") == {bought: 100}
    await books_ok(bank)


async def test_concurrent_retries_take_once(bank: TokenService) -> None:
    await bank.open_wallet("kai")
    purchase = await credited(bank, "kai", 100, operation_type="purchase")
    results = await asyncio.gather(
        *(
            bank.claw_back(
                "kai", credit_transaction_id=purchase, amount=70, idempotency_key="refund-9"
            )
            for _ in range(5)
        )
    )
    assert {r.transaction_id for r in results} == {results[0].transaction_id}
    assert sorted(r.replayed for r in results) == [False, True, True, True, True]
    assert await balance_of(bank, "kai") == (30, 0)
    await books_ok(bank)


async def test_one_key_for_two_wallets_at_once_claws_back_once(bank: TokenService) -> None:
    """Two wallets lock apart, so their requests may race to the key: one takes, the
    other is a conflict (the key's unique index decides, in a savepoint)."""
    purchases = {}
    for user_id in ("uma", "vic"):
        await bank.open_wallet(user_id)
        purchases[user_id] = await credited(bank, user_id, 100, operation_type="purchase")
    results = await asyncio.gather(
        *(
            bank.claw_back(user_id, credit_transaction_id=purchase, amount=40, idempotency_key="k")
            for user_id, purchase in purchases.items()
        ),
        return_exceptions=True,
    )
    taken = [r for r in results if isinstance(r, ClawbackResult)]
    assert [type(r) for r in results if not isinstance(r, ClawbackResult)] == [IdempotencyConflict]
    assert [clawed(r) for r in taken] == [(True, 40, 0, 60)]
    balances = [await balance_of(bank, user_id) for user_id in purchases]
    assert sorted(balances) == [(60, 0), (100, 0)]
    await books_ok(bank)


async def test_refusals_name_what_is_missing_and_write_nothing(bank: TokenService) -> None:
    await bank.open_wallet("lu")
    await bank.open_wallet("max")
    purchase = await credited(bank, "lu", 100, operation_type="purchase")
    others = await credited(bank, "max", 100, operation_type="purchase")
    debit = await bank.debit("lu", amount=10)
    assert debit.transaction_id is not None
    unknown = "00000000-0000-4000-8000-000000000000"

    cases = [
        ("nobody", purchase, ErrorCode.WALLET_NOT_FOUND),
        ("lu", unknown, ErrorCode.CREDIT_NOT_FOUND),
        ("lu", debit.transaction_id, ErrorCode.CREDIT_NOT_FOUND),
        ("lu", others, ErrorCode.CREDIT_NOT_FOUND),
    ]
    for user_id, credit_id, code in cases:
        result = await bank.claw_back(
            user_id, credit_transaction_id=credit_id, amount=5, idempotency_key=f"k-{code}"
        )
        assert (result.success, result.error_code, result.transaction_id) == (False, code, None)
        assert result.error
    assert await balance_of(bank, "lu") == (90, 0)
    assert await balance_of(bank, "max") == (100, 0)
    # A refusal does not keep its key.
    retried = await bank.claw_back(
        "lu",
        credit_transaction_id=purchase,
        amount=5,
        idempotency_key=f"k-{ErrorCode.CREDIT_NOT_FOUND}",
    )
    assert clawed(retried) == (True, 5, 0, 85)
    await books_ok(bank)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("credit_transaction_id", "not-a-transaction"),
        ("amount_tokens", 0),
        ("amount_tokens", -5),
        ("user_id", ""),
        ("idempotency_key", " "),
    ],
)
def test_bad_input_is_refused_before_any_work(field: str, value: object) -> None:
    arguments: dict[str, object] = {
        "user_id": "nina",
        "credit_transaction_id": "00000000-0000-4000-8000-000000000000",
        "amount_tokens": 5,
    }
    with pytest.raises(InvalidInput):
        ClawBack(**(arguments | {field: value}))  # type: ignore[arg-type]


async def test_clawback_is_no_operation_type_for_apps(bank: TokenService) -> None:
    await bank.open_wallet("oz")
    with pytest.raises(InvalidInput):
        await bank.debit("oz", amount=1, operation_type="clawback")
    with pytest.raises(InvalidInput):
        await bank.hold("oz", 1, operation_type="clawback")
    with pytest.raises(InvalidInput):
        await bank.set_operation_cost("clawback", 5)
    with pytest.raises(InvalidInput):
        Credit(user_id="oz", amount_tokens=1, operation_type="clawback")


# --- the write paths ---------------------------------------------------------------------------


def test_the_batch_kernel_never_takes_a_clawback() -> None:
    """A clawback goes per operation, and so does every later operation of its user."""
    clawback = ClawBack(
        user_id="pia", credit_transaction_id="00000000-0000-4000-8000-000000000000", amount_tokens=1
    )
    batch: list[Operation] = [
        Debit(user_id="pia", amount_tokens=1),
        clawback,
        Debit(user_id="pia", amount_tokens=1),
        Debit(user_id="quin", amount_tokens=1),
    ]
    fast, slow = _kernel_operations(batch)
    assert [position for position, _ in fast] == [0, 3]
    assert slow == {"pia": 1}


async def test_a_clawback_rides_in_a_batch_with_spends(bank: TokenService) -> None:
    await bank.open_wallet("ray")
    purchase = await credited(bank, "ray", 100, operation_type="purchase")
    await credited(bank, "ray", 100, operation_type="bonus")
    results = await asyncio.gather(
        bank.debit("ray", amount=10),
        bank.claw_back("ray", credit_transaction_id=purchase, amount=100),
        bank.debit("ray", amount=10),
    )
    assert all(result.success for result in results)
    # The debits took the bonus (promotional first): all of the purchase came back.
    assert isinstance(results[1], ClawbackResult) and results[1].clawed_tokens == 100
    assert await balance_of(bank, "ray") == (80, 0)
    await books_ok(bank)


async def test_the_handler_runs_in_its_callers_transaction(service: TokenService) -> None:
    """As the payments code will call it: its writes commit or roll back with the caller's."""
    await service.open_wallet("sam")
    purchase = await credited(service, "sam", 100, operation_type="purchase")
    op = ClawBack(user_id="sam", credit_transaction_id=purchase, amount_tokens=40)
    engine = await service.engine()

    async with engine.connect() as conn:
        transaction = await conn.begin()
        result = await handlers.claw_back(conn, op, service.clock())
        assert clawed(result) == (True, 40, 0, 60)
        await transaction.rollback()
    assert await balance_of(service, "sam") == (100, 0)

    async with write_transaction(engine) as conn:
        result = await handlers.claw_back(conn, op, service.clock())
    assert clawed(result) == (True, 40, 0, 60)
    assert await balance_of(service, "sam") == (60, 0)
    await books_ok(service)


# --- the rule, and the audit ----------------------------------------------------------------------


def test_the_rule_takes_within_the_amount_the_remainders_and_the_spare_tokens() -> None:
    grants = [LiveGrant(id=7, category="paid", priority=50, expires_at=None, remaining=30)]
    taken = [(grant.id, take) for grant, take in plan_clawback(grants, 100, spare_tokens=500)]
    assert taken == [(7, 30)]
    taken = [(grant.id, take) for grant, take in plan_clawback(grants, 10, spare_tokens=500)]
    assert taken == [(7, 10)]
    taken = [(grant.id, take) for grant, take in plan_clawback(grants, 100, spare_tokens=4)]
    assert taken == [(7, 4)]
    assert plan_clawback(grants, 100, spare_tokens=-20) == []


# A clawback of purchase A (or of a debit) that takes from purchase B's grant, written
# with the database's check of clawbacks switched off: the audit still finds it.
SWITCH_OFF = {
    "sqlite": "DROP TRIGGER ledger_transactions_clawback_of_one_credit",
    "postgresql": "ALTER TABLE ledger_transactions DISABLE TRIGGER ledger_transactions_valid",
}
BAD_CLAWBACK = [
    "UPDATE wallets SET balance_tokens = balance_tokens - 10 WHERE id = :w",
    "UPDATE grants SET remaining_tokens = remaining_tokens - 10 WHERE id = :other",
    "INSERT INTO ledger_entries (transaction_id, wallet_id, amount_tokens, balance_before,"
    " balance_after, created_at) VALUES (:t, :w, -10, 200, 190, CURRENT_TIMESTAMP)",
    "INSERT INTO ledger_entries (transaction_id, system_account, amount_tokens, created_at)"
    " VALUES (:t, 'tokens_clawed_back', 10, CURRENT_TIMESTAMP)",
    "INSERT INTO grant_movements (transaction_id, grant_id, kind, amount_tokens, created_at)"
    " VALUES (:t, :other, 'clawback', -10, CURRENT_TIMESTAMP)",
    "INSERT INTO ledger_transactions (id, wallet_id, kind, operation_type, idempotency_scope,"
    " clawback_of_id, created_at)"
    " VALUES (:t, :w, 'clawback', 'clawback', '', :named, CURRENT_TIMESTAMP)",
]
OUTSIDE = "clawback movement outside its credit's grants"
NOT_A_CREDIT = "clawback of something other than a credit of its wallet"


@pytest.mark.parametrize(
    ("named", "problems"), [("purchase A", [OUTSIDE]), ("a debit", [NOT_A_CREDIT, OUTSIDE])]
)
async def test_the_audit_finds_a_clawback_of_another_grant(
    service: TokenService, engine_name: str, named: str, problems: list[str]
) -> None:
    await service.open_wallet("tess")
    purchase = await credited(service, "tess", 100, operation_type="purchase")
    await credited(service, "tess", 100, operation_type="purchase")
    other = await newest_grant(service, "tess")
    good = await service.claw_back("tess", credit_transaction_id=purchase, amount=1)
    assert good.clawed_tokens == 1
    debit = await service.debit("tess", amount=1)
    await credited(service, "tess", 2, operation_type="bonus")  # balance 200 again
    await books_ok(service)

    async with write_transaction(await service.engine()) as conn:
        wallet_id = (await conn.execute(text("SELECT id FROM wallets"))).scalar_one()
        await conn.execute(text(SWITCH_OFF[engine_name]))
        values = {
            "w": wallet_id,
            "other": other,
            "named": purchase if named == "purchase A" else debit.transaction_id,
            "t": handlers.new_transaction_id(),
        }
        for statement in BAD_CLAWBACK:
            await conn.execute(text(statement), values)
    report = await service.audit()
    assert list(report.problems) == problems
