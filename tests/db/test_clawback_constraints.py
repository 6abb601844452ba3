"""The database holds a clawback to the one credit it claws back (migration 0009,
decision 13), even when the Python layer is bypassed.

The method of tests/db/test_grant_constraints.py (whose helpers this module uses):
raw SQL, each refusal checked by its error and message on the statement meant to be
refused with every table unchanged, next to a positive control that writes the same
shape validly and sees it accepted (then rolls it back).

Every test works in a wallet of its own, made by the service: purchase A of 100
(grant GA), purchase B of 50 (grant GB), a debit of 30 (taken from GA, the older):
balance 120, GA holds 70, GB 50. Another wallet has purchase C.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from sqlalchemy import TextClause
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import ENGINES
from tests.db.test_constraints import (
    CHECK_VIOLATION,
    NOW,
    RAW_BALANCE_BEFORE,
    WRONG_DIRECTION,
    _fresh_database,
    assert_refused,
    at,
    check_violation,
    entry,
    new_id,
    scalar,
    sql,
    trigger_refusal,
)
from tests.db.test_grant_constraints import (
    accepted_then_undone,
    add_to_grant,
    move_wallet,
    movement,
)
from tokenbank import ManualClock, TokenService
from tokenbank.config import Settings
from tokenbank.db.engine import create_engine

pytestmark = pytest.mark.asyncio(loop_scope="module")

CLAWBACK_REFUSED = trigger_refusal(
    "a clawback takes only from the grants of the credit it names", pg_sqlstate=CHECK_VIOLATION
)
LINK_REQUIRED = check_violation("ck_ledger_transactions_clawback_names_its_credit")
BALANCE = 120
OTHER_SIDE = {"clawback": "tokens_clawed_back", "debit": "tokens_consumed"}


@dataclass(frozen=True, slots=True)
class Wallet:
    """Balance 120: GA (of purchase A) holds 70, GB (of purchase B) 50."""

    id: int
    purchase_a: str
    grant_a: int
    purchase_b: str
    grant_b: int
    debit_id: str
    others_purchase: str


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


async def _purchase(bank: TokenService, user: str, tokens: int) -> str:
    result = await bank.credit(user, amount=tokens, operation_type="purchase")
    assert result.transaction_id is not None
    return result.transaction_id


async def _grant_of(engine: AsyncEngine, transaction_id: str) -> int:
    query = "SELECT id FROM grants WHERE transaction_id = :t"
    return int(await scalar(engine, query, t=transaction_id))


@pytest_asyncio.fixture(loop_scope="module")
async def wallet(bank: TokenService, engine: AsyncEngine) -> Wallet:
    user, other = f"user-{new_id()[:12]}", f"other-{new_id()[:12]}"
    for name in (user, other):
        await bank.open_wallet(name)
    purchase_a = await _purchase(bank, user, 100)
    purchase_b = await _purchase(bank, user, 50)
    debit = await bank.debit(user, amount=30)
    assert debit.transaction_id is not None
    wallet_id = int(await scalar(engine, "SELECT id FROM wallets WHERE user_id = :u", u=user))
    return Wallet(
        id=wallet_id,
        purchase_a=purchase_a,
        grant_a=await _grant_of(engine, purchase_a),
        purchase_b=purchase_b,
        grant_b=await _grant_of(engine, purchase_b),
        debit_id=debit.transaction_id,
        others_purchase=await _purchase(bank, other, 100),
    )


# --- raw statements -----------------------------------------------------------------------


def header(
    transaction_id: str, wallet_id: int, *, kind: str, clawback_of_id: str | None
) -> TextClause:
    return sql(
        "INSERT INTO ledger_transactions (id, wallet_id, kind, operation_type,"
        " idempotency_scope, clawback_of_id, created_at)"
        " VALUES (:t, :w, :k, 'raw_sql', '', :c, :created_at)",
        t=transaction_id,
        w=wallet_id,
        k=kind,
        c=clawback_of_id,
    ).bindparams(at("created_at"))


def legs(
    transaction_id: str, wallet_id: int, tokens: int, *, before: int, account: str
) -> list[TextClause]:
    """The wallet's entry (``tokens`` signed) and the other side's."""
    return [
        entry(
            transaction_id=transaction_id,
            wallet_id=wallet_id,
            amount_tokens=tokens,
            balance_before=before,
            balance_after=before + tokens,
        ),
        entry(transaction_id=transaction_id, system_account=account, amount_tokens=-tokens),
    ]


def taking(
    wallet: Wallet,
    tokens: int,
    *,
    grant_id: int,
    clawback_of_id: str | None,
    kind: str = "clawback",
    movement_kind: str = "clawback",
) -> list[TextClause]:
    """A complete raw transaction taking ``tokens`` from one grant of the wallet."""
    tid = new_id()
    return [
        move_wallet(wallet.id, -tokens),
        *legs(tid, wallet.id, -tokens, before=BALANCE, account=OTHER_SIDE[kind]),
        add_to_grant(grant_id, -tokens),
        movement(transaction_id=tid, grant_id=grant_id, kind=movement_kind, amount_tokens=-tokens),
        header(tid, wallet.id, kind=kind, clawback_of_id=clawback_of_id),
    ]


def without_grants(
    wallet: Wallet, tokens: int, *, kind: str = "clawback", clawback_of_id: str | None
) -> list[TextClause]:
    """A raw transaction whose wallet entry stays below zero, where grants hold
    nothing: it moves no grant, so only the header's own terms are judged."""
    tid = new_id()
    return [
        *legs(tid, wallet.id, tokens, before=RAW_BALANCE_BEFORE, account=OTHER_SIDE[kind]),
        header(tid, wallet.id, kind=kind, clawback_of_id=clawback_of_id),
    ]


# --- from which grants ----------------------------------------------------------------------


async def test_a_clawback_takes_only_from_the_grant_of_its_credit(
    engine: AsyncEngine, wallet: Wallet
) -> None:
    other_grant = taking(wallet, 10, grant_id=wallet.grant_b, clawback_of_id=wallet.purchase_a)
    await assert_refused(engine, other_grant, CLAWBACK_REFUSED)
    await accepted_then_undone(
        engine, taking(wallet, 10, grant_id=wallet.grant_a, clawback_of_id=wallet.purchase_a)
    )
    await accepted_then_undone(
        engine, taking(wallet, 10, grant_id=wallet.grant_b, clawback_of_id=wallet.purchase_b)
    )


async def test_a_clawback_takes_only_clawback_movements(
    engine: AsyncEngine, wallet: Wallet
) -> None:
    consuming = taking(
        wallet,
        10,
        grant_id=wallet.grant_a,
        clawback_of_id=wallet.purchase_a,
        movement_kind="consume",
    )
    await assert_refused(engine, consuming, CLAWBACK_REFUSED)
    await accepted_then_undone(
        engine, taking(wallet, 10, grant_id=wallet.grant_a, clawback_of_id=wallet.purchase_a)
    )


async def test_no_other_transaction_has_a_clawback_movement(
    engine: AsyncEngine, wallet: Wallet
) -> None:
    def debit(movement_kind: str) -> list[TextClause]:
        return taking(
            wallet,
            10,
            grant_id=wallet.grant_a,
            clawback_of_id=None,
            kind="debit",
            movement_kind=movement_kind,
        )

    await assert_refused(engine, debit("clawback"), CLAWBACK_REFUSED)
    await accepted_then_undone(engine, debit("consume"))


# --- which credit ---------------------------------------------------------------------------------


@pytest.mark.parametrize("named", ["debit", "another wallet's purchase"])
async def test_a_clawback_names_a_credit_of_its_own_wallet(
    engine: AsyncEngine, wallet: Wallet, named: str
) -> None:
    credit_id = wallet.debit_id if named == "debit" else wallet.others_purchase
    await assert_refused(
        engine, without_grants(wallet, -10, clawback_of_id=credit_id), CLAWBACK_REFUSED
    )
    await accepted_then_undone(
        engine, without_grants(wallet, -10, clawback_of_id=wallet.purchase_a)
    )


async def test_a_clawback_names_its_credit_and_nothing_else_does(
    engine: AsyncEngine, wallet: Wallet
) -> None:
    await assert_refused(engine, without_grants(wallet, -10, clawback_of_id=None), LINK_REQUIRED)
    # A debit naming a credit, as if it were a clawback.
    named = without_grants(wallet, -10, kind="debit", clawback_of_id=wallet.purchase_a)
    await assert_refused(engine, named, LINK_REQUIRED)
    await accepted_then_undone(
        engine, without_grants(wallet, -10, clawback_of_id=wallet.purchase_a)
    )


async def test_a_clawback_moves_its_wallet_down(engine: AsyncEngine, wallet: Wallet) -> None:
    await assert_refused(
        engine, without_grants(wallet, 10, clawback_of_id=wallet.purchase_a), WRONG_DIRECTION
    )
    await accepted_then_undone(
        engine, without_grants(wallet, -10, clawback_of_id=wallet.purchase_a)
    )
