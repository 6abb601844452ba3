"""The database refuses grants and grant movements that break the books (decision 13),
even when the Python layer is bypassed.

The same method as tests/db/test_constraints.py (whose helpers this module uses): raw
SQL through an engine of its own, each refusal checked by its error and message, on
the statement meant to be refused, with every table unchanged; each refusal has a
positive control that writes the same shape validly and sees it accepted.

Every test works in a wallet of its own, made by the service: a purchase of 100 (grant
G) and a debit of 30 (movement M takes 30 of G), so balance 70 and G holds 70.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
import pytest_asyncio
from sqlalchemy import Executable, TextClause, bindparam
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import ENGINES
from tests.db.test_constraints import (
    CHECK_VIOLATION,
    INTEGRITY_CONSTRAINT_VIOLATION,
    NOW,
    _fresh_database,
    assert_refused,
    at,
    check_violation,
    entry,
    header,
    new_id,
    scalar,
    sql,
    transaction,
    trigger_refusal,
)
from tokenbank import ManualClock, TokenService
from tokenbank.config import Settings
from tokenbank.db.engine import create_engine
from tokenbank.db.types import UTCDateTime

pytestmark = pytest.mark.asyncio(loop_scope="module")

REMAINDER_OUT_OF_BOUNDS = check_violation("ck_grants_remaining_within_amount")
ONLY_REMAINDER = trigger_refusal(
    "only a grant's remainder may change", pg_sqlstate=INTEGRITY_CONSTRAINT_VIOLATION
)
GRANT_NOT_DELETED = trigger_refusal(
    "grants are never deleted",
    pg_sqlstate=INTEGRITY_CONSTRAINT_VIOLATION,
    pg_message="grants is append-only",
)
MOVEMENTS_APPEND_ONLY = trigger_refusal(
    "grant_movements is append-only", pg_sqlstate=INTEGRITY_CONSTRAINT_VIOLATION
)
MOVEMENT_SEALED = trigger_refusal(
    "ledger transaction is sealed: no grant movement can be added",
    pg_sqlstate=INTEGRITY_CONSTRAINT_VIOLATION,
    pg_message="ledger transaction is sealed: nothing can be added",
)
# An unknown grant, and a consumption of an expired one, are refused alike.
EXPIRED_GRANT = trigger_refusal(
    "grant movement refused: an unknown or expired grant, or a return beyond its consumption",
    pg_sqlstate=CHECK_VIOLATION,
    pg_message="grant movement refused: an unknown or expired grant",
)
RETURN_BEYOND = trigger_refusal(
    "grant movement refused: an unknown or expired grant, or a return beyond its consumption",
    pg_sqlstate=CHECK_VIOLATION,
    pg_message="grant movement refused: a return beyond its consumption",
)
GRANTS_DO_NOT_MATCH = trigger_refusal(
    "grants do not match the wallet's balance", pg_sqlstate=CHECK_VIOLATION
)


@dataclass(frozen=True, slots=True)
class Wallet:
    """A wallet the service made: balance 70, grant G holding 70, movement M (-30)."""

    id: int
    grant_id: int
    movement_id: int
    debit_id: str


@pytest.fixture(scope="module", params=ENGINES)
def url(request: pytest.FixtureRequest) -> str:
    return _fresh_database(request, request.param)


@pytest_asyncio.fixture(loop_scope="module")
async def engine(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(url, Settings())
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest_asyncio.fixture(loop_scope="module")
async def bank(url: str) -> AsyncIterator[TokenService]:
    async with TokenService(
        url, clock=ManualClock(NOW), welcome_bonus_tokens=0, auto_migrate=False
    ) as service:
        yield service


@pytest_asyncio.fixture(loop_scope="module")
async def wallet(bank: TokenService, engine: AsyncEngine) -> Wallet:
    user = f"user-{new_id()[:12]}"
    await bank.open_wallet(user)
    assert (await bank.credit(user, amount=100, operation_type="purchase")).success
    debit = await bank.debit(user, amount=30)
    assert debit.transaction_id is not None
    wallet_id = int(await scalar(engine, "SELECT id FROM wallets WHERE user_id = :u", u=user))
    movement = "SELECT id, grant_id FROM grant_movements WHERE transaction_id = :t"
    async with engine.connect() as conn:
        row = (await conn.execute(sql(movement, t=debit.transaction_id))).one()
    return Wallet(wallet_id, int(row.grant_id), int(row.id), debit.transaction_id)


# --- raw statements -----------------------------------------------------------------------


def movement(
    *,
    transaction_id: str,
    grant_id: int,
    kind: str,
    amount_tokens: int,
    returns: int | None = None,
    created_at: str = "created_at",
) -> TextClause:
    return sql(
        "INSERT INTO grant_movements (transaction_id, grant_id, kind, amount_tokens,"
        " returns_movement_id, created_at) VALUES (:t, :g, :k, :a, :r, :created_at)",
        t=transaction_id,
        g=grant_id,
        k=kind,
        a=amount_tokens,
        r=returns,
    ).bindparams(at(created_at))


def add_to_grant(grant_id: int, tokens: int) -> TextClause:
    return sql(
        "UPDATE grants SET remaining_tokens = remaining_tokens + :d WHERE id = :g",
        d=tokens,
        g=grant_id,
    )


def move_wallet(wallet_id: int, tokens: int) -> TextClause:
    return sql(
        "UPDATE wallets SET balance_tokens = balance_tokens + :d WHERE id = :w",
        d=tokens,
        w=wallet_id,
    )


def credit_with_grant(wallet: Wallet, tokens: int, *, balance_before: int = 70) -> list[TextClause]:
    """A complete raw credit: the wallet, its entries, its new grant, its header."""
    tid = new_id()
    grant = sql(
        "INSERT INTO grants (wallet_id, transaction_id, source, category, priority,"
        " amount_tokens, remaining_tokens, created_at)"
        " VALUES (:w, :t, 'admin_grant', 'promotional', 50, :a, :a, :created_at)",
        w=wallet.id,
        t=tid,
        a=tokens,
    ).bindparams(at("created_at"))
    return [
        move_wallet(wallet.id, tokens),
        entry(
            transaction_id=tid,
            wallet_id=wallet.id,
            amount_tokens=tokens,
            balance_before=balance_before,
            balance_after=balance_before + tokens,
        ),
        entry(transaction_id=tid, system_account="tokens_granted", amount_tokens=-tokens),
        grant,
        header(transaction_id=tid, wallet_id=wallet.id, kind="credit"),
    ]


def debit_of(wallet: Wallet, tokens: int, *, consumed: bool) -> list[TextClause]:
    """A raw debit of G; ``consumed`` writes its grant side too."""
    tid = new_id()
    statements = [
        move_wallet(wallet.id, -tokens),
        entry(
            transaction_id=tid,
            wallet_id=wallet.id,
            amount_tokens=-tokens,
            balance_before=70,
            balance_after=70 - tokens,
        ),
        entry(transaction_id=tid, system_account="tokens_consumed", amount_tokens=tokens),
    ]
    if consumed:
        statements += [
            add_to_grant(wallet.grant_id, -tokens),
            movement(
                transaction_id=tid,
                grant_id=wallet.grant_id,
                kind="consume",
                amount_tokens=-tokens,
            ),
        ]
    return [*statements, header(transaction_id=tid, wallet_id=wallet.id, kind="debit")]


async def accepted_then_undone(engine: AsyncEngine, statements: Sequence[Executable]) -> None:
    """A positive control that must not stay: every statement runs, then all roll back."""
    async with engine.connect() as conn:
        await conn.begin()
        for statement in statements:
            await conn.execute(statement)
        await conn.rollback()


# --- a grant's own row --------------------------------------------------------------------------


@pytest.mark.parametrize("remainder", ["amount_tokens + 1", "-1"])
async def test_a_remainder_out_of_bounds_is_refused(
    engine: AsyncEngine, wallet: Wallet, remainder: str
) -> None:
    statement = sql(
        f"UPDATE grants SET remaining_tokens = {remainder} WHERE id = :g", g=wallet.grant_id
    )
    await assert_refused(engine, [statement], REMAINDER_OUT_OF_BOUNDS)
    await accepted_then_undone(engine, [add_to_grant(wallet.grant_id, 30)])


@pytest.mark.parametrize(
    "change",
    ["category = 'promotional'", "priority = 1", "amount_tokens = 1000", "source = 'bonus'"],
)
async def test_nothing_but_the_remainder_of_a_grant_may_change(
    engine: AsyncEngine, wallet: Wallet, change: str
) -> None:
    statement = sql(f"UPDATE grants SET {change} WHERE id = :g", g=wallet.grant_id)
    await assert_refused(engine, [statement], ONLY_REMAINDER)


async def test_grants_and_movements_are_never_deleted_or_rewritten(
    engine: AsyncEngine, wallet: Wallet
) -> None:
    grant = sql("DELETE FROM grants WHERE id = :g", g=wallet.grant_id)
    await assert_refused(engine, [grant], GRANT_NOT_DELETED)
    for statement in (
        "UPDATE grant_movements SET amount_tokens = -1 WHERE id = :m",
        "DELETE FROM grant_movements WHERE id = :m",
    ):
        await assert_refused(engine, [sql(statement, m=wallet.movement_id)], MOVEMENTS_APPEND_ONLY)


# --- movements ----------------------------------------------------------------------------------


async def test_a_movement_cannot_join_a_sealed_transaction(
    engine: AsyncEngine, wallet: Wallet
) -> None:
    late = movement(
        transaction_id=wallet.debit_id,
        grant_id=wallet.grant_id,
        kind="consume",
        amount_tokens=-1,
    )
    await assert_refused(engine, [late], MOVEMENT_SEALED)


async def test_a_movement_after_its_header_in_the_same_transaction_is_refused(
    engine: AsyncEngine, wallet: Wallet
) -> None:
    """Sealed by the header's statement, not by the end of its database transaction."""
    tid = new_id()
    sealed = transaction(transaction_id=tid, wallet_id=wallet.id, kind="credit", amount_tokens=5)
    late = movement(transaction_id=tid, grant_id=wallet.grant_id, kind="consume", amount_tokens=-1)
    await assert_refused(engine, [*sealed, late], MOVEMENT_SEALED)


async def test_no_consumption_takes_from_an_expired_grant(
    bank: TokenService, engine: AsyncEngine
) -> None:
    user = f"user-{new_id()[:12]}"
    await bank.open_wallet(user)
    expires_at = bank.clock() + timedelta(days=1)
    credit = await bank.credit(user, amount=10, operation_type="bonus", expires_at=expires_at)
    assert credit.success
    wallet_id = int(await scalar(engine, "SELECT id FROM wallets WHERE user_id = :u", u=user))
    grant_id = int(await scalar(engine, "SELECT id FROM grants WHERE wallet_id = :w", w=wallet_id))

    def taking(kind: str, when: datetime) -> TextClause:
        return sql(
            "INSERT INTO grant_movements (transaction_id, grant_id, kind,"
            " amount_tokens, created_at) VALUES (:t, :g, :k, -1, :when)",
            t=new_id(),
            g=grant_id,
            k=kind,
        ).bindparams(bindparam("when", when, type_=UTCDateTime()))

    await assert_refused(engine, [taking("consume", expires_at)], EXPIRED_GRANT)
    # Positive controls: a consumption before the expiry, and a capture after it (what
    # an expired grant keeps backs pending holds, and a capture takes it first).
    await accepted_then_undone(engine, [taking("consume", expires_at - timedelta(seconds=1))])
    await accepted_then_undone(engine, [taking("capture", expires_at)])


async def test_a_movement_of_an_unknown_grant_is_refused(
    engine: AsyncEngine, wallet: Wallet
) -> None:
    unknown = movement(transaction_id=new_id(), grant_id=2**40, kind="consume", amount_tokens=-1)
    await assert_refused(engine, [unknown], EXPIRED_GRANT)
    known = movement(
        transaction_id=new_id(), grant_id=wallet.grant_id, kind="consume", amount_tokens=-1
    )
    await accepted_then_undone(engine, [known])


async def test_a_return_gives_back_no_more_than_its_consumption_took(
    engine: AsyncEngine, wallet: Wallet
) -> None:
    def returning(tokens: int) -> TextClause:
        return movement(
            transaction_id=new_id(),
            grant_id=wallet.grant_id,
            kind="return",
            amount_tokens=tokens,
            returns=wallet.movement_id,
        )

    await assert_refused(engine, [returning(31)], RETURN_BEYOND)
    await assert_refused(engine, [returning(20), returning(11)], RETURN_BEYOND)
    await accepted_then_undone(engine, [returning(20), returning(10)])


# --- at the seal: the transaction, and the wallet ------------------------------------------------


async def test_a_debit_that_moves_no_grant_is_refused(engine: AsyncEngine, wallet: Wallet) -> None:
    await assert_refused(engine, debit_of(wallet, 10, consumed=False), GRANTS_DO_NOT_MATCH)
    await accepted_then_undone(engine, debit_of(wallet, 10, consumed=True))


async def test_a_credit_without_its_grant_is_refused(engine: AsyncEngine, wallet: Wallet) -> None:
    statements = credit_with_grant(wallet, 5)
    without_grant = [s for i, s in enumerate(statements) if i != 3]
    await assert_refused(engine, without_grant, GRANTS_DO_NOT_MATCH)
    await accepted_then_undone(engine, statements)


async def test_grants_that_no_longer_add_up_to_the_balance_are_refused_at_the_seal(
    engine: AsyncEngine, wallet: Wallet
) -> None:
    # The credit is consistent in itself; a grant changed beside it is not.
    statements = [add_to_grant(wallet.grant_id, -1), *credit_with_grant(wallet, 5)]
    await assert_refused(engine, statements, GRANTS_DO_NOT_MATCH)
    await accepted_then_undone(engine, credit_with_grant(wallet, 5))
