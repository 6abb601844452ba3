"""The database itself refuses invalid rows, even when the Python layer is bypassed.

Every write here is raw SQL through an engine of its own, made by the same factory
the service uses (so SQLite has ``PRAGMA foreign_keys=ON`` and ``BEGIN IMMEDIATE``).
Each refusal is checked three ways:

* the exception: exactly :class:`sqlalchemy.exc.IntegrityError` on both engines and,
  underneath it, the engine's own code (SQLite's extended error name, PostgreSQL's
  SQLSTATE) and the message of the one constraint or trigger meant to refuse the
  write, so a write refused for an unrelated reason (a typo, a NOT NULL) cannot pass
  for the refusal under test;
* where: the expected statement is the refused one (the statements before it were
  accepted), or COMMIT for the deferred foreign key;
* nothing changed: every table reads the same before and after.

Refusals only roll back, so they share one database per engine (``world``), built
once per module by the service; that every table reads the same after each refusal
is also what keeps those tests independent. The tests that commit share another
database per engine (``scratch``), each in wallets of its own: the positive controls,
which write the same shapes validly and see them accepted (so each refusal test
fails if its constraint or trigger is removed), and the tests of known bugs. Both
databases are copies of the migrated template, like the conftest's ``database_url``;
sharing them keeps the module fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import asyncpg
import pytest
import pytest_asyncio
from sqlalchemy import Executable, TextClause, bindparam, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tests.conftest import ENGINES, PG_TEMPLATE
from tokenbank import ManualClock, TokenService
from tokenbank.config import Settings
from tokenbank.db.engine import create_engine
from tokenbank.db.models import Base
from tokenbank.db.types import UTCDateTime
from tokenbank.testing.postgres import PostgresServer

# One event loop for the module, so the shared engine can outlive a test.
pytestmark = pytest.mark.asyncio(loop_scope="module")

NOW = datetime(2030, 1, 1, tzinfo=UTC)

# SQLSTATEs: CHECK constraints and the header trigger (balance, direction, refund
# bound) report check_violation; the other triggers integrity_constraint_violation.
CHECK_VIOLATION = "23514"
INTEGRITY_CONSTRAINT_VIOLATION = "23000"
FOREIGN_KEY_VIOLATION = "23503"

# The system account on the other side of each kind of transaction (README).
SYSTEM_ACCOUNT = {"credit": "tokens_sold", "debit": "tokens_consumed", "refund": "tokens_consumed"}


# --- how a refusal looks on each engine -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Refusal:
    """One refusal as each engine reports it: its error code and its whole message."""

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
        pg_message=f'^new row for relation "[a-z_]+" violates check constraint "{constraint}"$',
    )


def trigger_refusal(message: str, *, pg_sqlstate: str, pg_message: str | None = None) -> Refusal:
    return Refusal(
        sqlite_errorname="SQLITE_CONSTRAINT_TRIGGER",
        pg_sqlstate=pg_sqlstate,
        sqlite_message=f"^{re.escape(message)}$",
        pg_message=f"^{re.escape(pg_message or message)}$",
    )


def append_only(table: str) -> Refusal:
    return trigger_refusal(f"{table} is append-only", pg_sqlstate=INTEGRITY_CONSTRAINT_VIOLATION)


UNBALANCED = trigger_refusal("unbalanced ledger transaction", pg_sqlstate=CHECK_VIOLATION)
WRONG_DIRECTION = trigger_refusal(
    "ledger transaction must move one wallet in its kind's direction",
    pg_sqlstate=CHECK_VIOLATION,
)
# A header with no entries breaks both SQLite header triggers, and which fires first
# is SQLite's (undocumented) trigger order, so either message is the refusal;
# PostgreSQL's one trigger function checks the count first.
NO_ENTRIES = Refusal(
    sqlite_errorname="SQLITE_CONSTRAINT_TRIGGER",
    pg_sqlstate=CHECK_VIOLATION,
    sqlite_message=f"^({UNBALANCED.sqlite_message[1:-1]}|{WRONG_DIRECTION.sqlite_message[1:-1]})$",
    pg_message=UNBALANCED.pg_message,
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
    pg_message=(
        '^insert or update on table "ledger_entries" violates foreign key constraint'
        ' "fk_ledger_entries_transaction_id_ledger_transactions"$'
    ),
)


# --- snapshots and running statements ---------------------------------------------------------

Snapshot = dict[str, list[tuple[Any, ...]]]


async def snapshot(engine: AsyncEngine) -> Snapshot:
    """Every row of every table, in primary-key order."""
    tables: Snapshot = {}
    async with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            statement = select(table).order_by(*table.primary_key.columns)
            tables[table.name] = [tuple(row) for row in await conn.execute(statement)]
    return tables


async def write(
    engine: AsyncEngine,
    statements: Sequence[Executable],
    *,
    done: list[Executable] | None = None,
) -> None:
    """Run statements in one transaction and commit; any refusal propagates.

    Each statement that ran is appended to ``done``, so a caller can tell which one
    (or COMMIT) was refused.
    """
    async with engine.begin() as conn:
        for statement in statements:
            await conn.execute(statement)
            if done is not None:
                done.append(statement)


async def assert_refused(
    engine: AsyncEngine,
    statements: Sequence[Executable],
    refusal: Refusal,
    *,
    refused_at: int | Literal["commit"] = -1,
) -> None:
    """The statement at ``refused_at`` (or COMMIT) is refused, and nothing changes."""
    before = await snapshot(engine)
    done: list[Executable] = []
    with pytest.raises(IntegrityError) as caught:
        await write(engine, statements, done=done)
    accepted = len(statements) if refused_at == "commit" else range(len(statements))[refused_at]
    assert len(done) == accepted, f"refused after {len(done)} statements, not {accepted}"
    refusal.check(caught.value, engine.dialect.name)
    assert await snapshot(engine) == before


async def scalar(engine: AsyncEngine, query: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(query).bindparams(**params))).scalar_one()


async def wallet_id(engine: AsyncEngine, user_id: str) -> int:
    return int(await scalar(engine, "SELECT id FROM wallets WHERE user_id = :u", u=user_id))


# --- factories: raw SQL statements ------------------------------------------------------------


def new_id() -> str:
    return str(uuid.uuid4())


def at(name: str) -> Any:
    """A timestamp parameter typed like the columns (SQLite stores naive UTC text)."""
    return bindparam(name, NOW, type_=UTCDateTime())


def sql(statement: str, **params: Any) -> TextClause:
    return text(statement).bindparams(**params)


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
    """An INSERT of one ledger entry, exactly as given (nothing derived)."""
    columns = "transaction_id, wallet_id, system_account, amount_tokens, balance_before,"
    values = ":transaction_id, :wallet_id, :system_account, :amount_tokens, :balance_before,"
    params: dict[str, Any] = {}
    if entry_id is not None:
        columns, values, params = f"id, {columns}", f":entry_id, {values}", {"entry_id": entry_id}
    statement = (
        f"{verb} INTO ledger_entries ({columns} balance_after, created_at)"
        f" VALUES ({values} :balance_after, :created_at) {on_conflict}"
    )
    return text(statement).bindparams(
        at("created_at"),
        transaction_id=transaction_id,
        wallet_id=wallet_id,
        system_account=system_account,
        amount_tokens=amount_tokens,
        balance_before=balance_before,
        balance_after=balance_after,
        **params,
    )


# The balance a raw wallet entry starts from. Below zero grants hold nothing, so a raw
# transaction whose entry stays there moves no grant (decision 13): these tests write
# no grant rows, and the grants' trigger has nothing to refuse in them. The grants'
# own refusals are tests/db/test_grant_constraints.py.
RAW_BALANCE_BEFORE = -1_000_000


def wallet_leg(
    *,
    transaction_id: str,
    wallet_id: int,
    amount_tokens: int,
    balance_before: int = RAW_BALANCE_BEFORE,
) -> TextClause:
    """A wallet entry whose own balance chain is consistent."""
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
    statement = (
        f"{verb} INTO ledger_transactions (id, wallet_id, kind, operation_type, description,"
        " idempotency_scope, refund_of_id, created_at)"
        " VALUES (:transaction_id, :wallet_id, :kind, 'raw_sql', :description, '',"
        f" :refund_of_id, :created_at) {on_conflict}"
    )
    return text(statement).bindparams(
        at("created_at"),
        transaction_id=transaction_id,
        wallet_id=wallet_id,
        kind=kind,
        description=description,
        refund_of_id=refund_of_id,
    )


def transaction(
    *,
    wallet_id: int,
    kind: str,
    amount_tokens: int,
    refund_of_id: str | None = None,
    transaction_id: str | None = None,
) -> list[TextClause]:
    """A valid two-leg transaction: entries first, header last."""
    tid = transaction_id or new_id()
    signed = -amount_tokens if kind == "debit" else amount_tokens
    return [
        wallet_leg(transaction_id=tid, wallet_id=wallet_id, amount_tokens=signed),
        system_leg(transaction_id=tid, amount_tokens=-signed, account=SYSTEM_ACCOUNT[kind]),
        header(transaction_id=tid, wallet_id=wallet_id, kind=kind, refund_of_id=refund_of_id),
    ]


def refund(*, wallet_id: int, amount_tokens: int, refund_of_id: str | None) -> list[TextClause]:
    return transaction(
        wallet_id=wallet_id, kind="refund", amount_tokens=amount_tokens, refund_of_id=refund_of_id
    )


# --- the shared database: one per engine, refusals only ---------------------------------------


@dataclass(frozen=True, slots=True)
class World:
    """What the service wrote into the shared database, by name.

    alice: credit 100, debit 30, refund 20 of that debit, then one hold of 10 in each
    status (capture of 4) -- balance 86, held 10. bob: credit 100, debit 30. zed: a
    wallet with no ledger rows and no holds.
    """

    url: str
    alice: int
    bob: int
    zed: int
    credit_id: str
    debit_id: str
    refund_id: str
    bobs_debit_id: str
    holds: dict[str, str]


async def _build_world(url: str) -> World:
    clock = ManualClock()
    async with TokenService(
        url, clock=clock, welcome_bonus_tokens=0, auto_migrate=False
    ) as service:
        ids: dict[str, str] = {}
        for name in ("alice", "bob", "zed"):
            assert (await service.open_wallet(name)).created
        for name in ("alice", "bob"):
            ids[f"{name}_credit"] = (await service.credit(name, amount=100)).transaction_id or ""
            ids[f"{name}_debit"] = (await service.debit(name, amount=30)).transaction_id or ""
        refunded = await service.refund("alice", 20, refund_of=ids["alice_debit"])
        holds: dict[str, str] = {}
        for status, ttl in (("pending", 60), ("captured", 60), ("voided", 60), ("expired", 5)):
            holds[status] = (await service.hold("alice", 10, ttl_seconds=ttl)).hold_id or ""
        assert (await service.capture(holds["captured"], 4)).success
        assert (await service.void(holds["voided"])).success
        clock.advance(10)
        assert await service.release_expired_holds() == 1
        balance = await service.get_balance("alice")
        assert balance is not None and (balance.tokens_balance, balance.held) == (86, 10)
        assert (await service.audit()).ok
        engine = await service.engine()
        return World(
            url=url,
            alice=await wallet_id(engine, "alice"),
            bob=await wallet_id(engine, "bob"),
            zed=await wallet_id(engine, "zed"),
            credit_id=ids["alice_credit"],
            debit_id=ids["alice_debit"],
            refund_id=refunded.transaction_id or "",
            bobs_debit_id=ids["bob_debit"],
            holds=holds,
        )


def _fresh_database(request: pytest.FixtureRequest, engine_name: str) -> str:
    """A freshly migrated database of its own (copied from the session's template)."""
    if engine_name == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        tmp_path_factory: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
        path = tmp_path_factory.mktemp("db") / "tokenbank.db"
        shutil.copyfile(template, path)
        return f"sqlite+aiosqlite:///{path}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"constraints_{uuid.uuid4().hex[:12]}"
    server.create_database(name, template=PG_TEMPLATE)
    return server.async_url(name)


@pytest.fixture(scope="module", params=ENGINES)
def world(request: pytest.FixtureRequest) -> World:
    return asyncio.run(_build_world(_fresh_database(request, request.param)))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(world: World) -> AsyncIterator[AsyncEngine]:
    """An engine on the shared database, kept for the module (its connections and their
    prepared statements are reused, which halves the time of a refusal test)."""
    engine = create_engine(world.url, Settings())
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture(scope="module", params=ENGINES)
def scratch_url(request: pytest.FixtureRequest) -> str:
    """A database per engine for the tests that commit; each works in wallets of its own."""
    return _fresh_database(request, request.param)


@pytest_asyncio.fixture(loop_scope="module")
async def scratch(scratch_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the scratch database."""
    engine = create_engine(scratch_url, Settings())
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest_asyncio.fixture(loop_scope="module")
async def service(scratch_url: str) -> AsyncIterator[TokenService]:
    """The service on the scratch database (overrides the conftest's fresh one)."""
    async with TokenService(
        scratch_url, clock=ManualClock(), welcome_bonus_tokens=0, auto_migrate=False
    ) as token_service:
        yield token_service


@pytest.fixture
def user() -> str:
    """A user id no other test uses, for a wallet of the test's own."""
    return f"user-{uuid.uuid4().hex[:12]}"


async def funded_wallet(service: TokenService, engine: AsyncEngine, user_id: str) -> int:
    """A wallet opened and credited 100 tokens through the service; its id."""
    await service.open_wallet(user_id)
    assert (await service.credit(user_id, amount=100)).success
    return await wallet_id(engine, user_id)


# --- transactions: balanced, one wallet, in the kind's direction ------------------------------


async def test_raw_transactions_of_every_kind_are_accepted(
    service: TokenService, scratch: AsyncEngine, user: str
) -> None:
    """Positive control for the shapes the refusals below distort."""
    wallet = await funded_wallet(service, scratch, user)
    debit = await service.debit(user, amount=30)
    written: list[str] = []
    for kind, refund_of_id in [
        ("credit", None),
        ("debit", None),
        ("refund", None),
        ("refund", debit.transaction_id),
    ]:
        tid = new_id()
        statements = transaction(
            transaction_id=tid,
            wallet_id=wallet,
            kind=kind,
            amount_tokens=7,
            refund_of_id=refund_of_id,
        )
        await write(scratch, statements)
        written.append(tid)
    for tid in written:
        count = "SELECT COUNT(*) FROM ledger_entries WHERE transaction_id = :t"
        assert await scalar(scratch, count, t=tid) == 2
        total = "SELECT SUM(amount_tokens) FROM ledger_entries WHERE transaction_id = :t"
        assert await scalar(scratch, total, t=tid) == 0


async def test_unbalanced_transaction_is_refused(world: World, shared: AsyncEngine) -> None:
    tid = new_id()
    statements = [
        wallet_leg(transaction_id=tid, wallet_id=world.alice, amount_tokens=10),
        system_leg(transaction_id=tid, amount_tokens=-9, account="tokens_sold"),
        header(transaction_id=tid, wallet_id=world.alice, kind="credit"),
    ]
    await assert_refused(shared, statements, UNBALANCED)


async def test_header_with_a_single_entry_is_refused(world: World, shared: AsyncEngine) -> None:
    tid = new_id()
    statements = [
        wallet_leg(transaction_id=tid, wallet_id=world.alice, amount_tokens=10),
        header(transaction_id=tid, wallet_id=world.alice, kind="credit"),
    ]
    await assert_refused(shared, statements, UNBALANCED)


async def test_header_without_entries_is_refused(world: World, shared: AsyncEngine) -> None:
    statements = [header(transaction_id=new_id(), wallet_id=world.alice, kind="credit")]
    await assert_refused(shared, statements, NO_ENTRIES)


@pytest.mark.parametrize(
    ("kind", "wallet_amount"), [("credit", -10), ("debit", 10), ("refund", -10)]
)
async def test_wallet_leg_against_the_kind_is_refused(
    world: World, shared: AsyncEngine, kind: str, wallet_amount: int
) -> None:
    tid = new_id()
    statements = [
        wallet_leg(transaction_id=tid, wallet_id=world.alice, amount_tokens=wallet_amount),
        system_leg(transaction_id=tid, amount_tokens=-wallet_amount),
        header(transaction_id=tid, wallet_id=world.alice, kind=kind),
    ]
    await assert_refused(shared, statements, WRONG_DIRECTION)


async def test_wallet_leg_of_another_wallet_is_refused(world: World, shared: AsyncEngine) -> None:
    tid = new_id()
    statements = [
        wallet_leg(transaction_id=tid, wallet_id=world.bob, amount_tokens=10),
        system_leg(transaction_id=tid, amount_tokens=-10, account="tokens_sold"),
        header(transaction_id=tid, wallet_id=world.alice, kind="credit"),
    ]
    await assert_refused(shared, statements, WRONG_DIRECTION)


async def test_transaction_moving_two_wallets_is_refused(world: World, shared: AsyncEngine) -> None:
    """A wallet-to-wallet transfer balances, but a transaction moves exactly one wallet."""
    tid = new_id()
    statements = [
        wallet_leg(transaction_id=tid, wallet_id=world.alice, amount_tokens=10),
        wallet_leg(transaction_id=tid, wallet_id=world.bob, amount_tokens=-10),
        header(transaction_id=tid, wallet_id=world.alice, kind="credit"),
    ]
    await assert_refused(shared, statements, WRONG_DIRECTION)


async def test_entries_whose_header_never_arrives_are_refused_at_commit(
    world: World, shared: AsyncEngine
) -> None:
    """The FK is deferred so entries can precede their header; COMMIT still checks it."""
    statements = transaction(wallet_id=world.alice, kind="credit", amount_tokens=10)[:-1]
    await assert_refused(shared, statements, HEADER_NEVER_ARRIVED, refused_at="commit")


@pytest.mark.parametrize("leg", ["wallet", "system"])
async def test_entry_added_to_a_sealed_transaction_is_refused(
    world: World, shared: AsyncEngine, leg: str
) -> None:
    tid = world.credit_id
    added = (
        wallet_leg(transaction_id=tid, wallet_id=world.alice, amount_tokens=5)
        if leg == "wallet"
        else system_leg(transaction_id=tid, amount_tokens=-5, account="tokens_sold")
    )
    await assert_refused(shared, [added], SEALED)


def header_with_its_legs(*, transaction_id: str, wallet_id: int, amount_tokens: int) -> TextClause:
    """A credit's two entries and its header in one statement, as the batch kernel
    writes on PostgreSQL (a data-modifying CTE; SQLite has none)."""
    return text(
        "WITH legs AS ("
        " INSERT INTO ledger_entries (transaction_id, wallet_id, system_account, amount_tokens,"
        " balance_before, balance_after, created_at)"
        " VALUES (:t, :w, NULL, :a, :before, :before + :a, :created_at),"
        " (:t, NULL, 'tokens_sold', -:a, NULL, NULL, :created_at) RETURNING 1)"
        " INSERT INTO ledger_transactions (id, wallet_id, kind, operation_type,"
        " idempotency_scope, created_at)"
        " SELECT :t, :w, 'credit', 'raw_sql', '', :created_at"
        " WHERE (SELECT count(*) FROM legs) = 2"
    ).bindparams(
        at("created_at"), t=transaction_id, w=wallet_id, a=amount_tokens, before=RAW_BALANCE_BEFORE
    )


@pytest.mark.parametrize("sealed_by", ["its own statement", "one statement with its entries"])
async def test_an_entry_after_its_header_in_the_same_transaction_is_refused(
    world: World, shared: AsyncEngine, sealed_by: str
) -> None:
    """The statement that writes a header seals its transaction: a later statement of
    the same database transaction adds nothing to it (PostgreSQL's check passes only
    a header written by the entries' own command)."""
    if sealed_by != "its own statement" and shared.dialect.name == "sqlite":
        pytest.skip("SQLite has no data-modifying CTE: a header is always its own statement")
    tid = new_id()
    sealed = (
        transaction(transaction_id=tid, wallet_id=world.alice, kind="credit", amount_tokens=10)
        if sealed_by == "its own statement"
        else [header_with_its_legs(transaction_id=tid, wallet_id=world.alice, amount_tokens=10)]
    )
    late = system_leg(transaction_id=tid, amount_tokens=-5, account="tokens_sold")
    await assert_refused(shared, [*sealed, late], SEALED)


async def test_entries_and_their_header_in_one_statement_are_accepted(
    service: TokenService, scratch: AsyncEngine, user: str
) -> None:
    """Positive control of the above: the header's own statement may write its entries."""
    if scratch.dialect.name == "sqlite":
        pytest.skip("SQLite has no data-modifying CTE")
    wallet = await funded_wallet(service, scratch, user)
    tid = new_id()
    await write(
        scratch, [header_with_its_legs(transaction_id=tid, wallet_id=wallet, amount_tokens=7)]
    )
    count = "SELECT COUNT(*) FROM ledger_entries WHERE transaction_id = :t"
    assert await scalar(scratch, count, t=tid) == 2


# --- ledger rows are append-only --------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "statement"),
    [
        # Doubling every wallet leg and its chain keeps the CHECKs happy: only the
        # trigger refuses it.
        (
            "ledger_entries",
            "UPDATE ledger_entries SET amount_tokens = amount_tokens * 2,"
            " balance_after = balance_before + amount_tokens * 2 WHERE wallet_id IS NOT NULL",
        ),
        ("ledger_entries", "UPDATE ledger_entries SET created_at = created_at"),
        ("ledger_entries", "DELETE FROM ledger_entries"),
        ("ledger_transactions", "UPDATE ledger_transactions SET description = 'rewritten'"),
        ("ledger_transactions", "UPDATE ledger_transactions SET kind = kind"),
        ("ledger_transactions", "DELETE FROM ledger_transactions"),
    ],
)
async def test_ledger_rows_cannot_be_updated_or_deleted(
    shared: AsyncEngine, table: str, statement: str
) -> None:
    await assert_refused(shared, [text(statement)], append_only(table))


@pytest.mark.parametrize("world", ["postgresql"], indirect=True)
@pytest.mark.parametrize("table", ["ledger_entries", "ledger_transactions", "holds", "wallets"])
async def test_truncate_is_refused_on_postgresql(shared: AsyncEngine, table: str) -> None:
    """SQLite has no TRUNCATE (its DELETE without WHERE is covered above). CASCADE,
    because without it PostgreSQL refuses to truncate a referenced table before any
    trigger runs, which would prove nothing about the trigger."""
    await assert_refused(shared, [text(f"TRUNCATE {table} CASCADE")], append_only(table))


# --- wallets ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("assignment", "constraint"),
    [
        ("balance_tokens = -1", "ck_wallets_active_not_overdrawn"),
        ("balance_tokens = held_tokens - 1", "ck_wallets_active_not_overdrawn"),
        ("held_tokens = balance_tokens + 1", "ck_wallets_active_not_overdrawn"),
        ("held_tokens = -1", "ck_wallets_held_not_negative"),
        ("spent_tokens = -1", "ck_wallets_spent_not_negative"),
        ("status = 'suspended'", "ck_wallets_suspended_has_reason"),
        ("suspended_reason = 'admin'", "ck_wallets_suspended_has_reason"),
        ("status = 'frozen'", "ck_wallets_status_known"),
        ("status = 'suspended', suspended_reason = 'unpaid'", "ck_wallets_suspended_reason_known"),
    ],
)
async def test_invalid_wallet_state_is_refused(
    world: World, shared: AsyncEngine, assignment: str, constraint: str
) -> None:
    statement = sql(f"UPDATE wallets SET {assignment} WHERE id = :id", id=world.alice)
    await assert_refused(shared, [statement], check_violation(constraint))


async def test_edge_wallet_states_are_accepted(
    service: TokenService, scratch: AsyncEngine, user: str
) -> None:
    """Positive control: the edges of the wallet CHECKs are allowed."""
    wallet = await funded_wallet(service, scratch, user)
    for assignment in [
        "held_tokens = balance_tokens",
        "balance_tokens = -1, held_tokens = 0, status = 'suspended',"
        " suspended_reason = 'overdraft'",
        "balance_tokens = -1, status = 'closed', suspended_reason = NULL",
        "balance_tokens = 5, status = 'suspended', suspended_reason = 'admin'",
        "status = 'active', suspended_reason = NULL",
    ]:
        await write(scratch, [sql(f"UPDATE wallets SET {assignment} WHERE id = :id", id=wallet)])
    select_status = "SELECT status FROM wallets WHERE id = :id"
    assert await scalar(scratch, select_status, id=wallet) == "active"


async def test_wallets_cannot_be_deleted(world: World, shared: AsyncEngine) -> None:
    """zed has no ledger rows and no holds: only the trigger stands in the way."""
    statement = sql("DELETE FROM wallets WHERE id = :id", id=world.zed)
    await assert_refused(shared, [statement], WALLET_NOT_DELETED)


# --- ledger entries ---------------------------------------------------------------------------

EntryFactory = Callable[[str, int], TextClause]

ENTRY_VIOLATIONS: list[tuple[str, EntryFactory, str]] = [
    (
        "balance-after-off-by-one",
        lambda tid, w: entry(
            transaction_id=tid, wallet_id=w, amount_tokens=10, balance_before=0, balance_after=11
        ),
        "ck_ledger_entries_wallet_balance_chain",
    ),
    (
        "wallet-leg-without-balance",
        lambda tid, w: entry(transaction_id=tid, wallet_id=w, amount_tokens=10),
        "ck_ledger_entries_wallet_balance_chain",
    ),
    (
        "zero-wallet-leg",
        lambda tid, w: entry(
            transaction_id=tid, wallet_id=w, amount_tokens=0, balance_before=5, balance_after=5
        ),
        "ck_ledger_entries_amount_not_zero",
    ),
    (
        "zero-system-leg",
        lambda tid, w: system_leg(transaction_id=tid, amount_tokens=0),
        "ck_ledger_entries_amount_not_zero",
    ),
    (
        "both-accounts",
        lambda tid, w: entry(
            transaction_id=tid,
            wallet_id=w,
            system_account="tokens_sold",
            amount_tokens=10,
            balance_before=0,
            balance_after=10,
        ),
        "ck_ledger_entries_one_account",
    ),
    (
        "no-account",
        lambda tid, w: entry(transaction_id=tid, amount_tokens=10),
        "ck_ledger_entries_one_account",
    ),
    (
        "unknown-system-account",
        lambda tid, w: system_leg(transaction_id=tid, amount_tokens=10, account="tokens_stolen"),
        "ck_ledger_entries_system_account_known",
    ),
    (
        "system-leg-with-balance",
        lambda tid, w: entry(
            transaction_id=tid,
            system_account="tokens_sold",
            amount_tokens=10,
            balance_before=0,
            balance_after=10,
        ),
        "ck_ledger_entries_system_no_balance",
    ),
]


@pytest.mark.parametrize(
    ("factory", "constraint"),
    [pytest.param(factory, constraint, id=name) for name, factory, constraint in ENTRY_VIOLATIONS],
)
async def test_invalid_entry_is_refused(
    world: World, shared: AsyncEngine, factory: EntryFactory, constraint: str
) -> None:
    """Refused on INSERT, before any header or COMMIT. The valid legs of the positive
    control are the same statements with valid values."""
    await assert_refused(shared, [factory(new_id(), world.alice)], check_violation(constraint))


# --- refunds ----------------------------------------------------------------------------------


async def test_refund_beyond_the_rest_of_its_debit_is_refused(
    world: World, shared: AsyncEngine
) -> None:
    """alice's debit of 30 has 20 refunded: 10 remain."""
    statements = refund(wallet_id=world.alice, amount_tokens=11, refund_of_id=world.debit_id)
    await assert_refused(shared, statements, REFUND_EXCEEDS_DEBIT)


async def test_refund_up_to_the_rest_of_its_debit_is_accepted(
    service: TokenService, scratch: AsyncEngine, user: str
) -> None:
    """Positive control: exactly the rest is accepted, and then not one token more."""
    wallet = await funded_wallet(service, scratch, user)
    debit = await service.debit(user, amount=30)
    assert debit.transaction_id is not None
    assert (await service.refund(user, 20, refund_of=debit.transaction_id)).success
    await write(
        scratch, refund(wallet_id=wallet, amount_tokens=10, refund_of_id=debit.transaction_id)
    )
    one_more = refund(wallet_id=wallet, amount_tokens=1, refund_of_id=debit.transaction_id)
    await assert_refused(scratch, one_more, REFUND_EXCEEDS_DEBIT)


@pytest.mark.parametrize("target", ["credit", "refund", "other-wallets-debit"])
async def test_refund_naming_anything_but_its_own_debit_is_refused(
    world: World, shared: AsyncEngine, target: str
) -> None:
    named = {
        "credit": world.credit_id,
        "refund": world.refund_id,
        "other-wallets-debit": world.bobs_debit_id,
    }[target]
    statements = refund(wallet_id=world.alice, amount_tokens=1, refund_of_id=named)
    await assert_refused(shared, statements, REFUND_EXCEEDS_DEBIT)


async def test_refund_link_on_a_non_refund_is_refused(world: World, shared: AsyncEngine) -> None:
    statements = transaction(
        wallet_id=world.alice, kind="credit", amount_tokens=1, refund_of_id=world.debit_id
    )
    constraint = "ck_ledger_transactions_refund_link_on_refund"
    await assert_refused(shared, statements, check_violation(constraint))


# --- holds ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["captured", "voided", "expired"])
@pytest.mark.parametrize(
    "assignment",
    ["description = 'rewritten'", "status = 'pending', resolved_at = NULL, captured_tokens = NULL"],
)
async def test_resolved_hold_cannot_change(
    world: World, shared: AsyncEngine, status: str, assignment: str
) -> None:
    statement = sql(f"UPDATE holds SET {assignment} WHERE id = :id", id=world.holds[status])
    await assert_refused(shared, [statement], HOLD_FROZEN)


@pytest.mark.parametrize(
    "assignment", ["amount_tokens = 5", "amount_tokens = 50", "wallet_id = :other"]
)
async def test_pending_hold_amount_and_wallet_cannot_change(
    world: World, shared: AsyncEngine, assignment: str
) -> None:
    params: dict[str, Any] = {"id": world.holds["pending"]}
    if ":other" in assignment:
        params["other"] = world.bob
    statement = sql(f"UPDATE holds SET {assignment} WHERE id = :id", **params)
    await assert_refused(shared, [statement], HOLD_FROZEN)


async def test_pending_hold_may_be_resolved_by_raw_sql(
    service: TokenService, scratch: AsyncEngine, user: str
) -> None:
    """Positive control: a pending hold does change (status, expiry, description)."""
    await funded_wallet(service, scratch, user)
    placed = await service.hold(user, 10, ttl_seconds=60)
    assert placed.hold_id is not None
    statements = [
        text("UPDATE holds SET expires_at = :at WHERE id = :id").bindparams(
            at("at"), id=placed.hold_id
        ),
        text(
            "UPDATE holds SET status = 'voided', resolved_at = :at, description = 'released'"
            " WHERE id = :id"
        ).bindparams(at("at"), id=placed.hold_id),
    ]
    await write(scratch, statements)
    select_status = "SELECT status FROM holds WHERE id = :id"
    assert await scalar(scratch, select_status, id=placed.hold_id) == "voided"


@pytest.mark.parametrize("status", ["pending", "captured", "voided", "expired"])
async def test_holds_cannot_be_deleted(world: World, shared: AsyncEngine, status: str) -> None:
    statement = sql("DELETE FROM holds WHERE id = :id", id=world.holds[status])
    await assert_refused(shared, [statement], HOLD_NOT_DELETED)


# --- the cost table ---------------------------------------------------------------------------

SET_IMAGE_COST = (
    "UPDATE operation_costs SET cost_tokens = :cost WHERE operation_type = 'image_generation'"
)


@pytest.mark.parametrize(
    ("verb", "cost"), [("insert", 0), ("update", 0), ("update", -1), ("update", 10**12 + 1)]
)
async def test_cost_out_of_range_is_refused(shared: AsyncEngine, verb: str, cost: int) -> None:
    if verb == "insert":
        statement = text(
            "INSERT INTO operation_costs (operation_type, cost_tokens, updated_at)"
            " VALUES ('free_lunch', :cost, :at)"
        ).bindparams(at("at"), cost=cost)
    else:
        statement = sql(SET_IMAGE_COST, cost=cost)
    constraint = "ck_operation_costs_cost_in_range"
    await assert_refused(shared, [statement], check_violation(constraint))


async def test_cost_at_the_edges_of_its_range_is_accepted(scratch: AsyncEngine) -> None:
    select_cost = (
        "SELECT cost_tokens FROM operation_costs WHERE operation_type = 'image_generation'"
    )
    for cost in (1, 10**12):
        await write(scratch, [sql(SET_IMAGE_COST, cost=cost)])
        assert await scalar(scratch, select_cost) == cost


# --- holes found and closed: each of these failed before its fix ---------------------------

# Without recursive_triggers, SQLite fires no DELETE trigger for the row that
# INSERT OR REPLACE deletes (https://sqlite.org/lang_conflict.html), so REPLACE
# rewrites a sealed ledger row (or reopens a resolved hold) that UPDATE and DELETE
# cannot touch. ``PRAGMA recursive_triggers=ON`` in the engine's connect hook makes
# the same statement hit the append-only triggers. PostgreSQL's equivalent, INSERT ...
# ON CONFLICT DO UPDATE, runs the UPDATE triggers and is refused.
BOTH_ENGINES = pytest.mark.parametrize("scratch_url", ["sqlite", "postgresql"], indirect=True)
# What the REPLACE of a resolved hold should meet: the delete trigger on SQLite (a
# REPLACE is a delete and an insert), the pending-only update trigger on PostgreSQL.
HOLD_REPLACED = Refusal(
    sqlite_errorname=HOLD_NOT_DELETED.sqlite_errorname,
    pg_sqlstate=HOLD_FROZEN.pg_sqlstate,
    sqlite_message=HOLD_NOT_DELETED.sqlite_message,
    pg_message=HOLD_FROZEN.pg_message,
)


def upsert(scratch: AsyncEngine, update_on_conflict: str) -> tuple[str, str]:
    """(verb, clause) of the statement that overwrites an existing row by its key."""
    if scratch.dialect.name == "sqlite":
        return "INSERT OR REPLACE", ""
    return "INSERT", f"ON CONFLICT (id) DO UPDATE SET {update_on_conflict}"


async def sealed_credit(service: TokenService, scratch: AsyncEngine, user: str) -> tuple[int, str]:
    """A funded wallet of the test's own and the id of its (sealed) credit."""
    wallet = await funded_wallet(service, scratch, user)
    query = "SELECT id FROM ledger_transactions WHERE wallet_id = :w"
    return wallet, await scalar(scratch, query, w=wallet)


@BOTH_ENGINES
async def test_upsert_cannot_rewrite_a_sealed_header(
    service: TokenService, scratch: AsyncEngine, user: str
) -> None:
    wallet, sealed = await sealed_credit(service, scratch, user)
    verb, on_conflict = upsert(scratch, "description = excluded.description")
    # Same wallet and kind, so the header triggers pass; only the text changes.
    rewritten = header(
        transaction_id=sealed,
        wallet_id=wallet,
        kind="credit",
        description="rewritten",
        verb=verb,
        on_conflict=on_conflict,
    )
    await assert_refused(scratch, [rewritten], append_only("ledger_transactions"))


@BOTH_ENGINES
async def test_upsert_cannot_move_an_entry_out_of_its_transaction(
    service: TokenService, scratch: AsyncEngine, user: str
) -> None:
    """Moved into a new, balanced transaction, the credit's wallet leg would leave the
    credit with its system leg alone: unbalanced."""
    wallet, sealed = await sealed_credit(service, scratch, user)
    query = "SELECT id FROM ledger_entries WHERE transaction_id = :t AND wallet_id IS NOT NULL"
    moved_id = await scalar(scratch, query, t=sealed)
    verb, on_conflict = upsert(scratch, "transaction_id = excluded.transaction_id")
    tid = new_id()
    statements = [
        system_leg(transaction_id=tid, amount_tokens=-100, account="tokens_sold"),
        entry(
            entry_id=moved_id,
            transaction_id=tid,
            wallet_id=wallet,
            amount_tokens=100,
            balance_before=0,
            balance_after=100,
            verb=verb,
            on_conflict=on_conflict,
        ),
        header(transaction_id=tid, wallet_id=wallet, kind="credit"),
    ]
    await assert_refused(scratch, statements, append_only("ledger_entries"), refused_at=1)


@BOTH_ENGINES
async def test_upsert_cannot_reopen_a_resolved_hold(
    service: TokenService, scratch: AsyncEngine, user: str
) -> None:
    wallet = await funded_wallet(service, scratch, user)
    placed = await service.hold(user, 10, ttl_seconds=60)
    assert placed.hold_id is not None
    assert (await service.capture(placed.hold_id, 4)).success
    verb, on_conflict = upsert(
        scratch, "status = 'pending', captured_tokens = NULL, resolved_at = NULL"
    )
    reopened = text(
        f"{verb} INTO holds (id, wallet_id, amount_tokens, status, operation_type,"
        " idempotency_scope, expires_at, created_at)"
        f" VALUES (:id, :wallet, 10, 'pending', 'raw_sql', '', :at, :at) {on_conflict}"
    ).bindparams(at("at"), id=placed.hold_id, wallet=wallet)
    await assert_refused(scratch, [reopened], HOLD_REPLACED)


# On PostgreSQL (READ COMMITTED) a trigger's query sees only committed rows, so a
# concurrent transaction that has not yet seen a header (or a refund) is judged
# without it. SQLite serialises writers (BEGIN IMMEDIATE), so the intruder runs after
# the first commit and is refused. On PostgreSQL the triggers take an advisory lock
# (on the transaction id, and on the refunded debit) so the intruder waits, then sees
# the committed rows. The service itself was never exposed: it never adds
# an entry to an existing transaction, and it locks the wallet row before checking a
# refund; these are holes only for writers that bypass it.


async def _until_written_or_waiting(conn: AsyncConnection, written: asyncio.Event) -> None:
    """Until the intruder has written, or is waiting for a lock.

    PostgreSQL says when a backend waits for a lock, so this is exact whether the
    triggers let the intruder through (the bug) or make it wait (a fix). SQLite's
    intruder waits inside BEGIN IMMEDIATE where nothing reports it; a moment is
    enough, and even an intruder that has not started yet comes after the commit.
    """
    if conn.dialect.name == "sqlite":
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(written.wait(), timeout=0.3)
        return
    waiting = text(
        "SELECT COUNT(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    for _ in range(500):
        # Activity statistics are a snapshot per transaction unless cleared.
        await conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        if written.is_set() or (await conn.execute(waiting)).scalar_one() > 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the intruder neither wrote nor waited for a lock")


async def race(
    engine: AsyncEngine, first: Sequence[Executable], second: Sequence[Executable]
) -> asyncio.Task[None]:
    """Write ``first`` and, while it is uncommitted, run ``second`` in another
    transaction that commits only after ``first`` did; the second's task is returned."""
    second_wrote = asyncio.Event()
    first_committed = asyncio.Event()

    async def intruder() -> None:
        async with engine.begin() as conn:
            for statement in second:
                await conn.execute(statement)
            second_wrote.set()
            await first_committed.wait()

    async with engine.begin() as conn:
        for statement in first:
            await conn.execute(statement)
        task = asyncio.create_task(intruder())
        await _until_written_or_waiting(conn, second_wrote)
    first_committed.set()
    return task


@BOTH_ENGINES
async def test_entry_racing_its_header_is_refused(
    service: TokenService, scratch: AsyncEngine, user: str
) -> None:
    wallet = await funded_wallet(service, scratch, user)
    tid = new_id()
    first = transaction(transaction_id=tid, wallet_id=wallet, kind="credit", amount_tokens=5)
    extra = wallet_leg(transaction_id=tid, wallet_id=wallet, amount_tokens=5, balance_before=5)
    task = await race(scratch, first, [extra])
    with pytest.raises(IntegrityError) as caught:
        await task
    SEALED.check(caught.value, scratch.dialect.name)
    total = "SELECT SUM(amount_tokens) FROM ledger_entries WHERE transaction_id = :t"
    assert await scalar(scratch, total, t=tid) == 0


@BOTH_ENGINES
async def test_concurrent_refunds_cannot_exceed_their_debit(
    service: TokenService, scratch: AsyncEngine, user: str
) -> None:
    wallet = await funded_wallet(service, scratch, user)
    debit = await service.debit(user, amount=30)
    assert debit.transaction_id is not None
    first = refund(wallet_id=wallet, amount_tokens=20, refund_of_id=debit.transaction_id)
    second = refund(wallet_id=wallet, amount_tokens=20, refund_of_id=debit.transaction_id)
    task = await race(scratch, first, second)
    with pytest.raises(IntegrityError) as caught:
        await task
    REFUND_EXCEEDS_DEBIT.check(caught.value, scratch.dialect.name)
