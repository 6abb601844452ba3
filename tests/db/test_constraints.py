"""The database itself refuses invalid rows, even when the Python layer is bypassed.

Every test here writes raw SQL through an engine of its own (the same engine
factory the service uses, so SQLite has ``PRAGMA foreign_keys=ON`` and
``BEGIN IMMEDIATE``) and asserts three things about each refusal:

* the exception: exactly :class:`sqlalchemy.exc.IntegrityError` on both engines, and
  underneath it the engine's own code (SQLite's extended error name, PostgreSQL's
  SQLSTATE) and the message of the one constraint or trigger meant to refuse the
  write, so that a write refused for an unrelated reason (a typo in the SQL, a
  NOT NULL) cannot pass for a refusal;
* where: the refused statement is the one expected (so the statements before it
  were accepted), or COMMIT for the deferred foreign key;
* nothing changed: every table reads the same before and after.

Positive controls write the same shape of row validly and see it accepted, so each
refusal test fails if its constraint or trigger is removed.
"""

from __future__ import annotations

import re
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg
import pytest
from sqlalchemy import Executable, TextClause, bindparam, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbank import ManualClock, TokenService
from tokenbank.config import Settings
from tokenbank.db.engine import create_engine
from tokenbank.db.models import Base
from tokenbank.db.types import UTCDateTime

NOW = datetime(2030, 1, 1, tzinfo=UTC)

# SQLSTATEs: the CHECK constraints and the transaction-validity trigger report
# check_violation; the other triggers report integrity_constraint_violation.
CHECK_VIOLATION = "23514"
INTEGRITY_CONSTRAINT_VIOLATION = "23000"
FOREIGN_KEY_VIOLATION = "23503"

# The system account on the other side of each kind of transaction (README).
SYSTEM_ACCOUNT = {"credit": "tokens_sold", "debit": "tokens_consumed", "refund": "tokens_consumed"}


# --- how a refusal looks on each engine -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Refusal:
    """One refusal as each engine reports it: its error code and a message pattern."""

    sqlite_errorname: str
    pg_sqlstate: str
    sqlite_message: str
    pg_message: str

    def check(self, error: IntegrityError, dialect: str) -> None:
        assert type(error) is IntegrityError
        orig = error.orig
        if dialect == "sqlite":
            assert type(orig) is sqlite3.IntegrityError
            assert orig.sqlite_errorname == self.sqlite_errorname, str(orig)
            pattern = self.sqlite_message
        else:
            # SQLAlchemy's asyncpg adapter wraps asyncpg's own exception.
            cause = orig.__cause__ if orig is not None else None
            assert isinstance(cause, asyncpg.IntegrityConstraintViolationError), repr(cause)
            assert cause.sqlstate == self.pg_sqlstate, str(orig)
            assert getattr(orig, "sqlstate", None) == self.pg_sqlstate
            pattern = self.pg_message
        assert re.search(pattern, str(orig)), str(orig)


def check_violation(constraint: str) -> Refusal:
    return Refusal(
        sqlite_errorname="SQLITE_CONSTRAINT_CHECK",
        pg_sqlstate=CHECK_VIOLATION,
        sqlite_message=f"^CHECK constraint failed: {constraint}$",
        pg_message=f'violates check constraint "{constraint}"',
    )


def trigger_refusal(message: str, *, pg_sqlstate: str, pg_message: str | None = None) -> Refusal:
    return Refusal(
        sqlite_errorname="SQLITE_CONSTRAINT_TRIGGER",
        pg_sqlstate=pg_sqlstate,
        sqlite_message=f"^{re.escape(message)}$",
        pg_message=f": {re.escape(pg_message or message)}$",
    )


def append_only(table: str) -> Refusal:
    return trigger_refusal(f"{table} is append-only", pg_sqlstate=INTEGRITY_CONSTRAINT_VIOLATION)


UNBALANCED = trigger_refusal("unbalanced ledger transaction", pg_sqlstate=CHECK_VIOLATION)
WRONG_DIRECTION = trigger_refusal(
    "ledger transaction must move one wallet in its kind's direction",
    pg_sqlstate=CHECK_VIOLATION,
)
REFUND_EXCEEDS_DEBIT = trigger_refusal(
    "refund exceeds the debit it refunds", pg_sqlstate=CHECK_VIOLATION
)
SEALED = trigger_refusal(
    "ledger transaction is sealed: no entry can be added",
    pg_sqlstate=INTEGRITY_CONSTRAINT_VIOLATION,
)
HOLD_FROZEN = trigger_refusal(
    "only a pending hold may change, and only its status",
    pg_sqlstate=INTEGRITY_CONSTRAINT_VIOLATION,
)
# PostgreSQL reuses its generic refuse-change function for these two deletes.
HOLD_NOT_DELETED = trigger_refusal(
    "holds are never deleted",
    pg_sqlstate=INTEGRITY_CONSTRAINT_VIOLATION,
    pg_message="holds is append-only",
)
WALLET_NOT_DELETED = trigger_refusal(
    "wallets are closed, never deleted",
    pg_sqlstate=INTEGRITY_CONSTRAINT_VIOLATION,
    pg_message="wallets is append-only",
)
HEADER_NEVER_ARRIVED = Refusal(
    sqlite_errorname="SQLITE_CONSTRAINT_FOREIGNKEY",
    pg_sqlstate=FOREIGN_KEY_VIOLATION,
    sqlite_message="^FOREIGN KEY constraint failed$",
    pg_message='violates foreign key constraint "fk_ledger_entries_transaction_id_ledger_transactions"',
)


# --- engine, snapshots, running statements ----------------------------------------------


@pytest.fixture
async def raw_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, Settings())
    try:
        yield engine
    finally:
        await engine.dispose()


Snapshot = dict[str, list[tuple[Any, ...]]]


async def snapshot(engine: AsyncEngine) -> Snapshot:
    """Every row of every table, in primary-key order."""
    tables: Snapshot = {}
    async with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            statement = select(table).order_by(*table.primary_key.columns)
            tables[table.name] = [tuple(row) for row in await conn.execute(statement)]
    return tables


async def write(engine: AsyncEngine, statements: Sequence[Executable]) -> None:
    """Run statements in one transaction and commit; any refusal propagates."""
    async with engine.begin() as conn:
        for statement in statements:
            await conn.execute(statement)


async def assert_refused(
    engine: AsyncEngine,
    statements: Sequence[Executable],
    refusal: Refusal,
    *,
    refused_at: int | Literal["commit"] = -1,
) -> None:
    """The statement at ``refused_at`` (or COMMIT) is refused; nothing changes."""
    before = await snapshot(engine)
    executed = 0
    with pytest.raises(IntegrityError) as caught:
        async with engine.begin() as conn:
            for statement in statements:
                await conn.execute(statement)
                executed += 1
    if refused_at == "commit":
        assert executed == len(statements), "refused before COMMIT"
    else:
        assert executed == range(len(statements))[refused_at], "refused at the wrong statement"
    refusal.check(caught.value, engine.dialect.name)
    assert await snapshot(engine) == before


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql).bindparams(**params))).scalar_one()


async def wallet_id(engine: AsyncEngine, user_id: str) -> int:
    return int(await scalar(engine, "SELECT id FROM wallets WHERE user_id = :u", u=user_id))


# --- factories: raw SQL statements --------------------------------------------------------


def new_id() -> str:
    return str(uuid.uuid4())


def _at(name: str = "created_at") -> Any:
    return bindparam(name, NOW, type_=UTCDateTime())


def entry(
    *,
    transaction_id: str,
    amount_tokens: int,
    wallet_id: int | None = None,
    system_account: str | None = None,
    balance_before: int | None = None,
    balance_after: int | None = None,
    entry_id: int | None = None,
    verb: str = "INSERT",
    on_conflict: str = "",
) -> TextClause:
    """An INSERT of one ledger entry, exactly as given (no derived values)."""
    columns = "transaction_id, wallet_id, system_account, amount_tokens, balance_before,"
    values = ":transaction_id, :wallet_id, :system_account, :amount_tokens, :balance_before,"
    params: dict[str, Any] = {}
    if entry_id is not None:
        columns, values, params = f"id, {columns}", f":entry_id, {values}", {"entry_id": entry_id}
    sql = (
        f"{verb} INTO ledger_entries ({columns} balance_after, created_at)"
        f" VALUES ({values} :balance_after, :created_at) {on_conflict}"
    )
    return text(sql).bindparams(
        _at(),
        transaction_id=transaction_id,
        wallet_id=wallet_id,
        system_account=system_account,
        amount_tokens=amount_tokens,
        balance_before=balance_before,
        balance_after=balance_after,
        **params,
    )


def wallet_leg(
    *, transaction_id: str, wallet_id: int, amount_tokens: int, balance_before: int = 0
) -> TextClause:
    """A wallet entry whose balance chain is consistent."""
    return entry(
        transaction_id=transaction_id,
        wallet_id=wallet_id,
        amount_tokens=amount_tokens,
        balance_before=balance_before,
        balance_after=balance_before + amount_tokens,
    )


def system_leg(
    *, transaction_id: str, amount_tokens: int, account: str = "tokens_consumed"
) -> TextClause:
    return entry(transaction_id=transaction_id, system_account=account, amount_tokens=amount_tokens)


def header(
    *,
    transaction_id: str,
    wallet_id: int,
    kind: str,
    refund_of_id: str | None = None,
    description: str | None = None,
    verb: str = "INSERT",
    on_conflict: str = "",
) -> TextClause:
    sql = (
        f"{verb} INTO ledger_transactions (id, wallet_id, kind, operation_type, description,"
        " idempotency_scope, refund_of_id, created_at)"
        " VALUES (:transaction_id, :wallet_id, :kind, 'raw_sql', :description, '',"
        f" :refund_of_id, :created_at) {on_conflict}"
    )
    return text(sql).bindparams(
        _at(),
        transaction_id=transaction_id,
        wallet_id=wallet_id,
        kind=kind,
        description=description,
        refund_of_id=refund_of_id,
    )


def transaction(
    *,
    transaction_id: str,
    wallet_id: int,
    kind: str,
    amount_tokens: int,
    refund_of_id: str | None = None,
) -> list[TextClause]:
    """A valid two-leg transaction, entries first and header last."""
    signed = -amount_tokens if kind == "debit" else amount_tokens
    return [
        wallet_leg(transaction_id=transaction_id, wallet_id=wallet_id, amount_tokens=signed),
        system_leg(
            transaction_id=transaction_id, amount_tokens=-signed, account=SYSTEM_ACCOUNT[kind]
        ),
        header(
            transaction_id=transaction_id,
            wallet_id=wallet_id,
            kind=kind,
            refund_of_id=refund_of_id,
        ),
    ]


def update(sql: str, **params: Any) -> TextClause:
    return text(sql).bindparams(**params)


async def funded_wallet(service: TokenService, engine: AsyncEngine, user_id: str) -> int:
    """A wallet opened and credited 100 tokens through the service; its id."""
    await service.open_wallet(user_id)
    assert (await service.credit(user_id, amount=100)).success
    return await wallet_id(engine, user_id)


# --- transactions: balanced, one wallet, right direction -------------------------------------


@pytest.mark.parametrize("kind", ["credit", "debit", "refund"])
async def test_raw_balanced_transaction_is_accepted(
    service: TokenService, raw_engine: AsyncEngine, kind: str
) -> None:
    """Positive control: the shape every refusal below distorts is itself accepted."""
    alice = await funded_wallet(service, raw_engine, "alice")
    tid = new_id()
    await write(
        raw_engine, transaction(transaction_id=tid, wallet_id=alice, kind=kind, amount_tokens=7)
    )
    sql = "SELECT COUNT(*) FROM ledger_entries WHERE transaction_id = :t"
    assert await scalar(raw_engine, sql, t=tid) == 2
    sql = "SELECT kind FROM ledger_transactions WHERE id = :t"
    assert await scalar(raw_engine, sql, t=tid) == kind
